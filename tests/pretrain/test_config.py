"""Run config: strict keys, types, duplicate keys, overrides, DeepSpeed JSON cross-checks, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_kit import CONFIGS, child_env, run_cli, tiny_config, write_config

from data_tools.errors import UserError
from pretrain.config import apply_overrides, build_config, deepspeed_dict, load_config


def test_valid_config_resolves_derived_values(tmp_path, corpus):
    cfg = build_config(tiny_config(tmp_path, corpus, train={"train_steps": None, "train_tokens": 32 * 8 * 10}))
    assert cfg.total_steps() == 10
    assert cfg.grad_accum(world_size=1) == 2 and cfg.grad_accum(world_size=2) == 1
    assert cfg.alum.alpha == 10.0 and cfg.alum.steps == 1  # the paper's pre-training defaults


@pytest.mark.parametrize(
    "section, values, needle",
    [
        ("train", {"micro_batchs": 4}, "unknown key 'train.micro_batchs'"),
        ("train", {"micro_batch": "four"}, "train.micro_batch"),
        ("alum", {"norm": "linf2"}, "alum.norm"),
        ("train", {"global_batch": 6}, "train.global_batch: 6 is not a multiple of train.micro_batch=4"),
        ("train", {"train_tokens": 100}, "exactly one of them"),
        ("data", {"weights": [1.0, 2.0]}, "data.weights: expected one weight per prefix (1), got 2"),
        ("model", {"hidden_size": 33}, "model.hidden_size: 33 is not divisible by model.num_heads=2"),
        ("model", {"arch": "roberta"}, "model.arch: 'roberta' has a single token type"),
    ],
)
def test_bad_values_name_the_key(tmp_path, corpus, section, values, needle):
    with pytest.raises(UserError) as err:
        build_config(tiny_config(tmp_path, corpus, **{section: values}), "run.json")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_duplicate_json_key_rejected(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"train": {"seed": 1, "seed": 2}}')
    with pytest.raises(UserError, match="duplicate key 'seed'"):
        load_config(path)
    path.write_text('{"train": {"seed": 1,}}')
    with pytest.raises(UserError, match=r"run.json:1:\d+: invalid JSON"):
        load_config(path)
    with pytest.raises(UserError, match=f"^{tmp_path / 'none.json'}: config file not found$"):
        load_config(tmp_path / "none.json")
    with pytest.raises(UserError, match=f"^{tmp_path}: is a directory, expected a JSON file$"):
        load_config(tmp_path)


def test_overrides(tmp_path, corpus):
    path = write_config(tmp_path / "run.json", tiny_config(tmp_path, corpus))
    cfg = load_config(path, ["--train.micro_batch", "2", "--alum.enabled=true", "--alum.alpha", "1",
                             "--optim.betas", "[0.9, 0.98]", "--train.output-dir", "elsewhere"])
    assert cfg.train.micro_batch == 2 and cfg.alum.enabled and cfg.alum.alpha == 1.0
    assert cfg.optim.betas == (0.9, 0.98) and cfg.train.output_dir == "elsewhere"
    with pytest.raises(UserError, match="unknown key 'alum.apha'"):
        load_config(path, ["--alum.apha", "1"])
    with pytest.raises(UserError, match="missing a value"):
        apply_overrides({}, ["--train.seed"])
    # One prefix on the command line needs no JSON list; the config file's list is replaced, not appended to.
    cfg = load_config(path, ["--data.prefixes", "corpus/other", "--data.eval_prefixes", "corpus/held"])
    assert cfg.data.prefixes == ["corpus/other"] and cfg.data.eval_prefixes == ["corpus/held"]


def test_deepspeed_json_cross_checks(tmp_path, corpus):
    cfg = build_config(tiny_config(tmp_path, corpus))
    ds = deepspeed_dict(cfg, world_size=2)
    assert ds["train_batch_size"] == 8 and ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["gradient_accumulation_steps"] == 1 and ds["gradient_clipping"] == 1.0
    bad = json.loads((CONFIGS / "zero2_fp32.json").read_text()) | {"train_batch_size": 32}
    (tmp_path / "ds.json").write_text(json.dumps(bad))
    cfg = build_config(tiny_config(tmp_path, corpus, train={"deepspeed_config": str(tmp_path / "ds.json")}))
    with pytest.raises(UserError, match=r"ds.json: train_batch_size=32 contradicts the run config \(train.global_batch"):
        deepspeed_dict(cfg, world_size=1)
    with pytest.raises(UserError, match="train.global_batch: 8 is not a multiple of train.micro_batch × world size"):
        deepspeed_dict(build_config(tiny_config(tmp_path, corpus)), world_size=3)


def _cli_error(tmp_path: Path, cfg: dict, *extra: str) -> str:
    from data_tools.errors import run_cli as wrap
    from pretrain.__main__ import main

    path = write_config(tmp_path / "run.json", cfg)
    with pytest.raises(SystemExit) as exc:
        wrap(lambda: main(["train", "--config", str(path), *extra]))
    assert exc.value.code == 2
    return str(path)


def test_cli_bad_input_writes_nothing(tmp_path, corpus, capsys):
    run_dir = tmp_path / "run"
    cases = [
        (tiny_config(tmp_path, corpus, train={"seed": "x"}), "train.seed"),
        (tiny_config(tmp_path, corpus, data={"prefixes": [str(tmp_path / "nope")]}), "nope"),
        (tiny_config(tmp_path, corpus, data={"tokenizer": str(tmp_path / "tok2")}), "vocab"),
    ]
    # A second tokenizer with another vocabulary: the corpus was not built with it.
    from engine_kit import bbc_articles

    from data_tools.tokenizer import train_tokenizer

    train_tokenizer(bbc_articles(10), tmp_path / "tok2", vocab_size=200)
    for cfg, needle in cases:
        _cli_error(tmp_path, cfg)
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and err.count("\n") == 1, err
        assert "Traceback" not in err
        assert not run_dir.exists()


@pytest.mark.slow
def test_cli_process_exit_code(tmp_path, corpus):
    cfg = tiny_config(tmp_path, corpus)
    bad = json.loads((CONFIGS / "zero2_fp32.json").read_text()) | {"train_micro_batch_size_per_gpu": 3}
    (tmp_path / "ds.json").write_text(json.dumps(bad))
    cfg["train"]["deepspeed_config"] = str(tmp_path / "ds.json")
    path = write_config(tmp_path / "run.json", cfg)
    import sys

    proc = run_cli([sys.executable, "-m", "pretrain", "train", "--config", str(path)], env=child_env())
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'ds.json'}: train_micro_batch_size_per_gpu=3 contradicts the run config "
        "(train.micro_batch gives 4); remove it or set it to \"auto\""
    ]
    assert not (tmp_path / "run").exists()
