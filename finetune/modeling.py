"""Loading task models from a Hugging Face / ``pretrain export`` directory, and the task losses.

The task heads are Hugging Face's own (``AutoModelForSequenceClassification``,
``AutoModelForQuestionAnswering``); a checkpoint exported by ``pretrain export`` (an MLM model) gets a new
head, as in ``run_glue.py``. For ALUM and the attack the encoder must be run from (perturbed) embeddings:
``pretrain.model.embed`` / ``encode_from`` do that on any HF BERT/RoBERTa backbone, and ``head_logits``
applies the model's own head to the encoder output, so that the clean loss equals ``model(**batch).loss``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from data_tools.errors import UserError
from data_tools.jsonfile import read_json

SUPPORTED_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")


def read_model_config(model_dir: Path) -> dict:
    """``model_dir/config.json`` as a dict, or a ``UserError`` saying what the directory lacks."""
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: no such directory; expected a Hugging Face model directory")
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{cfg_path}: missing; expected a Hugging Face model directory (config.json, "
                        "model.safetensors, tokenizer files), e.g. from `python -m pretrain export`")
    return read_json(cfg_path)


def load_hf_tokenizer(model_dir: str | Path):
    """The directory's tokenizer (``AutoTokenizer``), or a ``UserError`` saying which files are missing."""
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    read_model_config(model_dir)
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{model_dir}: cannot load its tokenizer ({str(exc).splitlines()[0][:160]}); expected "
                        "tokenizer.json or vocab files saved by save_pretrained / pretrain export") from None
    return tok


