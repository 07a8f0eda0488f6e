"""Export a pre-trained model to a Hugging Face directory that ``AutoModelForMaskedLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load: ``config.json``, ``model.safetensors``, ``tokenizer.json`` and
``tokenizer_config.json``.

``PretrainModel``'s state dict is the transformers class's own, so the weights load into that class as they
are. The tokenizer is written as a fast tokenizer: WordPiece/``tokenizer.json`` tokenizers as they are,
SentencePiece models converted with transformers' own SentencePiece converter, each with the post-processor
of the architecture (``[CLS] A [SEP] B [SEP]`` for BERT, ``<s> A </s></s> B </s>`` for RoBERTa).

The directory appears atomically: everything is written into a temporary sibling that is renamed at the end.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import tokenizers
import torch
from tokenizers import processors
from transformers import (
    BertForMaskedLM,
    BertForPreTraining,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    RobertaForMaskedLM,
)

from data_tools.atomic import atomic_dir, write_json
from data_tools.errors import UserError
from data_tools.tokenizer import Tokenizer
from pretrain.model import PretrainModel


def _backend(tokenizer: Tokenizer) -> tokenizers.Tokenizer:
    """A ``tokenizers.Tokenizer`` that encodes exactly like ``tokenizer``."""
    inner = getattr(tokenizer, "_tok", None)
    if isinstance(inner, tokenizers.Tokenizer):
        return tokenizers.Tokenizer.from_str(inner.to_str())  # a copy: the post-processor is replaced below
    model_file = next((f for f in tokenizer.files if Path(f).suffix == ".model"), None)
    if model_file is None:
        raise UserError(f"{tokenizer.path}: cannot export this tokenizer (no tokenizer.json or SentencePiece .model)")
    from transformers.convert_slow_tokenizer import SentencePieceExtractor, SpmConverter

    proto = SentencePieceExtractor(str(model_file)).proto
    pieces = [(p.piece, p.score) for p in proto.pieces]
    vocab = pieces if proto.trainer_spec.model_type == 1 else {p: i for i, (p, _) in enumerate(pieces)}
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    if backend is None:
        raise UserError(f"{model_file}: unsupported SentencePiece model type for export (expected unigram or bpe)")
    return backend


def hf_tokenizer(tokenizer: Tokenizer, arch: str = "bert", model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """The fast HF tokenizer equivalent to ``tokenizer``, adding the specials the way ``arch`` expects.

    Args:
        tokenizer: a ``data_tools.tokenizer`` tokenizer.
        arch: "bert" or "roberta" (decides the special-token template).
        model_max_length: recorded in ``tokenizer_config.json``.

    Returns:
        A ``PreTrainedTokenizerFast`` whose ``encode(text, add_special_tokens=False)`` equals
        ``tokenizer.encode(text)``.
    """
    backend = _backend(tokenizer)
    tok = {role: tokenizer.id_to_token(getattr(tokenizer, f"{role}_id")) for role in ("cls", "sep", "pad", "unk", "mask")}
    cls, sep = (tok["cls"], tokenizer.cls_id), (tok["sep"], tokenizer.sep_id)
    if arch == "roberta":
        template = processors.TemplateProcessing(
            single=f"{cls[0]} $A {sep[0]}", pair=f"{cls[0]} $A {sep[0]} {sep[0]} $B {sep[0]}", special_tokens=[cls, sep]
        )
    else:
        template = processors.TemplateProcessing(
            single=f"{cls[0]} $A {sep[0]}", pair=f"{cls[0]} $A {sep[0]} $B:1 {sep[0]}:1", special_tokens=[cls, sep]
        )
    backend.post_processor = template
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        cls_token=tok["cls"],
        sep_token=tok["sep"],
        pad_token=tok["pad"],
        unk_token=tok["unk"],
        mask_token=tok["mask"],
        bos_token=tok["cls"],
        eos_token=tok["sep"],
        model_max_length=model_max_length,
    )


_CLASSES = {
    "BertForMaskedLM": BertForMaskedLM,
    "BertForPreTraining": BertForPreTraining,
    "RobertaForMaskedLM": RobertaForMaskedLM,
}


def _hf_from_state_dict(state: Mapping[str, torch.Tensor], config: PretrainedConfig):
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if config.model_type == "roberta":
        hf_class = RobertaForMaskedLM
    else:
        hf_class = BertForPreTraining if any(k.startswith("cls.seq_relationship") for k in state) else BertForMaskedLM
    hf = hf_class(config)
    result = hf.load_state_dict(state, strict=False)
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "lm_head.decoder.weight",
            "lm_head.decoder.bias"}
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise UserError(
            f"checkpoint does not fit a {hf_class.__name__} of this config: missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )
    hf.tie_weights()
    return hf


def save_hf(
    model: PretrainModel | Mapping[str, torch.Tensor],
    tokenizer: Tokenizer,
    out_dir: str | os.PathLike,
    config: PretrainedConfig | None = None,
    extra_info: dict | None = None,
) -> Path:
    """Write ``model`` and ``tokenizer`` as a Hugging Face model directory, atomically.

    Args:
        model: a :class:`PretrainModel`, or its state dict (then ``config`` is required; a ``module.``
            prefix from DDP/DeepSpeed is stripped).
        tokenizer: the tokenizer the model was trained with.
        out_dir: the directory to create. An existing one is replaced only if it holds a ``config.json``
            (i.e. is an earlier export), never an unrelated directory.
        config: the transformers config, for a state dict.
        extra_info: written to ``export_info.json`` (e.g. run directory, step, tokenizer fingerprint).

    Returns:
        ``out_dir`` as a Path.
    """
    out = Path(out_dir)
    if isinstance(model, PretrainModel):
        hf = model.to_hf()
        arch = model.arch
    else:
        if config is None:
            raise ValueError("save_hf: a state dict needs its transformers config")
        hf = _hf_from_state_dict(model, config)
        arch = "roberta" if config.model_type == "roberta" else "bert"
    if hf.config.vocab_size < tokenizer.vocab_size:
        raise UserError(
            f"{tokenizer.path}: tokenizer has {tokenizer.vocab_size} ids but the model only {hf.config.vocab_size}"
        )
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "config.json").is_file())):
        raise UserError(f"{out}: exists and is not an earlier model export; choose another output directory")
    hf.config.architectures = [type(hf).__name__]
    max_len = hf.config.max_position_embeddings - (hf.config.pad_token_id + 1 if arch == "roberta" else 0)
    with atomic_dir(out) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        hf_tokenizer(tokenizer, arch, max_len).save_pretrained(tmp)
        info = {"tokenizer_fingerprint": tokenizer.fingerprint, "tokenizer_kind": tokenizer.kind}
        write_json(tmp / "export_info.json", {**info, **(extra_info or {})})
    return out
