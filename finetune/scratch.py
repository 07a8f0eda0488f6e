"""A small BERT/RoBERTa initialised from scratch with a tokenizer trained on given texts.

For smoke runs, tests and benchmarks where no pre-trained checkpoint exists (nothing may download).
The directory it writes is an ordinary Hugging Face directory: every command that takes ``--model``
loads it exactly as it loads ``pretrain export``'s output.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from data_tools.errors import UserError

SPECIALS_BERT = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SPECIALS_ROBERTA = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def build_tokenizer(texts: Iterable[str], arch: str, vocab_size: int):
    """Train a WordPiece (BERT) or byte-level BPE (RoBERTa) tokenizer and wrap it as a HF fast tokenizer."""
    from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer
    from transformers import BertTokenizerFast, RobertaTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        if arch == "bert":
            wp = BertWordPieceTokenizer(lowercase=True)
            wp.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=SPECIALS_BERT, min_frequency=2)
            wp.save_model(tmp)
            return BertTokenizerFast(vocab=str(Path(tmp) / "vocab.txt"), do_lower_case=True)
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=SPECIALS_ROBERTA, min_frequency=2)
        bpe.save_model(tmp)
        return RobertaTokenizerFast(vocab=str(Path(tmp) / "vocab.json"), merges=str(Path(tmp) / "merges.txt"))


def init_model(out_dir: str | Path, texts: list[str], arch: str = "bert", vocab_size: int = 2000,
               hidden: int = 64, layers: int = 2, heads: int = 2, max_len: int = 512, seed: int = 0) -> Path:
    """Write a randomly initialised masked-LM model plus a tokenizer trained on ``texts``.

    Args:
        out_dir: target directory (HF layout).
        texts: training texts for the tokenizer.
        arch: "bert" (WordPiece, token types) or "roberta" (byte-level BPE).
        vocab_size: tokenizer vocabulary size (upper bound).
        hidden, layers, heads: encoder shape; the intermediate size is 4 x hidden.
        max_len: position embeddings.
        seed: weight initialisation seed.
    Returns:
        ``out_dir``.
    """
    from pretrain.model import build_model

    if arch not in ("bert", "roberta"):
        raise UserError(f"--arch: got {arch!r}, expected bert or roberta")
    if not texts:
        raise UserError("no texts to train the tokenizer on")
    tok = build_tokenizer(texts, arch, vocab_size)
    # Pre-training's model builder: the same config (RoBERTa's position offset included) and init.
    model = build_model(len(tok), arch, hidden_size=hidden, num_layers=layers, num_heads=heads,
                        max_position_embeddings=max_len, pad_token_id=tok.pad_token_id,
                        cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id, seed=seed).to_hf()
    out_dir = Path(out_dir)
    from finetune.trainer import save_hf_dir

    save_hf_dir(model, tok, out_dir)
    return out_dir
