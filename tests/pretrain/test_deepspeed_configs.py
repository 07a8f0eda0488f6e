"""The shipped DeepSpeed configs: each passes DeepSpeed's own schema and our cross-checks; typos are caught.

(Each CPU-runnable one is also trained for a few steps in test_engine.py.)"""

from __future__ import annotations

import json

import pytest
from engine_kit import CONFIGS

from data_tools.errors import UserError
from pretrain.config import load_json
from pretrain.engine import validate_deepspeed

ALL = sorted(CONFIGS.glob("*.json"))


def test_the_documented_set_is_shipped():
    names = {p.name for p in ALL}
    for stage in range(4):
        assert any(n.startswith(f"zero{stage}_") for n in names), stage
    assert {"zero2_fp16.json", "zero2_bf16.json", "zero2_fp32.json", "zero2_offload.json", "zero3_offload.json",
            "cpu.json"} <= names


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_config_is_valid(path):
    ds = load_json(path)
    stage = int(path.name[4]) if path.name.startswith("zero") else ds["zero_optimization"]["stage"]
    assert ds["zero_optimization"]["stage"] == stage
    # Batch sizes and clipping come from the run config; the files leave them to it.
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert ds.get(key, "auto") == "auto", key
    if "fp16" in path.name:
        fp16 = ds["fp16"]
        assert fp16["enabled"] and fp16["loss_scale"] == 0  # dynamic loss scaling
        for knob in ("initial_scale_power", "loss_scale_window", "hysteresis", "min_loss_scale"):
            assert knob in fp16, knob
        ds = {**ds, "fp16": {**fp16, "enabled": False}}  # checked below without needing a GPU
    if "bf16" in path.name:
        assert ds["bf16"]["enabled"]
    if "offload" in path.name:
        assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
        if stage == 3:
            assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    validate_deepspeed(ds, str(path))


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"zero_optimisation": {"stage": 2}}, "unknown DeepSpeed key 'zero_optimisation'"),
        ({"zero_optimization": {"stage": 2, "overlap_com": True}}, "zero_optimization.overlap_com"),
        ({"zero_optimization": {"stage": 5}}, "zero_optimization.stage"),
        ({"fp16": {"enabled": True, "loss_scale": -1}}, "fp16.loss_scale"),
        ({"bf16": "yes"}, "bf16: expected an object"),
    ],
)
def test_bad_deepspeed_config_names_the_key(tmp_path, change, needle):
    with pytest.raises(UserError) as err:
        validate_deepspeed(change, str(tmp_path / "ds.json"))
    assert needle in str(err.value) and "ds.json" in str(err.value)


def test_duplicate_key_in_deepspeed_json(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text('{"zero_optimization": {"stage": 2}, "zero_optimization": {"stage": 3}}')
    with pytest.raises(UserError, match="duplicate key 'zero_optimization'"):
        load_json(path)
    json.loads(path.read_text())  # plain json would silently keep the last one


def test_build_ops_compiles_into_the_extension_cache(capsys):
    # `make test` runs this before the DeepSpeed tests; they then find both ops built. Called twice: the
    # second call is a cache hit, the same load every training run does.
    import os
    from pathlib import Path

    from pretrain.__main__ import main

    main(["build-ops"])
    out = [line for line in capsys.readouterr().out.splitlines() if ": ready (" in line]  # DeepSpeed logs too
    assert [line.split(":")[0] for line in out] == ["deepspeed_shm_comm", "cpu_adam"]
    cache = Path(os.environ["TORCH_EXTENSIONS_DIR"])
    built = {p: p.stat().st_mtime_ns for name in ("deepspeed_shm_comm", "cpu_adam")
             for p in cache.glob(f"{name}/{name}*.so")}
    assert len(built) == 2, sorted(built)
    from pretrain.engine import build_ops

    assert [name for name, _ in build_ops()] == ["deepspeed_shm_comm", "cpu_adam"]
    assert {p: p.stat().st_mtime_ns for p in built} == built  # found in the cache, not rebuilt
