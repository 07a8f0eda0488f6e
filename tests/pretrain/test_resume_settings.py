"""A resumed run compares its settings with the checkpoint's: fixed ones refused, others applied and recorded."""

from __future__ import annotations

import json

import pytest
from engine_kit import metrics, tiny_config

from data_tools.errors import UserError
from pretrain import checkpoint
from pretrain.config import build_config, load_config
from pretrain.engine import lr_lambda
from pretrain.resume_settings import compare
from pretrain.train import run

pytestmark = pytest.mark.usefixtures("single_process")


def _cfg(tmp_path, corpus, **sections):
    return build_config(tiny_config(tmp_path, corpus, **sections))


@pytest.mark.parametrize("section, key, value", [
    ("model", "hidden_size", 64), ("data", "max_seq_len", 48), ("train", "seed", 7), ("train", "global_batch", 16),
    ("optim", "weight_decay", 0.5), ("alum", "enabled", True), ("data", "mask_prob", 0.3),
])
def test_fixed_settings_are_refused(tmp_path, corpus, section, key, value):
    old = json.loads(json.dumps(_cfg(tmp_path, corpus).model_dump(mode="json")))
    new = _cfg(tmp_path, corpus, **{section: {key: value}})
    with pytest.raises(UserError, match=rf"{section}\.{key} .* cannot change in a resumed run"):
        compare(old, new)


def test_schedule_and_intervals_may_change(tmp_path, corpus):
    old = _cfg(tmp_path, corpus).model_dump(mode="json")
    new = _cfg(tmp_path, corpus, optim={"lr": 1e-3, "min_lr": 1e-4}, train={"train_steps": 9, "save_interval": 1,
                                                                           "output_dir": str(tmp_path / "moved")})
    assert compare(old, new) == {"optim.lr": [3e-3, 1e-3], "optim.min_lr": [0.0, 1e-4],
                                 "train.save_interval": [3, 1], "train.train_steps": [6, 9]}


def test_positions_shorter_than_samples_are_refused(tmp_path, corpus):
    with pytest.raises(UserError, match=r"model.max_position_embeddings: 16 positions cannot hold samples of "
                                        r"data.max_seq_len=32"):
        _cfg(tmp_path, corpus, model={"max_position_embeddings": 16})


def test_override_errors_name_the_command_line(tmp_path, corpus):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(tiny_config(tmp_path, corpus)))
    with pytest.raises(UserError, match=r"^command line --optim.lr: .*greater than 0"):
        load_config(path, ["--optim.lr", "-1"])
    with pytest.raises(UserError, match=r"command line --optim.lr: .*finite"):
        load_config(path, ["--optim.lr", "NaN"])


@pytest.mark.slow
def test_resume_applies_allowed_changes_and_keeps_the_record(tmp_path, corpus):
    first = _cfg(tmp_path, corpus, train={"exit_interval": 3})
    assert run(first).step == 3
    run_dir = tmp_path / "run"
    started = (run_dir / "config.json").read_text()
    # A fixed setting: one line, nothing written (the metrics of steps 1-3 stay, latest stays).
    with pytest.raises(UserError, match=r"train\.seed 1234 -> 7: cannot change"):
        run(_cfg(tmp_path, corpus, train={"seed": 7}))
    with pytest.raises(UserError, match=r"train\.train_steps: the run would end at step 2, but checkpoint step_3"):
        run(_cfg(tmp_path, corpus, train={"train_steps": 2}))
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3] and checkpoint.read_latest(run_dir) == "step_3"
    # Allowed: a new peak LR and a longer run, applied from step 4 on.
    changed = _cfg(tmp_path, corpus, optim={"lr": 1e-3}, train={"train_steps": 8})
    assert run(changed).step == 8
    assert (run_dir / "config.json").read_text() == started
    history = [json.loads(x) for x in (run_dir / "config_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [3]
    assert history[0]["changes"] == {"optim.lr": [3e-3, 1e-3], "train.exit_interval": [3, None],
                                     "train.train_steps": [6, 8]}
    rows = {r["step"]: r["lr"] for r in metrics(run_dir)}
    fn_old, fn_new = lr_lambda(first), lr_lambda(changed)
    # The logged rate of step s is the scheduler's after s steps: peak × multiplier(s), old schedule then new.
    assert all(rows[s] == pytest.approx(3e-3 * fn_old(s), rel=1e-6) for s in (1, 2, 3))
    assert all(rows[s] == pytest.approx(1e-3 * fn_new(s), rel=1e-6) for s in range(4, 9))
    saved = json.loads((run_dir / "checkpoints" / "step_8" / "run_config.json").read_text())
    assert saved["optim"]["lr"] == 1e-3 and saved["train"]["train_steps"] == 8
