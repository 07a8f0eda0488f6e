"""The pre-training model: a transformers BERT/RoBERTa with an MLM head run at masked positions only.

``PretrainModel`` holds the very submodules of transformers' ``BertForMaskedLM``, ``BertForPreTraining``
(with NSP) or ``RobertaForMaskedLM`` under the same attribute names, so its ``state_dict`` is that class's
state dict, key for key: a checkpoint exports by loading it into the HF class (``pretrain.export``).

Speed: like NVIDIA's BERT, the vocabulary-sized head (and its loss) is applied only to the rows selected for
masking (about 15%), where HF's ``BertForMaskedLM`` computes it at every position. In a small-hidden, large-
vocabulary model the head costs more than the encoder, so this is most of a step.

``embed`` and ``encode_from`` split any HF BERT/RoBERTa backbone (``BertModel``/``RobertaModel``) at the ALUM
perturbation site, so that fine-tuning code can perturb the same place with ``pretrain.alum``. The model holds no
objective beyond its task loss: :meth:`PretrainModel.task` returns the embeddings, logits and a logits-from-
embeddings function, and ``pretrain.objective.PretrainObjective`` (what DeepSpeed wraps) adds ALUM's term with
``pretrain.alum.regularized_loss``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    PretrainedConfig,
    PreTrainedModel,
    RobertaConfig,
    RobertaForMaskedLM,
)
from transformers.masking_utils import create_bidirectional_mask

from data_tools.errors import UserError
from pretrain.alum_stats import AlumSums

ARCHS = ("bert", "roberta")


@dataclass
class PretrainOutput:
    """Output of :meth:`PretrainModel.forward` (all scalars are 0-d tensors).

    Attributes:
        loss: total loss to back-propagate: ``mlm_loss + nsp_loss (+ alum.alpha * adv_loss`` in training).
        mlm_loss: mean cross-entropy over the masked positions.
        adv_loss: l_sym at the adversarial δ (0 when ALUM is off, in eval mode, or the term was dropped).
        nsp_loss: next-sentence cross-entropy (0 without NSP).
        overflow: 1 if the ALUM ascent gradient was non-finite this step, else 0.
        masked_correct: number of masked positions predicted correctly (argmax).
        masked_count: number of masked positions.
        mlm_logits: ``[M, V]`` logits at the compared positions (masked ones unless ALUM compares all).
        alum_stats: ALUM diagnostics of this step (``pretrain.alum_stats.AlumSums``), or None.
    """

    loss: torch.Tensor
    mlm_loss: torch.Tensor
    adv_loss: torch.Tensor
    nsp_loss: torch.Tensor
    overflow: torch.Tensor
    masked_correct: torch.Tensor
    masked_count: torch.Tensor
    mlm_logits: torch.Tensor | None = None
    alum_stats: AlumSums | None = None


@dataclass
class MlmTask:
    """One clean MLM (+NSP) forward, split where ALUM needs it (see :meth:`PretrainModel.task`).

    Attributes:
        embeds: ``[B, T, H]`` embeddings at the perturbation site (part of the graph).
        logits: ``[M, V]`` MLM logits at the compared rows.
        logits_from: maps (perturbed) embeddings ``[B, T, H]`` to logits ``[M, V]`` at the same rows.
        task_loss: ``mlm_loss + nsp_loss``.
        mlm_loss, nsp_loss, masked_correct, masked_count: as :class:`PretrainOutput`.
    """

    embeds: torch.Tensor
    logits: torch.Tensor
    logits_from: object
    task_loss: torch.Tensor
    mlm_loss: torch.Tensor
    nsp_loss: torch.Tensor
    masked_correct: torch.Tensor
    masked_count: torch.Tensor
    replay: object = None


class _TakeRows(torch.autograd.Function):
    """``x.index_select(0, rows)`` for unique ``rows``, with a scatter (not an accumulate) as its backward.

    On CPU the default backward (``index_add_``) measured ~100x slower than a plain ``index_put_`` for the
    ~15% of rows the MLM head reads, enough to show in a whole step; rows are unique, so no accumulation is
    needed.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.shape = x.shape
        return x.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        out = grad.new_zeros(ctx.shape)
        out.index_put_((rows,), grad)
        return out, None


