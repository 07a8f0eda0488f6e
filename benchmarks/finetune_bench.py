"""What the BBC News fine-tuning benchmarks (``bench_finetune.py``, ``alum_finetune_bbc.py``) share: the dev
rows the attack runs on and the mean ± std over seeds they report.

Scripts run as ``python benchmarks/<name>.py``, so this module imports as ``finetune_bench``.
"""

from __future__ import annotations

import statistics
from pathlib import Path


def write_attack_rows(dev: Path, out: Path, examples: int) -> Path:
    """The header and the first ``examples`` rows of the dev TSV ``dev``, written to ``out``: the attack is
    slow, so it runs on a prefix of the dev split."""
    lines = dev.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[: examples + 1]), encoding="utf-8")
    return out


def mean_std(xs: list[float]) -> str:
    """``mean ± std`` to 4 places (std 0 for a single value)."""
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.4f}"
