"""data_tools stays light: no torch, deepspeed or transformers, even after every command module is imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_heavy_imports():
    code = (
        "import sys, data_tools.__main__, data_tools.build, data_tools.extract, data_tools.merge, "
        "data_tools.inspect, data_tools.verify, data_tools.demo, data_tools.indexed, data_tools.tokenizer; "
        "bad = [m for m in ('torch', 'deepspeed', 'transformers') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
