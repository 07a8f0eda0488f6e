"""Helpers for finetune tests (importable by name: the test directories have no __init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def write_subset(src: Path, dst: Path, n: int) -> Path:
    """The header and the first ``n`` rows of a TSV."""
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    dst.write_text("".join(lines[: n + 1]), encoding="utf-8")
    return dst


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m finetune ARGS`` in a subprocess (what a user types)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "finetune", *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def cli(*args: str) -> tuple[int, str, str]:
    """Run ``python -m finetune ARGS`` in this process (same parser and ``run_cli`` wrapper, no interpreter
    start-up); returns ``(exit code, stdout, stderr)``."""
    import contextlib
    import io

    from data_tools.errors import run_cli as wrap
    from finetune.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            wrap(lambda: main(list(args)))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def options(command: str, *args: str):
    """The validated options ``python -m finetune COMMAND ARGS`` would run with (nothing else is run)."""
    from finetune.__main__ import build_parser
    from finetune.flags import options_from

    parsed, rest = build_parser().parse_known_args([command, *args])
    return options_from(parsed.options, parsed, rest)
