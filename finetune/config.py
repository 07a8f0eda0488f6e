"""Typed options of ``python -m finetune classify``, ``qa``, ``attack`` and ``text-attack`` (``pretrain.config_base``
models).

Options come from an optional JSON file (``--config``) with the command line on top: the flags generated from
these models (``finetune.flags``) and ``--key value`` / ``--alum.key value`` overrides. Loading, duplicate-key
rejection and the one-line errors are pretrain's (``pretrain.config_base``). A run writes the resolved options
to ``OUTPUT_DIR/config.json``, which loads back as ``--config``.

Names follow ``pretrain train``'s run config where the meaning is the same (``clip_grad``, ``log_interval``; the
older ``max_grad_norm`` and ``log_every`` still load). ALUM options are ``pretrain.config.AlumSection``'s with
the fine-tuning defaults: off unless asked, α=1 (paper, §4 fine-tuning).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from pretrain.config import AlumSection
from pretrain.config_base import Section


class FinetuneAlumSection(AlumSection):
    """ALUM on the task outputs: pre-training's ALUM section with the fine-tuning defaults (off unless asked;
    α=1). Any other key set picks that value over the variant's."""

    enabled: bool = False
    """Add α·max l_sym over the task outputs (``--alum``)."""
    alpha: float = Field(1.0, ge=0.0)
    """α: weight of the adversarial term (1 for fine-tuning in the paper)."""


class TableColumns(Section):
    """Where a classify table keeps its texts and labels (shared by ``classify`` and ``attack``)."""

    task: str | None = None
    """GLUE layout that names the columns, labels and metric: sst2 cola mnli rte qnli wnli mrpc qqp stsb."""
    text_a: str | None = None
    """First text column (default: the task's, else ``sentence``)."""
    text_b: str | None = None
    """Second text column, for sentence pairs (default: the task's, else none)."""
    label_column: str | None = None
    """Label column (default: the task's, else ``label``)."""


class TrainOptions(Section):
    """What ``classify`` and ``qa`` share: data, run directory, optimisation, evaluation, ALUM."""

    # Configs written before the names followed pre-training's (OUTPUT_DIR/config.json of older runs) still load.
    renamed: ClassVar[dict[str, str]] = {"max_grad_norm": "clip_grad", "log_every": "log_interval"}

    model: Path
    """A ``pretrain export`` directory or any local Hugging Face BERT/RoBERTa directory."""
    train: Path
    """Training file (classify: a TSV/CSV/JSONL table; qa: SQuAD v1.1/v2.0 JSON)."""
    dev: Path
    """Evaluation file, in the training file's format."""
    output_dir: Path
    """Run directory: config.json, metrics.json(l), tensorboard/, best/ and final/."""
    epochs: float = Field(3.0, gt=0)
    """Training epochs (fractions allowed)."""
    batch_size: int = Field(32, ge=1)
    """Examples per optimizer step on each rank (no gradient accumulation)."""
    eval_batch_size: int = Field(64, ge=1)
    """Examples per forward pass during evaluation."""
    lr: float = Field(5e-5, gt=0)
    """Peak learning rate (linear warmup, then linear decay to 0)."""
    weight_decay: float = Field(0.01, ge=0)
    """Decoupled AdamW weight decay (not applied to biases and LayerNorm)."""
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    """Share of the steps with linear warmup."""
    clip_grad: float = Field(1.0, ge=0)
    """Global grad-norm clip (0 = off), as pre-training's ``optim.clip_grad``; formerly ``max_grad_norm``."""
    max_seq_len: int = Field(128, ge=8)
    """Tokens per example, special tokens included (longer examples are truncated)."""
    seed: int = 42
    """Seeds the task head's init, the data order, dropout and ALUM's δ."""
    threads: int | None = Field(None, ge=1)
    """torch CPU threads (None: torch's default)."""
    log_interval: int = Field(20, ge=1)
    """Steps between TensorBoard / metrics.jsonl rows, as pre-training's ``train.log_interval``; formerly
    ``log_every``."""
    evals_per_epoch: int = Field(1, ge=1)
    """Dev evaluations per epoch (the best one is kept as best/)."""
    deepspeed: Path | None = None
    """DeepSpeed JSON (optional); its batch and clip keys, if given, must agree with batch_size and clip_grad."""
    alum: FinetuneAlumSection = FinetuneAlumSection()
    """ALUM (adversarial fine-tuning, ``pretrain.alum``); its other options take effect with ``--alum``."""
    metric: str | None = None
    """Score that picks the best checkpoint, higher is better (None: the task's; accuracy, or f1 for qa)."""


class ClassifyOptions(TableColumns, TrainOptions):
    """``python -m finetune classify``: classification or regression on a table."""

    labels: list[str] | None = None
    """The label set in id order (default: the task's, else the training file's labels, sorted)."""
    regression: bool | None = None
    """Predict a number (mean-squared error) instead of a class (default: the task's, else no)."""


