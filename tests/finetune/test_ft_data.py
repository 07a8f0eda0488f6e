"""Table readers: GLUE layouts, TSV/CSV/JSONL, and one-line errors naming file, line and expectation."""

from __future__ import annotations

import json

import pytest
from ft_helpers import run_cli

from data_tools.errors import UserError
from finetune.data import read_examples, resolve_layout


def test_glue_layouts(tmp_path):
    mnli = tmp_path / "dev_matched.tsv"
    cols = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
            "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
    row = ["0", "1", "1e", "gov", "(", "(", "(", "(", 'He said "yes".', "He agreed.", "entailment", "entailment"]
    mnli.write_text("\t".join(cols) + "\n" + "\t".join(row) + "\n", encoding="utf-8")
    ex = read_examples(mnli, resolve_layout("mnli"), ["contradiction", "entailment", "neutral"])
    assert ex.text_a == ['He said "yes".'] and ex.text_b == ["He agreed."] and ex.labels == ["entailment"]

    cola = tmp_path / "cola.tsv"  # no header: source, label, original label, sentence
    cola.write_text("gj04\t1\t\tThe book was read.\ngj04\t0\t*\tBook the read was.\n", encoding="utf-8")
    ex = read_examples(cola, resolve_layout("cola"), ["0", "1"])
    assert ex.labels == ["1", "0"] and ex.text_a[1] == "Book the read was." and ex.lines == [1, 2]

    sts = tmp_path / "sts.tsv"
    sts.write_text("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                   "0\tmain\tf\t2012\t1\tnone\tnone\tA plane.\tAn air plane.\t5.000\n", encoding="utf-8")
    layout = resolve_layout("stsb")
    assert layout.regression and layout.metric == "pearson"
    assert read_examples(sts, layout).labels == [5.0]


def test_csv_and_jsonl_with_named_columns(tmp_path):
    csv_file = tmp_path / "d.csv"
    csv_file.write_text('text,y\n"good, really",pos\nbad,neg\n', encoding="utf-8")
    ex = read_examples(csv_file, resolve_layout(None, text_a="text", label_column="y"))
    assert ex.text_a == ["good, really", "bad"] and ex.labels == ["pos", "neg"]
    jl = tmp_path / "d.jsonl"
    jl.write_text(json.dumps({"q": "a?", "p": "b.", "label": 1}) + "\n", encoding="utf-8")
    ex = read_examples(jl, resolve_layout(None, text_a="q", text_b="p"))
    assert ex.text_b == ["b."] and ex.labels == ["1"]


@pytest.mark.parametrize("content,labels,expected", [
    ("text\tlabel\nhi\tpos\n", None, r"t\.tsv:1: header has no column 'sentence' \(columns: text, label\)"),
    ("sentence\tlabel\nhi\tpos\nho\tmaybe\n", ["neg", "pos"], r"t\.tsv:3: label 'maybe' is not in the label set \{neg, pos\}"),
    ("", None, r"t\.tsv: empty file"),
    ("sentence\tlabel\n", None, r"t\.tsv: no examples"),
    ("sentence\tlabel\nhi\tpos\textra\n", None, r"t\.tsv:2: expected 2 tab-separated fields"),
    ("sentence\tlabel\n\tpos\n", None, r"t\.tsv:2: column 'sentence' is empty"),
])
def test_bad_tables_name_file_line_and_expectation(tmp_path, content, labels, expected):
    path = tmp_path / "t.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=expected):
        read_examples(path, resolve_layout(None), labels)


def test_bad_jsonl_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"sentence": "a", "label": "x"}\n{"sentence": "b", \n', encoding="utf-8")
    with pytest.raises(UserError, match=r"t\.jsonl:2: invalid JSON"):
        read_examples(path, resolve_layout(None))


def test_cli_bad_input_is_one_line_without_traceback(tmp_path, bbc, tiny_bert):
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\nsome text\tweather\n", encoding="utf-8")
    res = run_cli("classify", "--model", str(tiny_bert), "--train", str(bbc / "train.tsv"), "--dev", str(dev),
                  "-o", str(tmp_path / "run"))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert err == [f"error: {dev}:2: label 'weather' is not in the label set "
                   "{business, entertainment, politics, sports, tech}"]
    assert not (tmp_path / "run").exists()  # nothing written before the inputs were checked

    res = run_cli("classify", "--model", str(tiny_bert), "--train", str(bbc / "train.tsv"), "--dev", str(dev),
                  "-o", str(tmp_path / "run"), "--lr", "-1")
    # Bounds are checked when the flag is parsed (the flags are generated from the options' fields).
    assert res.returncode == 2 and "argument --lr: expected a finite float > 0, got '-1'" in res.stderr
