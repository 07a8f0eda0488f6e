"""Shared test defaults: keep DeepSpeed's compiled ops in the repo cache, tokenizers single-threaded, no hub."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def wiki_dump() -> Path:
    """Path of the real Wikipedia XML dump (.bz2) shipped inside gensim's wheel."""
    from data_tools.samples_data import wiki_dump_path

    return wiki_dump_path()

# torch's JIT (DeepSpeed ops) runs the first `ninja` on PATH. The venv's ninja (1.13) and a system one (1.11)
# hash build commands differently, so processes alternating between them rebuild the ops every time (~90 s
# each): put the venv's bin first for this process and every launcher it starts.
_VENV_BIN = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _VENV_BIN:
    os.environ["PATH"] = os.pathsep.join([_VENV_BIN, os.environ.get("PATH", "")])
