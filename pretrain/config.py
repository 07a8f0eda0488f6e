"""The run config of ``python -m pretrain train``: one typed pydantic model, loaded from JSON, then CLI overrides.

Loading, overrides and errors are ``pretrain.config_base``'s (shared with finetune's options): unknown keys and
duplicate JSON keys are rejected, and every error names the key, the value given and what was expected (one
line, a ``UserError``). The resolved config is written to
``<output_dir>/config.json`` by the trainer, so a run directory says exactly what produced it.

Field names follow the papers and peers a user comes from: ``alum.*`` mirrors ``pretrain.alum.AlumConfig``
(the ALUM paper's α, K, σ, η, ε), batch sizes and intervals follow Megatron-LM (``micro_batch``,
``global_batch``, ``exit_interval``) and the DeepSpeed JSON is cross-checked here against those values
(``check_deepspeed_json``) before DeepSpeed sees it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from data_tools.errors import UserError
from pretrain.config_base import Section, apply_overrides, load, load_json, validate

# load_json and apply_overrides live in config_base; engine.py and the tests know them by this module's name.
__all__ = ["AlumSection", "DataConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig", "apply_overrides",
           "build_config", "check_sections_are_objects", "checked_deepspeed_json", "config_dump", "deepspeed_dict", "load_config", "load_json"]


class DataConfig(Section):
    """Where the training samples come from and how they are made (see ``pretrain.samples``)."""

    prefixes: list[str] = Field(min_length=1)
    """Corpus prefixes (``.bin``/``.idx`` made by ``python -m data_tools build``); a sharded prefix, a
    directory or a glob expands to its corpora."""
    weights: list[float] | None = None
    """Blend weights, one per prefix (Megatron's ``--data-path w1 p1 w2 p2``); None = proportional to size."""
    tokenizer: str
    """Tokenizer path (a ``train-tokenizer`` dir, vocab.txt, tokenizer.json, .model or an HF dir)."""
    style: Literal["bert", "roberta"] = "bert"
    """``bert``: segment pairs from sentence runs; ``roberta``: full-sentence packing across documents."""
    nsp: bool = False
    """Next-sentence prediction (BERT style only; RoBERTa showed it does not help)."""
    max_seq_len: int = Field(128, ge=8)
    """Tokens per sample, [CLS]/[SEP] included."""
    mask_prob: float = Field(0.15, gt=0.0, lt=1.0)
    """Share of tokens selected for MLM (then 80% [MASK], 10% random, 10% kept)."""
    whole_word_mask: bool = False
    """Mask all pieces of a word together (WordPiece ``##`` / SentencePiece ``▁``)."""
    eval_prefixes: list[str] | None = None
    """Held-out corpus for eval; None = hold out the last ``eval_samples`` samples of the training corpus."""
    eval_samples: int = Field(256, ge=0)
    """Held-out samples for eval (0 disables eval)."""
    num_workers: int = Field(1, ge=0)
    """DataLoader worker processes per rank (1 keeps sample making off the training thread)."""
    cache_dir: str | None = None
    """Where sample indices and blend maps are cached (Megatron's ``--data-cache-path``); None = beside each
    corpus. ``python -m pretrain prepare-data`` builds them all before training."""

    @field_validator("prefixes", "eval_prefixes", mode="before")
    @classmethod
    def _one_prefix(cls, value: Any) -> Any:
        # `--data.prefixes corpus/wiki` (or "prefixes": "corpus/wiki"): one prefix is a list of one.
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.weights is not None and len(self.weights) != len(self.prefixes):
            raise ValueError(
                f"data.weights: expected one weight per prefix ({len(self.prefixes)}), got {len(self.weights)}"
            )
        if self.weights is not None and any(w <= 0 for w in self.weights):
            raise ValueError(f"data.weights: expected positive weights, got {self.weights}")
        if self.nsp and self.style == "roberta":
            raise ValueError("data.nsp: next-sentence prediction needs data.style='bert'")
        return self


class ModelConfig(Section):
    """The encoder: built from a size, or initialised from a Hugging Face BERT/RoBERTa directory."""

    init_from: str | None = None
    """HF directory to start from (its config wins over the size fields below)."""
    arch: Literal["bert", "roberta"] | None = None
    """None = the same as data.style."""
    hidden_size: int = Field(768, ge=8)
    """Width of the encoder (BERT-base: 768)."""
    num_layers: int = Field(12, ge=1)
    """Transformer layers."""
    num_heads: int = Field(12, ge=1)
    """Attention heads (must divide hidden_size)."""
    intermediate_size: int | None = None
    """None = 4 × hidden_size, as BERT."""
    max_position_embeddings: int = Field(512, ge=8)
    """Position table size (≥ data.max_seq_len)."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Hidden and attention dropout (BERT's 0.1)."""

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size: {self.hidden_size} is not divisible by model.num_heads={self.num_heads}"
            )
        return self


