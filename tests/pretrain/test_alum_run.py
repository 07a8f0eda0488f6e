"""A pre-training run shows ALUM's diagnostics at every log interval (metrics.jsonl and TensorBoard's alum/ tags),
records the resolved variant in config.json, and warns once when the perturbation is not adversarial."""

from __future__ import annotations

import json

import pytest
from engine_kit import metrics, tiny_config, tiny_corpus

from pretrain.config import build_config
from pretrain.train import run

pytestmark = pytest.mark.usefixtures("single_process")


@pytest.mark.slow
def test_run_logs_alum_diagnostics_and_warns_once(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    corpus = tiny_corpus(str(tmp_path / "corpus"))
    raw = tiny_config(tmp_path, corpus, alum={"enabled": True, "variant": "authors", "gain_interval": 2},
                      model={"dropout": 0.1}, train={"train_steps": 7, "save_interval": 0, "global_batch": 4})
    result = run(build_config(raw))
    rows = metrics(result.run_dir)
    assert [r["step"] for r in rows] == list(range(1, 8))
    for r in rows:
        assert {"delta_ratio", "ascent_gain", "delta_cos_init", "adv_share", "ascent_overflows"} <= set(r)
        assert (r["ascent_gain"] is None) == (r["step"] % 2 == 0)  # measured on ALUM steps 1, 3, 5, 7
        assert r["delta_cos_init"] > 0.9 and 0 < r["adv_share"] < 1  # authors: δ stays at its random init
    err = capsys.readouterr().err
    assert sum("not adversarial" in line for line in err.splitlines()) == 1
    resolved = json.loads((result.run_dir / "config.json").read_text())["alum"]
    assert (resolved["variant"], resolved["norm"], resolved["units"], resolved["embed_grad"]) == \
        ("authors", "token_linf", "absolute", False)
    acc = EventAccumulator(str(result.run_dir / "tensorboard")).Reload()
    tags = set(acc.Tags()["scalars"])
    assert {f"alum/{k}" for k in ("delta_ratio", "ascent_gain", "delta_cos_init", "adv_share",
                                  "ascent_overflows")} <= tags
    assert [e.step for e in acc.Scalars("alum/ascent_gain")] == [1, 3, 5, 7]
