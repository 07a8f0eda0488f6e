"""Options: JSON config, then flags on top; unknown keys and bad values are one-line errors."""

from __future__ import annotations

import json

import pytest
from ft_helpers import options

from data_tools.errors import UserError
from finetune.config import AttackOptions, ClassifyOptions, QAOptions
from pretrain.config_base import load, validate


def test_flags_override_the_json_config(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"model": "m", "train": "t.tsv", "dev": "d.tsv", "output_dir": "o", "lr": 2e-5,
                               "alum": {"enabled": True, "alpha": 0.5, "norm": "linf"}}))
    opts = options("classify", "--config", str(cfg), "--alum-alpha", "2.0", "--epochs", "1.5")
    assert opts.lr == 2e-5 and opts.epochs == 1.5
    alum = opts.alum.build()
    assert alum.alpha == 2.0 and alum.norm == "linf" and alum.steps == 1


# The messages are pretrain's (pretrain.config_base.format_error): one format for every entry point.
@pytest.mark.parametrize("data,message", [
    ({"model": "m", "train": "t", "dev": "d", "output_dir": "o", "lr_rate": 1}, "c.json: unknown key 'lr_rate'"),
    ({"model": "m", "train": "t", "dev": "d", "output_dir": "o", "alum": {"norm": "l3"}}, "alum.norm: Input should be"),
    ({"train": "t", "dev": "d", "output_dir": "o"}, "c.json: missing required key 'model'"),
])
def test_bad_config_names_the_field(tmp_path, data, message):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(data))
    with pytest.raises(UserError, match=message):
        load(ClassifyOptions, str(cfg))


def test_byte_order_mark_is_not_part_of_the_header(tmp_path):
    from finetune.data import TaskLayout, read_examples

    path = tmp_path / "excel.tsv"
    path.write_bytes("\ufeffsentence\tlabel\r\ngood film\tpos\r\n".encode())
    ex = read_examples(path, TaskLayout())
    assert ex.text_a == ["good film"] and ex.labels == ["pos"]


def test_non_utf8_table_is_a_clear_error(tmp_path):
    from finetune.data import TaskLayout, read_examples

    path = tmp_path / "latin1.tsv"
    path.write_bytes("sentence\tlabel\nok\tpos\ncaf\xe9 cr\xe8me\tneg\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1\.tsv:3: not UTF-8 text \(byte 4 of the line\)"):
        read_examples(path, TaskLayout())


@pytest.mark.parametrize("args, message", [
    (["--eps", "nan"], "argument --eps: expected a finite float ≥ 0, got 'nan'"),
    (["--eps", "0.1", "inf"], "argument --eps: expected a finite float ≥ 0, got 'inf'"),
    (["--eps", "-0.1"], "argument --eps: expected a finite float ≥ 0"),
    (["--eps", "0.1", "--steps", "0"], "argument --steps: expected a finite int ≥ 1, got '0'"),
    (["--eps", "0.1", "--step-size", "nan"], "argument --step-size: expected a finite float > 0"),
])
def test_attack_numbers_must_be_finite_and_in_range(tmp_path, args, message):
    from ft_helpers import cli

    code, out, err = cli("attack", "--model", str(tmp_path), "--data", str(tmp_path / "d.tsv"), *args)
    assert code == 2 and message in err and out == "", err
    assert not (tmp_path / "attack.json").exists()


def test_attack_options_refuse_nan_and_zero_steps(tmp_path):
    # run_attack takes AttackOptions: these checks hold for every way of giving them (flags, overrides, JSON).
    where = ["--model", str(tmp_path), "--data", str(tmp_path / "d.tsv")]
    with pytest.raises(UserError, match="--eps: .* expected finite values >= 0"):
        load(AttackOptions, None, [*where, "--eps", "[NaN]"])
    with pytest.raises(UserError, match="--steps: got 0, expected at least 1 PGD step"):
        load(AttackOptions, None, [*where, "--eps", "[0.0, 0.1]", "--steps", "0"])


def test_nan_options_and_command_line_blame(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"model": "m", "train": "t", "dev": "d", "output_dir": "o"}))
    with pytest.raises(UserError, match=r"^command line --lr: Input should be a finite number"):
        load(ClassifyOptions, str(cfg), ["--lr", "NaN"])
    with pytest.raises(UserError, match=r"c\.json: alum\.eps: Input should be a finite number"):
        cfg.write_text(json.dumps({"model": "m", "train": "t", "dev": "d", "output_dir": "o",
                                   "alum": {"eps": float("inf")}}))
        load(ClassifyOptions, str(cfg))


def test_qa_stride_follows_a_short_max_seq_len():
    opts = validate(QAOptions, {"model": "m", "train": "t", "dev": "d", "output_dir": "o", "max_seq_len": 64})
    assert opts.doc_stride == 21
    assert validate(QAOptions, {"model": "m", "train": "t", "dev": "d", "output_dir": "o"}).doc_stride == 128
    with pytest.raises(UserError, match=r"^doc_stride: got 40, expected less than max_seq_len/2 \(32\)") as err:
        validate(QAOptions, {"model": "m", "train": "t", "dev": "d", "output_dir": "o", "max_seq_len": 64,
                             "doc_stride": 40})
    assert "'model'" not in str(err.value)  # not the whole config