class AlumSection(Section):
    """ALUM (Liu et al. 2020): ``variant`` picks a named perturbation, any field given explicitly overrides it.

    Same names as ``pretrain.alum.AlumConfig`` (its module docstring cites the source of every variant; "authors'
    code" below is namisan/mt-dnn @ a1b63fbb, ``alum/adv_masked_lm.py``). The values a variant leaves unset are
    filled in at load time, so ``config.json`` holds every resolved value.
    """

    variant: Literal["default", "paper", "authors", "noise"] = "default"
    """default (normalised ascent, per-token ℓ2 ball relative to ‖x_t‖, chosen by a sweep); paper (Algorithm 1,
    ε = 1e-5); authors (the released plugin's δ normalisation: scaled noise); noise (random δ of the default's
    size, no ascent: the control)."""
    enabled: bool = True
    """Add the adversarial term (False: plain MLM)."""
    alpha: float = Field(10.0, ge=0.0)
    """α: weight of the adversarial term (10 for pre-training in the paper)."""
    steps: int = Field(1, ge=0)
    """K: ascent steps (0: δ stays at its init)."""
    init_std: float = Field(1e-3, ge=0.0)
    """σ: size of δ's Gaussian init (per coordinate in absolute units; ≈ σ·‖x_t‖ per token in relative units)."""
    step_size: float = Field(0.1, ge=0.0)
    """η: ascent step length along the normalised gradient (in ``units``)."""
    eps: float = Field(0.1, ge=0.0)
    """ε: per-token radius of the ball δ is projected on (in ``units``)."""
    norm: Literal["l2", "linf", "token_linf"] = "l2"
    """Per-token ``l2``/``linf`` ball with the matching normalised ascent, or ``token_linf`` (authors' plugin: divide δ
    by its per-token max, no radius)."""
    units: Literal["relative", "absolute"] = "relative"
    """relative: σ, η, ε are fractions of each token's embedding norm ‖x_t‖ (needs norm l2); absolute: raw units."""
    ascent_loss: Literal["kl", "sym"] = "sym"
    """Loss the ascent maximises: l_sym (paper) or one-sided KL(clean‖adv) (authors); the final term is l_sym."""
    init: Literal["gaussian", "sphere"] = "gaussian"
    """δ's init: Gaussian (Algorithm 1) or a random direction with per-token norm exactly ε (the noise control)."""
    embed_grad: bool = True
    """Let the adversarial term's gradient reach the embedding layer through x + δ (paper); authors: detached."""
    same_dropout: bool = True
    """Replay the same dropout masks in every perturbed forward of a step (authors: fresh masks)."""
    site: Literal["embedding_output", "word_embeddings"] = "embedding_output"
    """Where δ is added: after the embedding LayerNorm (authors' code) or to the word embeddings (FreeLB-style)."""
    masked_only: bool = True
    """Compare outputs at masked positions only (authors' code; avoids the vocabulary head at every position)."""
    drop_nonfinite: bool = True
    """Drop the adversarial term for a step whose ascent gradient is NaN/inf (authors' code) instead of failing."""
    gain_interval: int = Field(10, ge=0)
    """Measure the ascent gain (l_sym at δ over l_sym at a random δ of the same size) every N ALUM steps; 0: never."""

    @model_validator(mode="before")
    @classmethod
    def _fill_from_variant(cls, data: Any) -> Any:
        # The variant supplies every perturbation value the user did not give; explicit keys win.
        if not isinstance(data, dict):
            return data
        from pretrain.alum import VARIANT_VALUES

        name = data.get("variant", "default")
        if name not in VARIANT_VALUES:
            return data  # the Literal check reports it, naming the key
        resolved = {**VARIANT_VALUES[name], **data}
        if "units" not in data and resolved.get("norm") != "l2":
            resolved["units"] = "absolute"  # relative units are ℓ2 only; an explicit linf means raw units
        return resolved

    @model_validator(mode="after")
    def _check(self) -> AlumSection:
        if self.units == "relative" and self.norm != "l2":
            raise ValueError(f"alum.units: 'relative' needs alum.norm='l2' (got norm={self.norm!r}); "
                             "use units='absolute' for linf/token_linf")
        return self

    def build(self):
        """The ``pretrain.alum.AlumConfig`` these options describe, or None when ALUM is off."""
        if not self.enabled:
            return None
        from pretrain.alum import AlumConfig

        return AlumConfig(**self.model_dump())


