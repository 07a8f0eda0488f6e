"""classify under DeepSpeed: two ranks launched by torchrun, ZeRO-3 (weights gathered for saving), ALUM on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from data_tools.errors import UserError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiproc
def test_two_ranks_zero3_alum(bbc, tiny_bert, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    data = tmp_path / "d.tsv"
    data.write_text("".join((bbc / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)[:41]),
                    encoding="utf-8")
    out = tmp_path / "run"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "finetune", "classify", "--model", str(tiny_bert), "--train", str(data), "--dev", str(data),
           "-o", str(out), "--epochs", "2", "--batch-size", "8", "--threads", "1", "--lr", "1e-3", "--alum",
           "--max-seq-len", "32", "--deepspeed", os.path.join(root, "deepspeed_configs", "zero3_fp32.json")]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("done: best accuracy=") == 1  # one summary per job
    metrics = json.loads((out / "metrics.json").read_text())
    # 40 rows / batch 8 = 5 batches -> 2 rounds of 2 ranks per epoch; one step = one batch on each rank.
    assert metrics["train_steps"] == 4 and metrics["train_samples"] == 64 and metrics["alum"]["enabled"]
    model = AutoModelForSequenceClassification.from_pretrained(str(out / "final"))
    saved = load_file(str(out / "final" / "model.safetensors"))
    assert saved["bert.embeddings.word_embeddings.weight"].shape == (model.config.vocab_size, 64)
    initial = load_file(str(tiny_bert / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(saved[key], initial[key])  # gathered, trained weights (not a ZeRO-3 placeholder)


@pytest.mark.parametrize("text, message", [
    ('{"fp16": {}, "fp16": {}}', "duplicate key 'fp16'"),
    ('{"zero_optimisation": {"stage": 2}}', "unknown DeepSpeed key 'zero_optimisation'"),
    ('{"optimizer": {}}', "'optimizer' section not allowed"),
    ('{"fp16": true}', "fp16: expected an object, got True"),  # was an AttributeError traceback
    ('{"train_batch_size": 3}', r"train_batch_size=3 contradicts the run config \(--batch-size × world size gives 16\)"),
])
def test_the_json_is_checked_as_pretraining_checks_it(tmp_path, text, message):
    # --deepspeed goes through pretrain.engine: the same reader and DeepSpeed schema checks as pre-training.
    from pretrain.engine import finetune_deepspeed_dict

    path = tmp_path / "ds.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as err:
        finetune_deepspeed_dict(path, batch_size=8, clip_grad=1.0, world_size=2)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
