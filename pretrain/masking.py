"""BERT's masked-LM corruption: choose ~15% of the non-special tokens, replace 80% of them with [MASK], 10% with
a random token and leave 10% unchanged; predict the originals.

As in Google's BERT ``create_pretraining_data.py`` (and Megatron's ``create_masked_lm_predictions``), the
number of predictions is fixed per sequence, ``max(1, round(n_candidates * mask_prob))``, rather than drawn
per token, and with whole-word masking all pieces of a word are chosen together: WordPiece continuation
pieces (``##…``) and SentencePiece pieces without the ``▁`` word-start marker join the word before them. The
80/10/10 replacement is decided per token, as in BERT. The caller supplies the RNG, so that a sample's mask
is a pure function of (seed, sample id, epoch): dynamic masking as in RoBERTa, without any state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE = -100


@dataclass(frozen=True)
class MaskingConfig:
    """How tokens are chosen and corrupted.

    Attributes:
        mask_prob: share of candidate tokens to predict (BERT: 0.15).
        mask_token_prob: of those, share replaced by the mask token (BERT: 0.8).
        random_token_prob: share replaced by a random non-special token (BERT: 0.1); the rest stay.
        whole_word: choose whole words (all their pieces) instead of single pieces.
    """

    mask_prob: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    whole_word: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"mask_prob: got {self.mask_prob!r}, expected 0 < mask_prob < 1")
        if self.mask_token_prob < 0 or self.random_token_prob < 0 or self.mask_token_prob + self.random_token_prob > 1:
            raise ValueError(
                f"mask_token_prob={self.mask_token_prob!r}, random_token_prob={self.random_token_prob!r}: "
                "expected non-negative values summing to at most 1"
            )


class Masker:
    """Applies :class:`MaskingConfig` to token sequences of one vocabulary.

    Args:
        cfg: the masking options.
        vocab_size: number of ids.
        mask_id: id of [MASK]/<mask>.
        special_ids: ids never chosen and never used as random replacements.
        word_start: per vocabulary id, True if the piece starts a word (``Tokenizer.word_start_mask()``);
            needed for whole-word masking.
    """

    def __init__(
        self,
        cfg: MaskingConfig,
        vocab_size: int,
        mask_id: int,
        special_ids: frozenset[int] | set[int],
        word_start: np.ndarray | None = None,
    ):
        if cfg.whole_word and word_start is None:
            raise ValueError("whole-word masking needs the tokenizer's word_start mask")
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.is_special = np.zeros(vocab_size, dtype=bool)
        self.is_special[[i for i in special_ids if 0 <= i < vocab_size]] = True
        self.replacements = np.flatnonzero(~self.is_special)  # random-token pool
        self.word_start = word_start

    def __call__(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Corrupt ``tokens``.

        Args:
            tokens: ``[L]`` token ids, special tokens included (they are never chosen).
            rng: the random source (seed it from sample id and epoch).

        Returns:
            ``(input_ids, labels)``: int64 ``[L]`` corrupted ids, and the original id at chosen positions,
            ``-100`` elsewhere.
        """
        tokens = np.asarray(tokens, dtype=np.int64)
        labels = np.full(tokens.shape, IGNORE, dtype=np.int64)
        candidates = np.flatnonzero(~self.is_special[tokens])  # [C] positions
        if candidates.size == 0:
            return tokens.copy(), labels
        target = max(1, int(round(candidates.size * self.cfg.mask_prob)))
        if self.cfg.whole_word:
            # A word starts at a word-start piece, or where the run of candidates is broken by a special.
            starts = self.word_start[tokens[candidates]].copy()
            starts[0] = True
            starts[1:] |= np.diff(candidates) != 1
            word_of = np.cumsum(starts) - 1  # [C] word index of each candidate
            sizes = np.bincount(word_of)
        else:
            word_of = np.arange(candidates.size)
            sizes = np.ones(candidates.size, dtype=np.int64)
        order = rng.permutation(sizes.size)
        chosen_words = np.zeros(sizes.size, dtype=bool)
        # BERT: walk the words in random order, skipping any that would overshoot the target. The prefix
        # that fits is taken at once; only the tail after the first overshoot is walked one by one.
        fits = np.cumsum(sizes[order]) <= target
        first_over = int(np.argmin(fits)) if not fits.all() else sizes.size
        first_over = max(first_over, 1)  # at least one word, even one longer than the target
        chosen_words[order[:first_over]] = True
        room = target - int(sizes[order[:first_over]].sum())
        for w in order[first_over:]:
            if room <= 0:
                break
            if sizes[w] <= room:
                chosen_words[w] = True
                room -= int(sizes[w])
        chosen = candidates[chosen_words[word_of]]  # [P] positions to predict

        labels[chosen] = tokens[chosen]
        out = tokens.copy()
        r = rng.random(chosen.size)
        to_mask = r < self.cfg.mask_token_prob
        to_random = (r >= self.cfg.mask_token_prob) & (r < self.cfg.mask_token_prob + self.cfg.random_token_prob)
        out[chosen[to_mask]] = self.mask_id
        out[chosen[to_random]] = rng.choice(self.replacements, size=int(to_random.sum()))
        return out, labels
