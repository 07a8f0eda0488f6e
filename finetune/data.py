"""Readers for classification/regression tables: TSV, CSV and JSONL with named columns, and GLUE layouts.

Every problem with an input file is a ``UserError`` naming the file, the line (1-based, as an editor shows
it) and what was expected. GLUE's TSVs are read without quote handling (``csv.QUOTE_NONE``) because their
sentences contain bare quotes, as ``run_glue.py``'s original processors did.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from data_tools.errors import UserError

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class TaskLayout:
    """Where a task's text and label live, and what its labels are.

    Columns are names when the file has a header, else 0-based indices (CoLA has no header).
    """

    text_a: str | int = "sentence"
    text_b: str | int | None = None
    label: str | int = "label"
    labels: tuple[str, ...] | None = None  # None: inferred from the training file (sorted)
    regression: bool = False
    header: bool = True
    metric: str = "accuracy"  # the score that picks the best checkpoint


GLUE_TASKS: dict[str, TaskLayout] = {
    "sst2": TaskLayout("sentence", None, "label", ("0", "1")),
    "cola": TaskLayout(3, None, 1, ("0", "1"), header=False, metric="mcc"),
    "mnli": TaskLayout("sentence1", "sentence2", "gold_label", ("contradiction", "entailment", "neutral")),
    "rte": TaskLayout("sentence1", "sentence2", "label", ("entailment", "not_entailment")),
    "qnli": TaskLayout("question", "sentence", "label", ("entailment", "not_entailment")),
    "wnli": TaskLayout("sentence1", "sentence2", "label", ("0", "1")),
    "mrpc": TaskLayout("#1 String", "#2 String", "Quality", ("0", "1"), metric="f1"),
    "qqp": TaskLayout("question1", "question2", "is_duplicate", ("0", "1"), metric="f1"),
    "stsb": TaskLayout("sentence1", "sentence2", "score", None, regression=True, metric="pearson"),
}


@dataclass
class Examples:
    """Rows of one file: texts, labels as strings (classification) or floats (regression), source lines."""

    path: Path
    text_a: list[str] = field(default_factory=list)
    text_b: list[str] | None = None
    labels: list[str] | list[float] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.text_a)


def _fmt(col: str | int) -> str:
    return f"column {col}" if isinstance(col, int) else f"column {col!r}"


def _iter_rows(path: Path, fmt: str, header: bool):
    """Yield ``(line_number, row)``: a dict (header / JSONL) or a list (headerless)."""
    try:
        yield from _iter_rows_utf8(path, fmt, header)
    except UnicodeDecodeError:
        # The decoder works on blocks; find the line itself for the message.
        for lineno, raw in enumerate(path.read_bytes().splitlines(), start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"{path}:{lineno}: not UTF-8 text (byte {exc.start + 1} of the line); "
                                "expected a UTF-8 file") from None
        raise


def _iter_rows_utf8(path: Path, fmt: str, header: bool):
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file; expected a header line and at least one example")
    with open(path, encoding="utf-8-sig", newline="") as fh:  # -sig: a BOM from Excel is not a column name
        if fmt == "jsonl":
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{lineno}: invalid JSON ({exc.msg}); expected one object per line") from None
                if not isinstance(obj, dict):
                    raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                yield lineno, obj
            return
        if fmt == "tsv":
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(fh)
        names = None
        for row in reader:
            lineno = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if header and names is None:
                names = [c.strip() for c in row]
                continue
            if names is None:
                yield lineno, row
                continue
            if len(row) != len(names):
                raise UserError(f"{path}:{lineno}: expected {len(names)} {'tab' if fmt == 'tsv' else 'comma'}-"
                                f"separated fields (header: {', '.join(names)}), got {len(row)}")
            yield lineno, dict(zip(names, row))


def detect_format(path: Path) -> str:
    """``tsv``, ``csv`` or ``jsonl`` from the file name (``.txt`` is read as TSV)."""
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".txt"):
        return "tsv"
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    raise UserError(f"{path}: unknown file type {suffix!r}; expected .tsv, .csv or .jsonl")


def read_examples(path: str | Path, layout: TaskLayout, labels: list[str] | None = None) -> Examples:
    """Read one file of examples.

    Args:
        path: a .tsv/.csv/.jsonl file.
        layout: which columns hold the texts and the label.
        labels: the allowed labels (classification); a row with another label is an error. None: any.
    Returns:
        The examples, in file order.
    """
    path = Path(path)
    fmt = detect_format(path)
    header = layout.header or fmt == "jsonl"
    ex = Examples(path=path, text_b=[] if layout.text_b is not None else None)
    allowed = set(labels) if labels is not None else None
    cols = [c for c in (layout.text_a, layout.text_b, layout.label) if c is not None]
    for lineno, row in _iter_rows(path, fmt, header):
        for col in cols:
            present = col in row if isinstance(row, dict) else (isinstance(col, int) and col < len(row))
            if not present:
                hint = "set it with --text-a/--text-b/--label-column or --task"
                if isinstance(row, dict) and fmt != "jsonl":  # the header line is at fault, not this row
                    raise UserError(f"{path}:1: header has no {_fmt(col)} (columns: {', '.join(row)}); {hint}")
                have = ", ".join(map(str, row)) if isinstance(row, dict) else f"{len(row)} fields"
                raise UserError(f"{path}:{lineno}: missing {_fmt(col)} (have: {have}); {hint}")
        text_a = row[layout.text_a]
        if not isinstance(text_a, str) or not text_a.strip():
            raise UserError(f"{path}:{lineno}: {_fmt(layout.text_a)} is empty; expected text")
        raw = row[layout.label]
        if layout.regression:
            try:
                label: str | float = float(raw)
            except (TypeError, ValueError):
                raise UserError(f"{path}:{lineno}: {_fmt(layout.label)} is {raw!r}; expected a number") from None
        else:
            label = str(raw).strip()
            if allowed is not None and label not in allowed:
                raise UserError(f"{path}:{lineno}: label {label!r} is not in the label set "
                                f"{{{', '.join(sorted(allowed))}}}")
        ex.text_a.append(text_a)
        if ex.text_b is not None:
            ex.text_b.append(str(row[layout.text_b]))
        ex.labels.append(label)
        ex.lines.append(lineno)
    if not ex.text_a:
        raise UserError(f"{path}: no examples; expected a header line and at least one example row")
    return ex


def resolve_layout(task: str | None, text_a: str | None = None, text_b: str | None = None,
                   label_column: str | None = None, regression: bool | None = None,
                   labels: list[str] | None = None, metric: str | None = None) -> TaskLayout:
    """A ``TaskLayout`` from a GLUE task name and/or explicit column names (explicit ones win).

    Args:
        task: a GLUE task (``sst2``, ``cola``, ``mnli``, ``rte``, ``qnli``, ``wnli``, ``mrpc``, ``qqp``,
            ``stsb``) or None for a generic table (``sentence``/``label`` columns by default).
        text_a, text_b, label_column: column names overriding the task's.
        regression: predict a number instead of a class.
        labels: the label set, in id order.
        metric: the metric that selects the best checkpoint.
    Returns:
        The layout.
    """
    if task is None:
        base = TaskLayout()
    else:
        key = task.lower().replace("-", "")
        if key not in GLUE_TASKS:
            raise UserError(f"--task: unknown task {task!r}; expected one of {', '.join(GLUE_TASKS)}")
        base = GLUE_TASKS[key]
    kw = {}
    if text_a is not None:
        kw["text_a"] = text_a
    if text_b is not None:
        kw["text_b"] = text_b
    if label_column is not None:
        kw["label"] = label_column
    if regression is not None:
        kw["regression"] = regression
        if regression and metric is None:
            kw["metric"] = "pearson"
    if labels is not None:
        kw["labels"] = tuple(labels)
    if metric is not None:
        kw["metric"] = metric
    if any(isinstance(kw.get(k), str) for k in ("text_a", "text_b", "label")) and not base.header:
        kw["header"] = True  # named columns imply a header line
    return TaskLayout(**{**base.__dict__, **kw})