def take_rows(hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows ``rows`` (unique, 1-D) of ``hidden`` flattened to ``[N, H]``: ``[len(rows), H]``."""
    return _TakeRows.apply(hidden.reshape(-1, hidden.size(-1)), rows)


def _backbone(model: nn.Module) -> nn.Module:
    for name in ("bert", "roberta"):
        if hasattr(model, name):
            return getattr(model, name)
    return model


def _position_ids(backbone: nn.Module, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    # RoBERTa numbers positions from padding_idx + 1 and gives pads padding_idx; HF derives this from
    # input_ids, which an embeddings-only path lacks, so derive it from the attention mask instead.
    if backbone.config.model_type != "roberta" or attention_mask is None:
        return None
    pad = backbone.embeddings.padding_idx
    mask = attention_mask.long()
    return torch.cumsum(mask, dim=1) * mask + pad


def embed(
    backbone: nn.Module, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, site: str
) -> torch.Tensor:
    """Embeddings of ``input_ids`` at the ALUM perturbation ``site``.

    Args:
        backbone: an HF ``BertModel``/``RobertaModel`` (or a model holding one as ``.bert``/``.roberta``).
        input_ids: ``[B, T]`` token ids.
        token_type_ids: ``[B, T]`` segment ids or None.
        site: "embedding_output" (after position/type embeddings, LayerNorm and dropout) or
            "word_embeddings" (the word-embedding lookup only).

    Returns:
        ``[B, T, H]`` embeddings to perturb and pass to :func:`encode_from`.
    """
    backbone = _backbone(backbone)
    if site == "word_embeddings":
        return backbone.embeddings.word_embeddings(input_ids)
    if site == "embedding_output":
        return backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    raise ValueError(f"site: got {site!r}, expected 'embedding_output' or 'word_embeddings'")


def encode_from(
    backbone: nn.Module,
    embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    site: str,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the encoder from (possibly perturbed) embeddings made by :func:`embed` at ``site``.

    Args:
        backbone: an HF ``BertModel``/``RobertaModel`` (or a model holding one).
        embeds: ``[B, T, H]`` embeddings at ``site``.
        attention_mask: ``[B, T]`` 1 for tokens, 0 for padding (None: all tokens).
        site: the site ``embeds`` was taken at.
        token_type_ids: ``[B, T]`` segment ids (used by the "word_embeddings" site only).

    Returns:
        ``[B, T, H]`` last hidden states (no pooler).
    """
    backbone = _backbone(backbone)
    if site == "word_embeddings":
        embeds = backbone.embeddings(
            inputs_embeds=embeds,
            token_type_ids=token_type_ids,
            position_ids=_position_ids(backbone, attention_mask),
        )
    elif site != "embedding_output":
        raise ValueError(f"site: got {site!r}, expected 'embedding_output' or 'word_embeddings'")
    mask = create_bidirectional_mask(config=backbone.config, inputs_embeds=embeds, attention_mask=attention_mask)
    return backbone.encoder(embeds, attention_mask=mask).last_hidden_state


class PretrainModel(nn.Module):
    """BERT/RoBERTa masked-LM (+ optional NSP): the encoder and its heads, no adversarial term.

    Args:
        hf_model: a transformers ``BertForMaskedLM``, ``BertForPreTraining`` or ``RobertaForMaskedLM``;
            its submodules are adopted (not copied), so ``state_dict()`` equals ``hf_model.state_dict()``.
    """

    def __init__(self, hf_model: PreTrainedModel):
        super().__init__()
        if isinstance(hf_model, BertForPreTraining):
            self.arch, self.nsp = "bert", True
            self.bert, self.cls = hf_model.bert, hf_model.cls
        elif isinstance(hf_model, BertForMaskedLM):
            self.arch, self.nsp = "bert", False
            self.bert, self.cls = hf_model.bert, hf_model.cls
        elif isinstance(hf_model, RobertaForMaskedLM):
            self.arch, self.nsp = "roberta", False
            self.roberta, self.lm_head = hf_model.roberta, hf_model.lm_head
        else:
            raise TypeError(f"expected BertForMaskedLM, BertForPreTraining or RobertaForMaskedLM, got {type(hf_model)}")
        self.hf_class = type(hf_model)
        self.config: PretrainedConfig = hf_model.config

    @property
    def backbone(self) -> nn.Module:
        """The HF ``BertModel``/``RobertaModel``."""
        return self.bert if self.arch == "bert" else self.roberta

    def mlm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits ``[..., V]`` of hidden states ``[..., H]``."""
        return self.cls.predictions(hidden) if self.arch == "bert" else self.lm_head(hidden)

    def to_hf(self) -> PreTrainedModel:
        """A fresh transformers model of the adopted class holding a copy of these weights."""
        hf = self.hf_class(self.config)
        hf.load_state_dict(self.state_dict())
        return hf

    def task(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        mlm_labels: torch.Tensor,
        nsp_labels: torch.Tensor | None = None,
        site: str = "embedding_output",
        all_rows: bool = False,
        capture_rng: bool = False,
    ) -> MlmTask:
        """The clean forward and task loss, with the embeddings at ``site`` and a logits-from-embeddings map.

        Args:
            input_ids, attention_mask, token_type_ids, mlm_labels, nsp_labels: as :meth:`forward`
                (``attention_mask`` required).
            site: where the embeddings are taken (see :func:`embed`).
            all_rows: compare logits at every non-padding position (else at the masked positions only).
            capture_rng: record the RNG state between the embedding and the clean forward from it
                (``MlmTask.replay``), where a perturbed forward starts.

        Returns:
            :class:`MlmTask`.
        """
        labels = mlm_labels.reshape(-1)  # [B*T]
        if all_rows:
            rows = attention_mask.reshape(-1).nonzero(as_tuple=True)[0]  # [M] every token
        else:
            rows = (labels != -100).nonzero(as_tuple=True)[0]  # [M] masked positions only
        row_labels = labels.index_select(0, rows)  # [M]
        hidden_out: list[torch.Tensor] = []

        def logits_from(embeds: torch.Tensor) -> torch.Tensor:
            hidden = encode_from(self.backbone, embeds, attention_mask, site, token_type_ids)  # [B, T, H]
            hidden_out.append(hidden)
            return self.mlm_head(take_rows(hidden, rows))  # [M, V]

        embeds = embed(self.backbone, input_ids, token_type_ids, site)  # [B, T, H]
        replay = None
        if capture_rng:
            from pretrain.alum import DropoutReplay

            replay = DropoutReplay(embeds.device)
        logits = logits_from(embeds)  # [M, V]
        hidden = hidden_out.pop()
        is_target = row_labels != -100
        masked_count = is_target.sum()
        # sum / count rather than mean: a batch without masked tokens gives 0, not NaN.
        mlm_loss = F.cross_entropy(logits.float(), row_labels, ignore_index=-100, reduction="sum")
        mlm_loss = mlm_loss / masked_count.clamp(min=1)
        masked_correct = ((logits.argmax(-1) == row_labels) & is_target).sum()
        nsp_loss = mlm_loss.new_zeros(())
        if self.nsp and nsp_labels is not None:
            pooled = self.bert.pooler(hidden)  # [B, H]
            nsp_logits = self.cls.seq_relationship(pooled)  # [B, 2]
            nsp_loss = F.cross_entropy(nsp_logits.float(), nsp_labels.reshape(-1))

        def perturbed(e: torch.Tensor) -> torch.Tensor:
            out = logits_from(e)
            hidden_out.clear()
            return out

        return MlmTask(embeds=embeds, logits=logits, logits_from=perturbed, task_loss=mlm_loss + nsp_loss,
                       mlm_loss=mlm_loss, nsp_loss=nsp_loss, masked_correct=masked_correct, masked_count=masked_count,
                       replay=replay)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        nsp_labels: torch.Tensor | None = None,
    ) -> PretrainOutput:
        """One plain MLM (+NSP) forward.

        Args:
            input_ids: ``[B, T]`` (masked) token ids.
            attention_mask: ``[B, T]`` 1 for tokens, 0 for padding (None: no padding).
            token_type_ids: ``[B, T]`` segment ids (None: all 0).
            mlm_labels: ``[B, T]`` original ids at masked positions, -100 elsewhere.
            nsp_labels: ``[B]`` 0 = B follows A, 1 = random B (BERT NSP models only).

        Returns:
            :class:`PretrainOutput` (``adv_loss`` 0); back-propagate ``.loss`` once.
        """
        if mlm_labels is None:
            raise ValueError("mlm_labels is required ([B, T], -100 at positions not to predict)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        t = self.task(input_ids, attention_mask, token_type_ids, mlm_labels, nsp_labels)
        return output_of(t, t.task_loss, t.task_loss.new_zeros(()), overflow=False)


def output_of(t: MlmTask, loss: torch.Tensor, adv_loss: torch.Tensor, overflow: bool,
              alum_stats: AlumSums | None = None) -> PretrainOutput:
    """The :class:`PretrainOutput` of a task forward with the given total loss and adversarial term."""
    return PretrainOutput(
        loss=loss, mlm_loss=t.mlm_loss, adv_loss=adv_loss, nsp_loss=t.nsp_loss,
        overflow=torch.tensor(int(overflow), dtype=torch.long, device=t.mlm_loss.device),
        masked_correct=t.masked_correct, masked_count=t.masked_count, mlm_logits=t.logits, alum_stats=alum_stats,
    )


def build_model(
    vocab_size: int,
    arch: str = "bert",
    hidden_size: int = 768,
    num_layers: int = 12,
    num_heads: int = 12,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    dropout: float = 0.1,
    nsp: bool = False,
    pad_token_id: int = 0,
    cls_token_id: int | None = None,
    sep_token_id: int | None = None,
    attn_implementation: str = "sdpa",
    seed: int | None = None,
) -> PretrainModel:
    """A freshly initialised model (BERT's init: N(0, 0.02), as transformers does).

    Args:
        vocab_size: tokenizer vocabulary size.
        arch: "bert" (segment embeddings, optional NSP) or "roberta" (no segments, no NSP).
        hidden_size, num_layers, num_heads: encoder shape.
        intermediate_size: feed-forward width (None: 4 × hidden_size).
        max_position_embeddings: longest sequence the model takes (RoBERTa adds its pad offset itself).
        dropout: hidden and attention dropout.
        nsp: add the next-sentence head (BERT only).
        pad_token_id, cls_token_id, sep_token_id: the tokenizer's special ids.
        attn_implementation: transformers attention backend ("sdpa" or "eager").
        seed: if given, the init is drawn from this seed.

    Returns:
        A :class:`PretrainModel` in training mode.
    """
    if arch not in ARCHS:
        raise UserError(f"model arch: got {arch!r}, expected one of {', '.join(ARCHS)}")
    if hidden_size % num_heads:
        raise UserError(f"model.hidden_size={hidden_size} is not divisible by model.num_heads={num_heads}")
    if nsp and arch != "bert":
        raise UserError("model: next-sentence prediction needs arch 'bert'")
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=pad_token_id,
    )
    if arch == "bert":
        config = BertConfig(max_position_embeddings=max_position_embeddings, type_vocab_size=2, **common)
        hf_class = BertForPreTraining if nsp else BertForMaskedLM
    else:
        config = RobertaConfig(
            max_position_embeddings=max_position_embeddings + pad_token_id + 1,
            type_vocab_size=1,
            bos_token_id=cls_token_id if cls_token_id is not None else 0,
            eos_token_id=sep_token_id if sep_token_id is not None else 2,
            **common,
        )
        hf_class = RobertaForMaskedLM
    config._attn_implementation = attn_implementation
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            hf = hf_class(config)
    else:
        hf = hf_class(config)
    return PretrainModel(hf.train())


def load_model(
    hf_dir: str | Path,
    nsp: bool = False,
    attn_implementation: str = "sdpa",
) -> PretrainModel:
    """Load a Hugging Face BERT/RoBERTa directory (``config.json`` + weights) for (continued) pre-training.

    Heads missing from the directory (e.g. a bare ``BertModel``) are freshly initialised by transformers.

    Args:
        hf_dir: directory with ``config.json`` and ``model.safetensors``/``pytorch_model.bin``.
        nsp: load as ``BertForPreTraining`` (MLM + NSP heads).
        attn_implementation: transformers attention backend.

    Returns:
        A :class:`PretrainModel` in training mode.
    """
    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise UserError(f"{hf_dir}: not a Hugging Face model directory (no config.json)")
    try:
        config = AutoConfig.from_pretrained(hf_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"{hf_dir / 'config.json'}: cannot read the model config ({exc})") from None
    if config.model_type == "bert":
        hf_class = BertForPreTraining if nsp else BertForMaskedLM
    elif config.model_type in ("roberta", "xlm-roberta"):
        if nsp:
            raise UserError(f"{hf_dir}: next-sentence prediction needs a BERT model, this is {config.model_type}")
        hf_class = RobertaForMaskedLM
    else:
        raise UserError(f"{hf_dir / 'config.json'}: model_type {config.model_type!r}, expected 'bert' or 'roberta'")
    try:
        hf = hf_class.from_pretrained(hf_dir, local_files_only=True, attn_implementation=attn_implementation)
    except Exception as exc:  # noqa: BLE001 - safetensors/pickle errors share no base class; one line each
        raise weights_error(hf_dir, exc) from None
    return PretrainModel(hf.train())


def weights_error(hf_dir: str | Path, exc: BaseException) -> UserError:
    """One line for weights a Hugging Face directory cannot give: the file, what is wrong, what to do.

    transformers loads ``pytorch_model.bin`` with ``weights_only=True``: a pickle that holds anything but
    tensors (possibly code) is refused, never run; a truncated ``model.safetensors`` fails its header check.
    """
    import pickle

    hf_dir = Path(hf_dir)
    files = [hf_dir / n for n in ("model.safetensors", "pytorch_model.bin") if (hf_dir / n).exists()]
    where = files[0] if files else hf_dir
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if isinstance(exc, pickle.UnpicklingError) or "weights only load failed" in str(exc).lower():
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = found.group(1) if found else "Python objects"
        return UserError(f"{where}: holds {what}, not just tensors; refusing to unpickle it (it could run code); "
                         "use a model.safetensors from a source you trust")
    if type(exc).__name__ == "SafetensorError" or isinstance(exc, (EOFError, RuntimeError, OSError, ValueError)):
        return UserError(f"{where}: cannot load the model weights ({type(exc).__name__}: {first}); the file is "
                         "damaged or incomplete: export or download it again")
    raise exc