class OptimConfig(Section):
    """Optimizer and LR schedule: linear warmup then linear decay to ``min_lr`` (BERT's schedule)."""

    name: Literal["adamw", "lamb", "fused_adam", "cpu_adam"] = "adamw"
    """adamw: torch AdamW; fused_adam/lamb: DeepSpeed's fused CUDA kernels; cpu_adam: DeepSpeed CPU Adam
    (needed by ZeRO-Offload)."""
    lr: float = Field(1e-4, gt=0.0)
    """Peak learning rate."""
    min_lr: float = Field(0.0, ge=0.0)
    """Learning rate at the end of the linear decay."""
    weight_decay: float = Field(0.01, ge=0.0)
    """Decoupled weight decay (not applied to biases and LayerNorm)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam β1, β2."""
    eps: float = Field(1e-6, gt=0.0)
    """Adam ε."""
    warmup_steps: int | None = Field(None, ge=0)
    """Linear warmup steps; None = warmup_ratio × total steps."""
    warmup_ratio: float = Field(0.01, ge=0.0, le=1.0)
    """Used when warmup_steps is None: warmup = ratio × total steps."""
    clip_grad: float = Field(1.0, ge=0.0)
    """Global grad-norm clip (0 = off); passed to DeepSpeed as ``gradient_clipping``."""

    @model_validator(mode="after")
    def _check(self) -> OptimConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"optim.min_lr: {self.min_lr} must not exceed optim.lr={self.lr}")
        return self


