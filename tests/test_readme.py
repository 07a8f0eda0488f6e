"""The README cannot drift: its config references are the generated ones, and every subcommand has an example."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

from finetune import flags as finetune_flags
from pretrain import config_docs

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


# Each module holds START, END and reference_markdown() of one generated README block.
REFERENCES = {"pretrain": config_docs, "finetune": finetune_flags}


@pytest.mark.parametrize("package", REFERENCES)
def test_config_reference_is_current(package):
    ref = REFERENCES[package]
    block = README[README.index(ref.START): README.index(ref.END) + len(ref.END)]
    assert block == ref.reference_markdown(), f"run: python -m {package} config-reference --update-readme README.md"


@pytest.mark.parametrize("package", REFERENCES)
def test_every_config_key_is_documented(package):
    rows = [line for line in REFERENCES[package].reference_markdown().splitlines() if line.startswith("| `")]
    undocumented = [row.split("|")[1].strip() for row in rows if not row.rstrip(" |").split("|")[-1].strip()]
    assert rows and not undocumented


def _subcommands(package: str) -> list[str]:
    main = importlib.import_module(f"{package}.__main__")
    parser = main.build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


@pytest.mark.parametrize("package", ["data_tools", "pretrain", "finetune", "experiments"])
def test_every_subcommand_has_a_readme_example(package):
    missing = [c for c in _subcommands(package) if f"python -m {package} {c}" not in README]
    assert not missing
