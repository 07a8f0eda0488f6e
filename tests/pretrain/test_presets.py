"""The run-config presets in configs/: each loads, validates, agrees with its DeepSpeed JSON at 1, 2 and 8 ranks,
keeps the settings configs/README.md cites, and the tiny CPU one trains."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from engine_kit import ROOT, child_env, free_port, metrics, run_cli, tiny_corpus

from pretrain import checkpoint
from pretrain.config import deepspeed_dict, load_config, load_json
from pretrain.engine import validate_deepspeed

PRESETS = sorted((ROOT / "configs").glob("*.json"))

# What configs/README.md cites for each preset (BERT A.2; ALUM §4 and alum/alum_train.sh): sequence length,
# global batch, steps, peak lr, warmup steps, Adam β2, clipping.
CITED = {
    "bert-base": (512, 256, 1_000_000, 1e-4, 10_000, 0.999, 1.0),
    "bert-large": (512, 256, 1_000_000, 1e-4, 10_000, 0.999, 1.0),
    "roberta-base-continual": (512, 256, 100_000, 4e-5, 10_000, 0.98, 0.0),
}
SHAPES = {"bert-base": (768, 12, 12), "bert-large": (1024, 24, 16)}


def test_the_documented_presets_are_shipped():
    assert {p.stem for p in PRESETS} == {*CITED, "tiny-cpu"}
    readme = (ROOT / "configs" / "README.md").read_text(encoding="utf-8")
    assert all(f"`{p.name}`" in readme for p in PRESETS)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_validates_with_its_deepspeed_json(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # presets name paths relative to the repository root
    cfg = load_config(path)
    assert Path(cfg.train.deepspeed_config).is_file()
    for world in (1, 2) if path.stem == "tiny-cpu" else (1, 2, 8):
        ds = deepspeed_dict(cfg, world)
        assert ds["train_batch_size"] == cfg.train.global_batch
        assert ds["train_micro_batch_size_per_gpu"] * world * ds["gradient_accumulation_steps"] == cfg.train.global_batch
        assert ds["gradient_clipping"] == cfg.optim.clip_grad
        if ds.get("fp16", {}).get("enabled"):  # validated without a GPU, as test_deepspeed_configs does
            ds = {**ds, "fp16": {**ds["fp16"], "enabled": False}}
        validate_deepspeed(ds, cfg.train.deepspeed_config)
    assert cfg.alum.enabled and cfg.alum.alpha == 10.0 and cfg.alum.steps == 1
    if path.stem in CITED:
        got = (cfg.data.max_seq_len, cfg.train.global_batch, cfg.total_steps(), cfg.optim.lr, cfg.warmup_steps(),
               cfg.optim.betas[1], cfg.optim.clip_grad)
        assert got == CITED[path.stem]
        assert load_json(cfg.train.deepspeed_config)["fp16"]["enabled"]  # the authors trained with --fp16
    if path.stem in SHAPES:
        assert (cfg.model.hidden_size, cfg.model.num_layers, cfg.model.num_heads) == SHAPES[path.stem]


def test_overrides_apply_on_top_of_a_preset(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(ROOT / "configs" / "bert-base.json", ["--train.micro_batch", "16", "--alum.alpha=1"])
    assert (cfg.train.micro_batch, cfg.alum.alpha, cfg.train.global_batch) == (16, 1.0, 256)


@pytest.mark.slow
def test_tiny_cpu_preset_trains(tmp_path, tmp_path_factory):
    prefix, tok = tiny_corpus(str(tmp_path_factory.mktemp("corpus")))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "pretrain", "train", "--config", "configs/tiny-cpu.json",
           "--data.prefixes", json.dumps([prefix]), "--data.tokenizer", tok, "--data.eval_samples", "16",
           "--train.output_dir", str(run_dir), "--train.train_steps", "4", "--train.log_interval", "1",
           "--train.save_interval", "4", "--train.eval_interval", "4"]
    proc = run_cli(cmd, env=child_env(MASTER_PORT=str(free_port())), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["adv_loss"] > 0 for r in rows)  # the preset trains with ALUM on
    assert checkpoint.read_latest(run_dir) == "step_4"
    assert json.loads((run_dir / "config.json").read_text())["model"]["hidden_size"] == 64
    assert "final step 4: eval" in proc.stdout