class QAOptions(TrainOptions):
    """``python -m finetune qa``: extractive question answering on SQuAD JSON."""

    max_seq_len: int = Field(384, ge=32)
    """Tokens per window: question, a piece of the context and the special tokens (BERT's SQuAD setting)."""
    doc_stride: int | None = Field(None, ge=0)
    """Tokens between window starts; None = max_seq_len // 3 (128 at BERT's 384, as Hugging Face's examples)."""
    max_answer_len: int = Field(30, ge=1)
    """Longest answer span, in tokens."""
    n_best: int = Field(20, ge=1)
    """Start and end candidates considered per window."""
    null_threshold: float = 0.0
    """SQuAD v2.0: answer "" when the no-answer score beats the best span by more than this."""
    lr: float = Field(3e-5, gt=0)
    """Peak learning rate (BERT's SQuAD setting)."""
    batch_size: int = Field(12, ge=1)
    """Examples (windows) per optimizer step on each rank."""

    @model_validator(mode="after")
    def _stride_fits(self) -> QAOptions:
        if self.doc_stride is None:
            # Written around validate_assignment, which would rerun this check from inside itself.
            object.__setattr__(self, "doc_stride", self.max_seq_len // 3)
        if self.doc_stride >= self.max_seq_len // 2:
            raise ValueError(f"doc_stride: got {self.doc_stride}, expected less than max_seq_len/2 "
                             f"({self.max_seq_len // 2}) so that windows advance")
        return self


class AttackOptions(TableColumns):
    """``python -m finetune attack``: accuracy (or SQuAD F1) under an embedding-space PGD attack; the defaults
    attack where and in the units ALUM's default perturbation trains."""

    model: Path
    """A fine-tuned directory (e.g. RUN/best), whose config.json holds the label names."""
    data: Path
    """A classify table (.tsv/.csv/.jsonl) or a SQuAD .json file."""
    eps: list[Annotated[float, Field(ge=0)]] = Field(min_length=1)
    """Per-token radii in ``units`` (0 = the clean score); relative: fractions of each token's embedding norm."""
    steps: int = Field(10, ge=1)
    """PGD steps."""
    step_size: float | None = Field(None, gt=0)
    """η, the step along the normalised gradient; None = 2.5·ε/steps."""
    norm: Literal["l2", "linf"] = "l2"
    """Per-token ball: l2 (as ALUM's default perturbation) or linf."""
    units: Literal["relative", "absolute"] = "relative"
    """relative (as ALUM's default: ε·‖x_t‖ per token, needs norm l2) or absolute embedding units."""
    site: Literal["embedding_output", "word_embeddings"] = "embedding_output"
    """Where δ is added: the embedding layer's output (where ALUM perturbs) or the word embeddings."""
    batch_size: int = Field(32, ge=1)
    """Examples per attack batch."""
    max_seq_len: int | None = Field(None, ge=8)
    """Truncation; None = 128 for tables, 384 for SQuAD."""
    doc_stride: int = Field(128, ge=0)
    """SQuAD: tokens between window starts."""
    seed: int = 0
    """torch seed (the attack itself is deterministic)."""
    threads: int | None = Field(None, ge=1)
    """torch CPU threads (None: torch's default)."""
    output: Path | None = None
    """Write the results here as JSON."""

    @field_validator("eps", mode="before")
    @classmethod
    def _finite_radii(cls, value: Any) -> Any:
        # One message for the whole sweep (pydantic's would name one item and say nothing of the range).
        if isinstance(value, list) and any(isinstance(e, int | float) and not (math.isfinite(e) and e >= 0)
                                           for e in value):
            raise ValueError(f"got {value}, expected finite values >= 0")
        return value

    @field_validator("steps", mode="before")
    @classmethod
    def _at_least_one_step(cls, value: Any) -> Any:
        # Said in PGD's terms: with 0 steps the "attacked" score would be the clean one.
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise ValueError(f"got {value}, expected at least 1 PGD step")
        return value

    @model_validator(mode="after")
    def _relative_needs_l2(self) -> AttackOptions:
        if self.units == "relative" and self.norm != "l2":
            raise ValueError(f"--units relative: needs --norm l2 (got --norm {self.norm}); use --units absolute "
                             "for linf")
        return self


class TextAttackOptions(TableColumns):
    """``python -m finetune text-attack``: accuracy of a fine-tuned classifier under a TextAttack recipe
    (``finetune.text_attack``), on the first rows of a table."""

    model: Path
    """A fine-tuned classifier directory (e.g. RUN/best)."""
    data: Path
    """A classify table (.tsv/.csv/.jsonl)."""
    recipe: Literal["deepwordbug"] = "deepwordbug"
    """TextAttack recipe (DeepWordBug: character edits of the words that matter most to the prediction)."""
    examples: int | None = Field(200, ge=1)
    """Attack the first N rows (None: every row)."""
    max_seq_len: int = Field(128, ge=8)
    """Truncation (the attack sees only the text that fits)."""
    batch_size: int = Field(64, ge=1)
    """Texts per forward pass."""
    seed: int = 0
    """Seeds the recipe's random character edits."""
    threads: int | None = Field(None, ge=1)
    """torch CPU threads (None: torch's default)."""
    output: Path | None = None
    """Write the results (and the successful edits) here as JSON."""
