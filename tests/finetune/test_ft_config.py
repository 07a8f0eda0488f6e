"""Options: JSON config, then flags on top; unknown keys and bad values are one-line errors."""

from __future__ import annotations

import json

import pytest

from data_tools.errors import UserError
from finetune.config import ClassifyOptions, load_options


def test_flags_override_the_json_config(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"model": "m", "train": "t.tsv", "dev": "d.tsv", "output_dir": "o", "lr": 2e-5,
                               "alum": {"enabled": True, "alpha": 0.5, "norm": "linf"}}))
    opts = load_options(ClassifyOptions, str(cfg), {"alum.alpha": 2.0, "epochs": 1.5})
    assert opts.lr == 2e-5 and opts.epochs == 1.5
    alum = opts.alum.build()
    assert alum.alpha == 2.0 and alum.norm == "linf" and alum.steps == 1


@pytest.mark.parametrize("data,message", [
    ({"model": "m", "train": "t", "dev": "d", "output_dir": "o", "lr_rate": 1}, "lr_rate: Extra inputs are not permitted"),
    ({"model": "m", "train": "t", "dev": "d", "output_dir": "o", "alum": {"norm": "l3"}}, "alum.norm: Input should be"),
    ({"train": "t", "dev": "d", "output_dir": "o"}, "model: Field required"),
])
def test_bad_config_names_the_field(tmp_path, data, message):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(data))
    with pytest.raises(UserError, match=message):
        load_options(ClassifyOptions, str(cfg), {})


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
