"""The trainer in-process (world size 1): every CPU-runnable DeepSpeed config, exact resume, export, logs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from engine_kit import CONFIGS, metrics, single_process_env, tiny_config

from data_tools.errors import UserError
from data_tools.tokenizer import load_tokenizer
from pretrain import checkpoint
from pretrain.config import build_config
from pretrain.train import build_export_model, run

ALL_CONFIGS = sorted(p.name for p in CONFIGS.glob("*.json"))
CPU_CONFIGS = [c for c in ALL_CONFIGS if "fp16" not in c]


pytestmark = pytest.mark.usefixtures("single_process")


def _train(tmp_path, corpus, name="run", ds="zero2_fp32.json", **sections):
    raw = tiny_config(tmp_path, corpus, ds, **sections)
    raw["train"]["output_dir"] = str(tmp_path / name)
    return run(build_config(raw))


@pytest.mark.slow
@pytest.mark.parametrize("ds_config", CPU_CONFIGS)
def test_every_cpu_deepspeed_config_trains(tmp_path, corpus, ds_config):
    optim = {"name": "cpu_adam"} if "offload" in ds_config else {}
    # ALUM on: its inner autograd.grad must work under every ZeRO stage, bf16 and offload.
    result = _train(tmp_path, corpus, ds=ds_config, optim=optim, alum={"enabled": True},
                    train={"train_steps": 3, "save_interval": 0})
    rows = metrics(result.run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["loss"] > r["mlm_loss"] > 0 and r["adv_loss"] > 0 for r in rows)
    assert checkpoint.read_latest(result.run_dir) == "step_3"
    # The checkpoint consolidates (ZeRO shards → fp32) into exactly the model's parameters.
    state = checkpoint.consolidated_state_dict(result.run_dir, "step_3")
    cfg = build_config(json.loads((result.run_dir / "config.json").read_text()))
    model = build_export_model(cfg, load_tokenizer(corpus[1]))
    model.load_state_dict(state, strict=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_a_second_run_after_shutdown_in_the_same_process(tmp_path, corpus):
    # A notebook or a sweep: train, tear the process group down as `python -m pretrain` does, train again.
    # DeepSpeed caches its groups in module globals; a teardown that bypasses deepspeed.comm left them
    # pointing at the destroyed group and the second deepspeed.initialize failed ("Group ... is not registered").
    from pretrain.dist import shutdown_distributed

    first = _train(tmp_path, corpus, "first", train={"train_steps": 1, "save_interval": 0})
    shutdown_distributed()
    assert not torch.distributed.is_initialized()
    single_process_env()  # a fresh MASTER_PORT: the first run's rendezvous store may still hold its port
    second = _train(tmp_path, corpus, "second", train={"train_steps": 1, "save_interval": 0})
    assert first.step == second.step == 1 and metrics(second.run_dir)[0]["step"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 configs run on a GPU there")
@pytest.mark.parametrize("ds_config", [c for c in ALL_CONFIGS if "fp16" in c])
def test_fp16_configs_refused_on_cpu(tmp_path, corpus, ds_config):
    with pytest.raises(UserError, match="fp16.enabled needs a CUDA device"):
        _train(tmp_path, corpus, ds=ds_config)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_exact_resume(tmp_path, corpus):
    # ALUM on and dropout on: the resumed steps must redraw exactly the same noise and dropout masks.
    opts = dict(alum={"enabled": True}, model={"dropout": 0.1}, train={"train_steps": 6, "save_interval": 2})
    straight = _train(tmp_path, corpus, "straight", **opts)
    first = _train(tmp_path, corpus, "resumed", **{**opts, "train": {**opts["train"], "exit_interval": 3}})
    assert first.step == 3 and checkpoint.read_latest(first.run_dir) == "step_3"
    resumed = _train(tmp_path, corpus, "resumed", **opts)
    assert resumed.step == 6
    a, b = metrics(straight.run_dir), metrics(resumed.run_dir)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert all(r["adv_loss"] > 0 for r in b)
    wa = checkpoint.consolidated_state_dict(straight.run_dir, "step_6")
    wb = checkpoint.consolidated_state_dict(resumed.run_dir, "step_6")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # keep_last=3 (default) with saves at 2, 3 (exit), 4, 6: the oldest was removed.
    assert sorted(p.name for p in checkpoint.complete_tags(resumed.run_dir)) == ["step_3", "step_4", "step_6"]


@pytest.mark.slow
def test_export_logits_and_logs(tmp_path, corpus):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from pretrain.__main__ import export

    result = _train(tmp_path, corpus, alum={"enabled": True}, train={"train_steps": 4, "eval_interval": 2})
    out = export(result.run_dir, tmp_path / "hf")
    hf = AutoModelForMaskedLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tok("the government said the economy grew")["input_ids"]])
    ours = result.model.to_hf().eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, ours(input_ids=ids).logits, atol=1e-5, rtol=0)

    evals = [r for r in map(json.loads, (result.run_dir / "metrics.jsonl").read_text().splitlines())
             if "eval_mlm_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(math.isclose(r["eval_perplexity"], math.exp(r["eval_mlm_loss"])) for r in evals)
    acc = EventAccumulator(str(result.run_dir / "tensorboard")).Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/mlm_loss", "train/adv_loss", "train/ascent_overflows", "train/lr",
                "train/loss_scale", "train/grad_norm", "perf/samples_per_sec", "perf/tokens_per_sec", "perf/mfu",
                "eval/mlm_loss", "eval/perplexity", "eval/accuracy"):
        assert tag in tags, tag
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
    resolved = json.loads((result.run_dir / "config.json").read_text())
    assert resolved["alum"]["enabled"] is True and resolved["train"]["train_steps"] == 4


@pytest.mark.slow
def test_init_from_hf_dir_and_blended_corpora(tmp_path, corpus):
    import shutil

    from pretrain.__main__ import export

    first = _train(tmp_path, corpus, "first", train={"train_steps": 6, "save_interval": 0})
    hf_dir = export(first.run_dir, tmp_path / "hf")
    # A second corpus prefix (a copy) blended 3:1 with the first; the model continues from the export.
    for suffix in (".bin", ".idx", ".meta.json"):
        shutil.copy(corpus[0] + suffix, str(tmp_path / "copy") + suffix)
    again = _train(tmp_path, corpus, "again", model={"init_from": str(hf_dir)},
                   data={"prefixes": [corpus[0], str(tmp_path / "copy")], "weights": [3.0, 1.0]},
                   train={"train_steps": 2, "save_interval": 0})
    scratch = metrics(first.run_dir)
    continued = metrics(again.run_dir)
    # Continued pre-training starts where the first run ended, not at a fresh model's loss.
    assert continued[0]["mlm_loss"] < scratch[0]["mlm_loss"] - 0.05
    assert json.loads((again.run_dir / "config.json").read_text())["data"]["weights"] == [3.0, 1.0]


def test_export_errors(tmp_path, corpus):
    from pretrain.__main__ import export

    with pytest.raises(UserError, match="not a run directory"):
        export(tmp_path, tmp_path / "hf")
    (tmp_path / "config.json").write_text(json.dumps(tiny_config(tmp_path, corpus)))
    with pytest.raises(UserError, match="no complete checkpoint"):
        export(tmp_path, tmp_path / "hf")
    (tmp_path / "checkpoints" / "step_2").mkdir(parents=True)
    with pytest.raises(UserError, match=r"no checkpoint for step 5 \(have: none\)"):
        export(tmp_path, tmp_path / "hf", step=5)