class TrainConfig(Section):
    """Batching, length of the run, intervals, where it writes and the DeepSpeed JSON."""

    output_dir: str
    """Run directory: config.json, checkpoints/, latest, tensorboard/, metrics.jsonl; reruns resume from it."""
    deepspeed_config: str
    """DeepSpeed JSON (see deepspeed_configs/); its batch/clip keys, if given, must agree with this config."""
    micro_batch: int = Field(ge=1)
    """Samples per rank per forward (DeepSpeed's train_micro_batch_size_per_gpu)."""
    global_batch: int = Field(ge=1)
    """Samples per optimizer step over all ranks; gradient accumulation = global / (micro × world)."""
    train_steps: int | None = Field(None, ge=1)
    """Optimizer steps (or give train_tokens)."""
    train_tokens: int | None = Field(None, ge=1)
    """Alternative to train_steps: steps = ceil(tokens / (global_batch × max_seq_len))."""
    seed: int = 1234
    """Seeds data order, masking, dropout and δ's init (every choice keyed by seed, sample and epoch)."""
    log_interval: int = Field(10, ge=1)
    """Steps between TensorBoard/metrics.jsonl rows."""
    eval_interval: int = Field(1000, ge=0)
    """0 = no eval during the run (one eval still runs at the end if there are eval samples)."""
    eval_batches: int = Field(8, ge=1)
    """Micro-batches per rank in each eval."""
    save_interval: int = Field(1000, ge=0)
    """0 = save only at the end."""
    keep_last: int = Field(3, ge=1)
    """Checkpoints kept; older ones are deleted after a newer one is complete."""
    exit_interval: int | None = Field(None, ge=1)
    """Megatron's --exit-interval: save and stop once step % exit_interval == 0 (resume continues)."""
    resume: Literal["auto", "never"] | str = "auto"
    """auto: continue from ``output_dir/latest`` when it exists; never: refuse a non-empty output_dir;
    any other value: a checkpoint tag in output_dir/checkpoints to resume from."""
    peak_tflops: float | None = Field(None, gt=0.0)
    """Peak device TFLOP/s for the MFU estimate; None = a known GPU's or a measured CPU matmul peak."""
    progress: bool = True
    """Progress bar on rank 0."""
    log_sample_ids: bool = False
    """Record the sample ids each rank trained on, per step, in RUN_DIR/sample_ids/rank<R>.jsonl (a data-order
    audit: which samples a step saw, that ranks never overlap, what a resumed run repeats)."""

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if (self.train_steps is None) == (self.train_tokens is None):
            raise ValueError("train.train_steps / train.train_tokens: expected exactly one of them to be set")
        if self.global_batch % self.micro_batch:
            raise ValueError(
                f"train.global_batch: {self.global_batch} is not a multiple of train.micro_batch={self.micro_batch}"
            )
        return self


class RunConfig(Section):
    """Everything one pre-training run needs; ``config.json`` in the run directory is this, resolved."""

    data: DataConfig
    model: ModelConfig = ModelConfig()
    alum: AlumSection = AlumSection()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig

    @model_validator(mode="after")
    def _check_positions_fit_samples(self) -> RunConfig:
        m = self.model
        if m.init_from is None and m.max_position_embeddings < self.data.max_seq_len:
            raise ValueError(f"model.max_position_embeddings: {m.max_position_embeddings} positions cannot hold "
                             f"samples of data.max_seq_len={self.data.max_seq_len} tokens; expected at least that")
        return self

    @model_validator(mode="after")
    def _check_arch_fits_samples(self) -> RunConfig:
        if self.model.arch == "roberta" and self.data.style == "bert":
            raise ValueError("model.arch: 'roberta' has a single token type, but data.style='bert' makes "
                             "two-segment samples; use data.style='roberta' or model.arch='bert'")
        return self

    def total_steps(self) -> int:
        """Optimizer steps of the whole run (from train_steps, or train_tokens over global_batch × seq)."""
        if self.train.train_steps is not None:
            return self.train.train_steps
        return math.ceil(self.train.train_tokens / (self.train.global_batch * self.data.max_seq_len))

    def grad_accum(self, world_size: int) -> int:
        """Gradient accumulation steps for ``world_size`` data-parallel ranks, or UserError if not integral."""
        per_step = self.train.micro_batch * world_size
        if self.train.global_batch % per_step:
            raise UserError(
                f"train.global_batch: {self.train.global_batch} is not a multiple of train.micro_batch × world size"
                f" = {self.train.micro_batch} × {world_size}"
            )
        return self.train.global_batch // per_step

    def warmup_steps(self) -> int:
        """Warmup steps (explicit, or ratio × total)."""
        if self.optim.warmup_steps is not None:
            return self.optim.warmup_steps
        return int(self.optim.warmup_ratio * self.total_steps())


# --------------------------------------------------------------------------------------------- loading


