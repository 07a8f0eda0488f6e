"""Typed configs of the ``classify`` and ``qa`` commands (pydantic, unknown keys rejected).

A config comes from an optional JSON file (``--config``, duplicate keys rejected) overridden by the flags
given on the command line; the resolved config is written to ``OUTPUT_DIR/config.json``. ALUM defaults
are the fine-tuning ones: α=1 (paper, §4 fine-tuning) and otherwise ``pretrain.alum.AlumConfig``'s.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from data_tools.errors import UserError
from data_tools.jsonfile import read_json
from pretrain.config import AlumSection


class AlumOptions(AlumSection):
    """``--alum`` options: pre-training's ALUM section with the fine-tuning defaults (off unless asked; α=1)."""

    enabled: bool = False
    """Add α·max l_sym over the task outputs (``--alum``)."""
    alpha: float = Field(1.0, ge=0.0)
    """α: weight of the adversarial term (1 for fine-tuning in the paper)."""


class TrainOptions(BaseModel):
    """What every fine-tuning command shares."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf are never a meaningful setting
    model: Path
    train: Path
    dev: Path
    output_dir: Path
    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    max_grad_norm: float = Field(1.0, ge=0)
    max_seq_len: int = Field(128, ge=8)
    seed: int = 42
    threads: int | None = Field(None, ge=1)
    log_every: int = Field(20, ge=1)
    evals_per_epoch: int = Field(1, ge=1)
    deepspeed: Path | None = None
    alum: AlumOptions = AlumOptions()
    metric: str | None = None  # picks the best checkpoint; default per task (classify: accuracy, qa: f1)


class ClassifyOptions(TrainOptions):
    """``python -m finetune classify``."""

    task: str | None = None
    text_a: str | None = None
    text_b: str | None = None
    label_column: str | None = None
    labels: list[str] | None = None
    regression: bool | None = None


class QAOptions(TrainOptions):
    """``python -m finetune qa``."""

    max_seq_len: int = Field(384, ge=32)
    doc_stride: int | None = Field(None, ge=0)
    """Tokens between window starts; None = max_seq_len // 3 (128 at BERT's 384, as Hugging Face's examples)."""
    max_answer_len: int = Field(30, ge=1)
    n_best: int = Field(20, ge=1)
    null_threshold: float = 0.0
    lr: float = Field(3e-5, gt=0)
    batch_size: int = Field(12, ge=1)

    @model_validator(mode="after")
    def _stride_fits(self) -> QAOptions:
        if self.doc_stride is None:
            self.doc_stride = self.max_seq_len // 3
        if self.doc_stride >= self.max_seq_len // 2:
            raise ValueError(f"doc_stride: got {self.doc_stride}, expected less than max_seq_len/2 "
                             f"({self.max_seq_len // 2}) so that windows advance")
        return self


def _no_duplicates(path: Path):
    def hook(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise UserError(f"{path}: duplicate key {key!r}; expected each key once")
            seen.add(key)
        return dict(pairs)

    return hook


def load_options(cls: type[TrainOptions], config_path: str | None, overrides: dict) -> TrainOptions:
    """Build ``cls`` from a JSON file (optional) and flag overrides (dotted keys such as ``alum.alpha``).

    Raises:
        UserError: naming the field, the value given and what is valid.
    """
    data: dict = {}
    if config_path:
        path = Path(config_path)
        if not path.is_file():
            raise UserError(f"{path}: no such config file")
        data = read_json(path, object_pairs_hook=_no_duplicates(path))
    for key, value in overrides.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "config"
        if err["type"] == "value_error":  # a whole-model check: its message names the fields (its input is
            raise UserError(err["msg"].removeprefix("Value error, ")) from None  # the entire config: not shown)
        given = f", got {err['input']!r}" if err["type"] != "missing" and not isinstance(err.get("input"), dict) else ""
        # Blame the flag when the value came from the command line, the JSON file otherwise.
        where = f"command line: --{loc.replace('.', '-').replace('_', '-')}: " if loc in overrides else f"{config_path}: " if config_path else ""
        raise UserError(f"{where}{'' if loc in overrides else loc + ': '}{err['msg']}{given}") from None
