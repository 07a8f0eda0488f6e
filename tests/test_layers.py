"""Imports flow one way: experiments → demo → finetune → pretrain → data_tools, and data_tools stays light."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["data_tools", "pretrain", "finetune", "demo", "experiments"]
# Corpus building must not pay for (or depend on) the training stack.
HEAVY = {"data_tools": {"torch", "deepspeed", "transformers"}}
# The only package files that import DeepSpeed: the engine (process group join, config checks, pre-training and
# fine-tuning engines, the ZeRO-3 gather), checkpoint save/load, and the universal-checkpoint resume.
DEEPSPEED_USERS = {"pretrain/engine.py", "pretrain/checkpoint.py", "pretrain/elastic.py"}


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


def _deepspeed_importers() -> set[str]:
    return {
        f.relative_to(ROOT).as_posix()
        for package in ORDER if (ROOT / package).is_dir()
        for f in sorted((ROOT / package).rglob("*.py"))
        if "deepspeed" in _imported_roots(f)
    }


def test_only_the_engine_checkpoint_and_elastic_import_deepspeed():
    assert _deepspeed_importers() == DEEPSPEED_USERS


def test_the_check_sees_a_deepspeed_import(tmp_path):
    for line in ("import deepspeed", "import deepspeed.comm as dc",
                 "def f():\n    from deepspeed.zero import GatheredParameters\n"):
        bad = tmp_path / "x.py"
        bad.write_text(line + "\n")
        assert "deepspeed" in _imported_roots(bad), line