def load_task_model(model_dir: str | Path, task: str, num_labels: int = 2, id2label: dict | None = None):
    """Load ``(model, tokenizer)`` for ``task`` ("classify" or "qa") from a local directory.

    Args:
        model_dir: a Hugging Face BERT/RoBERTa directory or a ``pretrain export`` (MLM) directory.
        task: "classify" (sequence classification / regression when ``num_labels == 1``) or "qa".
        num_labels: classes (1 = regression); a fine-tuned directory keeps its own head when it matches.
        id2label: label names by id, stored in the model's config.
    Returns:
        ``(model, tokenizer)``; the model in train mode on CPU.
    Raises:
        UserError: missing files, an unsupported architecture, or a tokenizer that does not fit the
            model's embeddings.
    """
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    model_dir = Path(model_dir)
    raw_cfg = read_model_config(model_dir)
    mtype = raw_cfg.get("model_type")
    if mtype not in SUPPORTED_TYPES:
        raise UserError(f"{model_dir / 'config.json'}: model_type {mtype!r}; expected one of "
                        f"{', '.join(SUPPORTED_TYPES)}")
    tok = load_hf_tokenizer(model_dir)
    if isinstance(raw_cfg.get("vocab_size"), int) and len(tok) > raw_cfg["vocab_size"]:
        # Checked before loading weights: a tokenizer from another model is the usual mistake.
        raise UserError(f"{model_dir}: tokenizer has {len(tok)} tokens but the model's embeddings hold "
                        f"{raw_cfg['vocab_size']} (config.json vocab_size); expected a tokenizer that matches "
                        "the model")
    kwargs: dict = {}
    if task == "classify":
        kwargs["num_labels"] = num_labels
        kwargs["problem_type"] = "regression" if num_labels == 1 else "single_label_classification"
        if id2label:
            kwargs["id2label"] = {int(k): v for k, v in id2label.items()}
            kwargs["label2id"] = {v: int(k) for k, v in id2label.items()}
    cls = AutoModelForSequenceClassification if task == "classify" else AutoModelForQuestionAnswering
    # The "newly initialized head" notice is expected when starting from an MLM export; keep logs quiet.
    logging.getLogger("transformers.modeling_utils").setLevel(logging.ERROR)
    try:
        model = cls.from_pretrained(str(model_dir), ignore_mismatched_sizes=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - safetensors/pickle errors share no base class; one line each
        from pretrain.model import weights_error

        raise weights_error(model_dir, exc) from None
    check_tokenizer_fits(model, tok, model_dir)
    return model, tok


def check_tokenizer_fits(model, tok, model_dir: Path) -> None:
    """A tokenizer whose ids exceed the embedding table would index out of range mid-training."""
    vocab = model.get_input_embeddings().num_embeddings
    if len(tok) > vocab:
        raise UserError(f"{model_dir}: tokenizer has {len(tok)} tokens but the model's embeddings hold "
                        f"{vocab} (config.json vocab_size); expected a tokenizer that matches the model")
    for name in ("cls_token_id", "sep_token_id", "pad_token_id"):
        tid = getattr(tok, name, None)
        if tid is None:
            raise UserError(f"{model_dir}: tokenizer has no {name.replace('_id', '')}; expected BERT/RoBERTa "
                            "special tokens")


def backbone_of(model) -> torch.nn.Module:
    """The encoder (``model.bert`` / ``model.roberta``) of a HF task model."""
    return getattr(model, model.base_model_prefix)


def head_logits(model, sequence_output: torch.Tensor) -> torch.Tensor:
    """Apply ``model``'s own task head to the encoder output ``[B, T, H]``.

    Returns:
        ``[B, C]`` class logits, or ``[B, T, 2]`` start/end logits for question answering.
    """
    if hasattr(model, "qa_outputs"):
        return model.qa_outputs(sequence_output)
    pooler = getattr(backbone_of(model), "pooler", None)
    if pooler is not None and hasattr(model, "dropout"):  # BERT: pooled [CLS] -> dropout -> linear
        return model.classifier(model.dropout(pooler(sequence_output)))
    return model.classifier(sequence_output)  # RoBERTa's head reads <s> itself


def task_loss(model, logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """The loss Hugging Face's task model computes from ``logits`` (CE, MSE, or mean of start/end CE)."""
    if hasattr(model, "qa_outputs"):
        start, end = logits.float().split(1, dim=-1)
        start, end = start.squeeze(-1), end.squeeze(-1)
        ignored = start.size(1)
        s = batch["start_positions"].clamp(0, ignored)
        e = batch["end_positions"].clamp(0, ignored)
        return (F.cross_entropy(start, s, ignore_index=ignored) + F.cross_entropy(end, e, ignore_index=ignored)) / 2
    if model.config.num_labels == 1:
        return F.mse_loss(logits.squeeze(-1).float(), batch["labels"].float())
    return F.cross_entropy(logits.float().view(-1, model.config.num_labels), batch["labels"].view(-1))


def compare_logits(logits: torch.Tensor) -> torch.Tensor:
    """Logits as rows of distributions for l_sym: QA's ``[B, T, 2]`` becomes start and end rows ``[2B, T]``."""
    if logits.dim() == 3:
        return torch.cat([logits[..., 0], logits[..., 1]], dim=0)
    return logits


def encode(model, batch: dict, site: str) -> tuple[torch.Tensor, callable]:
    """Embeddings at ``site`` and a function mapping (perturbed) embeddings to task logits.

    Returns:
        ``(embeds [B, T, H], forward_fn)`` with ``forward_fn(embeds) -> logits`` (the model's head output).
    """
    from pretrain.model import embed, encode_from

    backbone = backbone_of(model)
    token_type_ids = batch.get("token_type_ids")
    embeds = embed(backbone, batch["input_ids"], token_type_ids, site)
    mask = batch["attention_mask"]

    def forward_fn(e: torch.Tensor) -> torch.Tensor:
        return head_logits(model, encode_from(backbone, e, mask, site, token_type_ids=token_type_ids))

    return embeds, forward_fn


def train_loss(model, batch: dict, alum=None, generator: torch.Generator | None = None, scaler=None,
               measure_gain: bool = False) -> dict:
    """One training forward: ``pretrain.alum.regularized_loss`` of the task loss (the one ALUM objective).

    Args:
        model: a HF task model (train mode).
        batch: tensors incl. ``labels`` or ``start_positions``/``end_positions``.
        alum: a ``pretrain.alum.AlumConfig`` or None (plain fine-tuning: HF's own forward).
        generator: RNG for the perturbation's init and the gain probe.
        scaler: ``pretrain.loss_scale.AscentScaler`` for the ascent gradient (float16); None: unscaled.
        measure_gain: also measure the ascent gain this step (one extra no-grad forward).
    Returns:
        ``{"loss", "task_loss", "adv_loss", "overflow", "regularized"}`` (``loss`` carries the graph;
        ``regularized`` is the ``pretrain.alum.Regularized``, None for plain training).
    """
    if alum is None or not alum.active:
        out = model(**batch)
        return {"loss": out.loss, "task_loss": out.loss.detach(), "adv_loss": None, "overflow": False,
                "regularized": None}
    from pretrain.alum import DropoutReplay, regularized_loss

    if model.config.num_labels == 1 and not hasattr(model, "qa_outputs"):
        raise UserError("--alum: regression (num_labels=1) has no output distribution for l_sym; "
                        "expected a classification or QA task")
    embeds, forward_fn = encode(model, batch, alum.site)
    # Perturbed forwards replay the clean forward's dropout masks (alum.same_dropout): δ is the only difference.
    replay = DropoutReplay(embeds.device, alum.same_dropout)
    logits = forward_fn(embeds)
    reg = regularized_loss(task_loss(model, logits, batch), embeds, compare_logits(logits),
                           lambda e: compare_logits(forward_fn(e)), alum, scaler=scaler, generator=generator,
                           token_mask=batch["attention_mask"], measure_gain=measure_gain, replay=replay)
    return {"loss": reg.loss, "task_loss": reg.task_loss.detach(), "adv_loss": reg.adv_loss.detach(),
            "overflow": reg.adv.overflow, "regularized": reg}
