"""The GPU check end to end (``scripts/gpu_check.sh``): runs only where CUDA is available (``pytest -m gpu``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@pytest.mark.slow
@needs_cuda
def test_gpu_check_fp16_bf16_alum(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--steps", "20", "--workdir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert all(result["checks"].values()), result["checks"]
    for prec in ("fp16", "bf16"):
        assert result[f"alum_over_plain_{prec}"] > 1.0  # ALUM does extra forward/backward passes
    assert proc.stdout.strip().splitlines()[-1].startswith("ok=1 ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_gpu_check_without_cuda_is_one_line() -> None:
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: gpu_check: no CUDA device")
