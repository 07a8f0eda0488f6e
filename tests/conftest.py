"""Shared test defaults: keep DeepSpeed's compiled ops in the repo cache, tokenizers single-threaded, no hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def wiki_dump() -> Path:
    """Path of the real Wikipedia XML dump (.bz2) shipped inside gensim's wheel."""
    from data_tools.wheel_data import wiki_dump_path

    return wiki_dump_path()