def build_config(raw: dict[str, Any], source: str = "config", overridden: set[str] = frozenset()) -> RunConfig:
    """Validate a raw dict into a ``RunConfig``; UserError naming the key (and the command line for a key in
    ``overridden``) on any problem."""
    return validate(RunConfig, raw, source, {key: f"--{key}" for key in overridden})


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a run config from JSON and apply CLI overrides.

    Args:
        path: The run config JSON.
        overrides: ``--section.key value`` tokens.
    Returns:
        The validated ``RunConfig``. Relative paths in it are resolved against the current directory.
    """
    return load(RunConfig, path, overrides)


# ------------------------------------------------------------------------------- DeepSpeed JSON checks

def check_sections_are_objects(ds: dict[str, Any], path: str | Path) -> None:
    """UserError unless the DeepSpeed sections this project reads (``zero_optimization``, ``fp16``, ``bf16``) are
    JSON objects: every later check reads keys inside them."""
    for key in ("zero_optimization", "fp16", "bf16"):
        section = ds.get(key, {})
        if not isinstance(section, dict):
            raise UserError(f"{path}: {key}: expected an object, got {section!r}")


def checked_deepspeed_json(path: str | Path, owned: dict[str, tuple[Any, str]],
                           sections: dict[str, str]) -> dict[str, Any]:
    """A DeepSpeed JSON with the keys a run owns filled in: pre-training and fine-tuning read it through here.

    Args:
        path: The DeepSpeed JSON (duplicate keys refused by ``load_json``).
        owned: ``{key: (value, owner)}``: keys the run sets; the file may repeat one only as ``"auto"`` or the
            same value (``owner``, the config key or flag that sets it, is named in the error).
        sections: ``{key: owner}``: sections the file may not have at all (the run builds its optimizer and
            schedule).
    Returns:
        The dict, owned keys filled in; a one-line UserError naming the file and key otherwise.
    """
    ds = load_json(path)
    check_sections_are_objects(ds, path)
    for key, (want, owner) in owned.items():
        if key in ds and ds[key] != "auto" and ds[key] != want:
            raise UserError(
                f"{path}: {key}={ds[key]!r} contradicts the run config ({owner} gives {want!r}); "
                f"remove it or set it to \"auto\""
            )
        ds[key] = want
    for key, owner in sections.items():
        if key in ds:
            raise UserError(f"{path}: {key!r} section not allowed; the run sets it ({owner})")
    if ds.get("fp16", {}).get("enabled") and ds.get("bf16", {}).get("enabled"):
        raise UserError(f"{path}: fp16.enabled and bf16.enabled are both true; expected at most one")
    return ds


def deepspeed_dict(cfg: RunConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config dict for this run: the JSON file, cross-checked, with batch/clip keys filled in.

    Args:
        cfg: The run config.
        world_size: Data-parallel ranks.
    Returns:
        A dict for ``deepspeed.initialize(config=...)``. UserError (naming the JSON key and the run-config
        key) where the two disagree, e.g. a ``train_batch_size`` other than ``train.global_batch``.
    """
    path = cfg.train.deepspeed_config
    ds = checked_deepspeed_json(path, {
        "train_batch_size": (cfg.train.global_batch, "train.global_batch"),
        "train_micro_batch_size_per_gpu": (cfg.train.micro_batch, "train.micro_batch"),
        "gradient_accumulation_steps": (cfg.grad_accum(world_size), "train.global_batch / (micro_batch × world)"),
        "gradient_clipping": (cfg.optim.clip_grad, "optim.clip_grad"),
    }, {"optimizer": "optim.*", "scheduler": "optim.lr / optim.warmup_*"})
    offload = ds.get("zero_optimization", {}).get("offload_optimizer", {})
    if offload.get("device", "none") != "none" and cfg.optim.name != "cpu_adam":
        raise UserError(
            f"{path}: zero_optimization.offload_optimizer needs optim.name='cpu_adam' (got {cfg.optim.name!r})"
        )
    return ds


def config_dump(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as a JSON-ready dict (what goes to ``<output_dir>/config.json``)."""
    return cfg.model_dump(mode="json")
