"""Training corpora: configured prefixes resolved to shards, each shard opened once and checked against the run's
tokenizer, so the datasets (``pretrain.samples``) receive corpora that are known to fit.

The tokenizer-fit rule, one for every path into training:

1. a vocabulary size recorded in the corpus' ``.meta.json`` must EQUAL the tokenizer's: a corpus of a smaller
   vocabulary fits the embedding table, but its ids mean other tokens, which would train on garbage silently;
2. a recorded fingerprint must be the tokenizer's (``"unknown"``, written by ``merge --force``, vouches for no
   tokenizer and is left to rule 3);
3. every id must index the embedding table (``max_token_id`` recorded at build time, else computed once), so a
   corpus without a sidecar, or merged with ``--force``, cannot fail mid-run or read past the vocabulary.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

from data_tools.errors import UserError
from data_tools.indexed import IndexedCorpus, max_token_id, resolve_prefixes
from data_tools.merge import UNKNOWN
from data_tools.tokenizer import Tokenizer


def expand_prefix(prefix: str | os.PathLike) -> list[str]:
    """The corpus prefixes a configured prefix stands for, in order.

    - ``corpus/wiki``: the corpus ``wiki.bin``/``.idx``, or its shards ``wiki_00000``, ``wiki_00001``, …
      (``data_tools.indexed.resolve_prefixes``; what ``build`` writes, one shard per task);
    - a directory: every corpus in it (``*.idx``), sorted by name;
    - a glob (``corpus/part-*``): every corpus whose prefix matches, sorted.

    Raises:
        UserError: when nothing matches.
    """
    text = os.fspath(prefix)
    if os.path.isdir(text) and not os.path.isfile(text + ".idx"):
        found = sorted(p[: -len(".idx")] for p in glob.glob(os.path.join(glob.escape(text), "*.idx")))
        if not found:
            raise UserError(f"{text}: directory holds no corpus (no *.idx files)")
        return found
    if any(c in text for c in "*?[") and not os.path.isfile(text + ".idx"):
        found = sorted(p[: -len(".idx")] for p in glob.glob(text + ".idx"))
        if not found:
            raise UserError(f"{text}: no corpus matches (expected files {text}.idx)")
        return found
    return resolve_prefixes(text)


def check_fit(corpus: IndexedCorpus, tokenizer: Tokenizer, where: str) -> None:
    """UserError (starting with ``where``) unless ``corpus`` was built with ``tokenizer`` (the module's rule)."""
    shard, path = corpus.prefix, tokenizer.path
    meta = (corpus.meta or {}).get("tokenizer") or {}
    # Vocabulary first: its message says most about the mismatch (a user's first clue which tokenizer is wrong).
    vocab = meta.get("vocab_size")
    if vocab is not None and int(vocab) != tokenizer.vocab_size:
        raise UserError(
            f"{where}: {shard} was built with another tokenizer (vocab size {vocab}), but data.tokenizer {path} "
            f"has vocab size {tokenizer.vocab_size}; expected the same tokenizer"
        )
    fp = meta.get("fingerprint")
    if fp not in (None, UNKNOWN) and fp != tokenizer.fingerprint:
        raise UserError(
            f"{where}: {shard} was built with another tokenizer (fingerprint {fp}), data.tokenizer {path} has "
            f"{tokenizer.fingerprint}; expected the same tokenizer"
        )
    top = max_token_id(corpus)
    if top >= tokenizer.vocab_size:
        raise UserError(
            f"{where}: {shard} holds token id {top}, but data.tokenizer {path} has {tokenizer.vocab_size} ids; "
            f"expected the tokenizer the corpus was built with"
        )


def open_corpora(prefixes: str | os.PathLike | Sequence[str | os.PathLike], tokenizer: Tokenizer,
                 key: str = "data.prefixes") -> list[list[IndexedCorpus]]:
    """Open every shard of each configured prefix once (its files checked in full) and check it fits ``tokenizer``.

    Args:
        prefixes: Prefixes from the config (or one prefix).
        tokenizer: The run's tokenizer.
        key: Config key, for messages (``key[i]`` names the prefix).
    Returns:
        The opened shards of each configured prefix. UserError on a missing, corrupt or foreign corpus.
    """
    if isinstance(prefixes, (str, os.PathLike)):
        prefixes = [prefixes]
    out: list[list[IndexedCorpus]] = []
    for i, prefix in enumerate(prefixes):
        try:
            shards = expand_prefix(prefix)
        except UserError as exc:
            raise UserError(f"{key}[{i}]: {exc}") from None
        group = []
        for shard in shards:
            corpus = IndexedCorpus(shard)
            check_fit(corpus, tokenizer, f"{key}[{i}]")
            group.append(corpus)
        out.append(group)
    return out
