"""Checkpoints carry data, not code: a pickle payload in a checkpoint file does not run on resume or export;
a damaged checkpoint falls back to the previous complete one (resume) or is named with what to do."""

from __future__ import annotations

import builtins

import pytest
import torch
from engine_kit import metrics, tiny_config
from process_kit import small_tmpfs

from data_tools.errors import UserError
from pretrain import checkpoint
from pretrain.__main__ import export
from pretrain.config import build_config
from pretrain.train import run

pytestmark = pytest.mark.usefixtures("single_process")


class _Payload:
    """Unpickling this runs ``exec(code)``: what a hostile checkpoint would carry."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return builtins.exec, (self.code,)


def _plant(path, marker):
    """Add a payload that creates ``marker`` to a checkpoint file (loaded here as our own, trusted file)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    state["note"] = _Payload(f"open({str(marker)!r}, 'w').close()")
    torch.save(state, path)


def _cfg(tmp_path, corpus, ds, **train):
    return build_config(tiny_config(tmp_path, corpus, ds, train={"train_steps": 4, "save_interval": 2, **train}))



@pytest.mark.slow
@pytest.mark.parametrize("ds", ["zero0_fp32.json", "zero2_fp32.json"])
def test_pickle_payload_does_not_run(tmp_path, corpus, ds):
    assert run(_cfg(tmp_path, corpus, ds, exit_interval=2)).step == 2
    run_dir, marker = tmp_path / "run", tmp_path / "pwned"
    tag_dir = run_dir / "checkpoints" / "step_2"
    # ZeRO 0 keeps the weights in the model-states file; ZeRO 2 in the optimizer shard export reads.
    victim = tag_dir / ("mp_rank_00_model_states.pt" if ds.startswith("zero0") else
                        "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    _plant(victim, marker)
    checkpoint.write_json(tag_dir / checkpoint.MANIFEST,  # sizes as if it had been saved like this
                          {"files": {p.name: p.stat().st_size for p in tag_dir.iterdir() if p.name != "manifest.json"}})
    with pytest.raises(UserError, match=r"refusing to load: it holds \S*exec.*--trust-checkpoint"):
        export(run_dir, tmp_path / "hf")
    assert not marker.exists()
    with pytest.raises(UserError, match=r"refusing to load: it holds \S*exec"):
        run(_cfg(tmp_path, corpus, ds))
    assert not marker.exists()
    # The payload is real: trusting the file runs it.
    export(run_dir, tmp_path / "hf", trust_checkpoint=True)
    assert marker.exists()


@pytest.mark.slow
def test_damaged_latest_falls_back_to_previous_checkpoint(tmp_path, corpus):
    straight = run(build_config(tiny_config(tmp_path, corpus, train={"train_steps": 6, "save_interval": 2,
                                                                     "output_dir": str(tmp_path / "straight")})))
    first = run(_cfg(tmp_path, corpus, "zero2_fp32.json", train_steps=6, exit_interval=4))
    assert first.step == 4 and checkpoint.read_latest(first.run_dir) == "step_4"
    model_file = first.run_dir / "checkpoints" / "step_4" / "mp_rank_00_model_states.pt"
    model_file.write_bytes(model_file.read_bytes()[:1000])  # truncated, as by a full disk or a bad copy
    # An explicit tag: one line naming the damage and the older checkpoint to use.
    cfg = _cfg(tmp_path, corpus, "zero2_fp32.json", train_steps=6, resume="step_4")
    with pytest.raises(UserError, match=r"checkpoint step_4 is damaged .*truncated.*--train.resume step_2"):
        run(cfg)
    # latest: falls back to step_2 and still matches the uninterrupted run.
    resumed = run(_cfg(tmp_path, corpus, "zero2_fp32.json", train_steps=6))
    assert resumed.step == 6
    assert [r["step"] for r in metrics(resumed.run_dir)] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in metrics(resumed.run_dir)] == [r["loss"] for r in metrics(straight.run_dir)]
    (first.run_dir / "checkpoints" / "step_6" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(UserError, match=r"checkpoint step_6 is damaged .*optim_states.pt: missing.*--step 4"):
        export(first.run_dir, tmp_path / "hf")


@pytest.mark.slow
def test_disk_full_during_checkpoint_save_is_one_line(tmp_path, corpus):
    with small_tmpfs(tmp_path, "256k") as mnt:
        cfg = build_config(tiny_config(tmp_path, corpus, train={"train_steps": 2, "save_interval": 1,
                                                                 "output_dir": str(mnt / "run")}))
        with pytest.raises(UserError, match=rf"no space left on {mnt} while writing checkpoint .*step_1"):
            run(cfg)
        assert checkpoint.read_latest(mnt / "run") is None
