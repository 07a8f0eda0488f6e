"""Imports flow one way: experiments → demo → finetune → pretrain → data_tools, and data_tools stays light."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["data_tools", "pretrain", "finetune", "demo", "experiments"]
# Corpus building must not pay for (or depend on) the training stack.
HEAVY = {"data_tools": {"torch", "deepspeed", "transformers"}}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", [p for p in ORDER if (ROOT / p).is_dir()])
def test_imports_never_run_backwards(package):
    forbidden = set(ORDER[ORDER.index(package) + 1 :]) | HEAVY.get(package, set())
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offenders = {
        f"{f.relative_to(ROOT)} imports {name}" for f in files for name in _imported_roots(f) & forbidden
    }
    assert not offenders, sorted(offenders)


def test_the_check_sees_a_backwards_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import os\nfrom pretrain.model import build_model\n")
    assert "pretrain" in _imported_roots(bad)
