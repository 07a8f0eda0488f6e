"""classify / qa / attack / text-attack options share pretrain's config base: flags generated from the models (every field has
one, and a docstring), --config with --key overrides, old spellings, and pretrain's one-line errors."""

from __future__ import annotations

import json

import pytest
from ft_helpers import cli, options

from data_tools.errors import UserError
from finetune.config import AttackOptions, ClassifyOptions, QAOptions, TextAttackOptions
from finetune.flags import flag_names, leaf_fields

WHERE = ["--model", "m", "--train", "t.tsv", "--dev", "d.tsv", "-o", "out"]


@pytest.mark.parametrize("command, model", [("classify", ClassifyOptions), ("qa", QAOptions),
                                            ("attack", AttackOptions), ("text-attack", TextAttackOptions)])
def test_every_field_has_a_docstring_and_a_flag(command, model):
    from finetune.__main__ import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "cmd").choices[command]
    dests = {a.dest: a for a in sub._actions}
    fields = leaf_fields(model)
    assert [key for key, info in fields if not (info.description or "").strip()] == []
    assert [key for key, _ in fields if key not in dests] == []
    for key, _ in fields:  # the flag is the one the reference documents, and its help is the docstring
        assert dests[key].option_strings[: len(flag_names(key))] == flag_names(key)
        assert dests[key].help


def test_old_and_new_spellings_resolve_alike(tmp_path):
    old = options("classify", *WHERE, "--max-grad-norm", "0.5", "--log-every", "3")
    assert old == options("classify", *WHERE, "--clip-grad", "0.5", "--log-interval", "3")
    assert old == options("classify", *WHERE, "--clip_grad", "0.5", "--log_interval=3")  # --key value overrides
    assert (old.clip_grad, old.log_interval) == (0.5, 3)
    # OUTPUT_DIR/config.json of a run from before the rename still loads, and a flag still overrides it.
    resolved = {**old.model_dump(mode="json"), "max_grad_norm": 0.5, "log_every": 3}
    del resolved["clip_grad"], resolved["log_interval"]
    (tmp_path / "config.json").write_text(json.dumps(resolved))
    assert options("classify", "--config", str(tmp_path / "config.json")) == old
    assert options("classify", "--config", str(tmp_path / "config.json"), "--clip-grad", "2").clip_grad == 2
    (tmp_path / "both.json").write_text(json.dumps({**resolved, "clip_grad": 1}))
    with pytest.raises(UserError, match=r"both\.json: max_grad_norm: the old name of clip_grad; give only one"):
        options("classify", "--config", str(tmp_path / "both.json"))


def test_resolved_config_loads_back(tmp_path):
    opts = options("qa", *WHERE, "--alum", "--alum-variant", "authors", "--max-seq-len", "64")
    (tmp_path / "config.json").write_text(json.dumps(opts.model_dump(mode="json")))
    assert options("qa", "--config", str(tmp_path / "config.json")) == opts
    assert opts.alum.norm == "token_linf" and opts.doc_stride == 21


def test_duplicate_and_unknown_keys_name_the_file_and_key(tmp_path):
    cfg = tmp_path / "attack.json"
    cfg.write_text('{"model": "m", "data": "d.tsv", "eps": [0.1], "steps": 2, "steps": 3}')
    code, _, err = cli("attack", "--config", str(cfg))
    assert code == 2 and err == f"error: {cfg}: duplicate key 'steps' (each key may appear once per object)\n"
    cfg.write_text('{"model": "m", "data": "d.tsv", "eps": [0.1], "stepz": 2}')
    with pytest.raises(UserError, match=rf"^{cfg}: unknown key 'stepz'$"):
        options("attack", "--config", str(cfg))
    with pytest.raises(UserError, match=r"^command line --alum.apha: unknown key 'alum.apha'$"):
        options("classify", *WHERE, "--alum.apha", "2")
    with pytest.raises(UserError, match=r"^missing required key 'output_dir' \(give --output-dir\)$"):
        options("classify", *WHERE[:-2])


def test_bad_values_name_the_flag_as_typed(tmp_path):
    with pytest.raises(UserError, match=r"^command line --alum.eps: Input should be greater than or equal to 0 "
                                        r"\(got -1\)$"):
        options("classify", *WHERE, "--alum.eps", "-1")
    # A check across fields lists the flags that gave them.
    with pytest.raises(UserError, match=r"^command line .*--alum-norm, --alum-units.*: alum.units: 'relative' needs"):
        options("classify", *WHERE, "--alum-norm", "linf", "--alum-units", "relative")
    code, _, err = cli("classify", *WHERE, "--max-grad-norm", "nan")
    assert code == 2 and "argument --clip-grad/--max-grad-norm: expected a finite float ≥ 0, got 'nan'" in err
    code, _, err = cli("classify", *WHERE, "--warmup-ratio", "1.5")
    assert code == 2 and "expected a finite float ≥ 0 and ≤ 1, got '1.5'" in err
    code, _, err = cli("init-model", "--texts", "t.tsv", "-o", "m", "--lr", "1")
    assert code == 2 and "unrecognized arguments: --lr 1" in err  # only the option commands take overrides


def test_attack_options_from_config_with_flags_on_top(tmp_path):
    cfg = tmp_path / "attack.json"
    cfg.write_text(json.dumps({"model": "runs/bbc/best", "data": "dev.tsv", "eps": [0, 0.1], "norm": "linf",
                               "units": "absolute", "output": "a.json"}))
    opts = options("attack", "--config", str(cfg), "--eps", "0", "0.05", "--steps", "3", "--text-a", "body")
    assert opts.eps == [0.0, 0.05] and opts.steps == 3 and opts.norm == "linf" and opts.text_a == "body"
    assert str(opts.output) == "a.json" and opts.site == "embedding_output"
    with pytest.raises(UserError, match=rf"^{cfg} with command-line overrides --units: --units relative: needs --norm l2"):
        options("attack", "--config", str(cfg), "--units", "relative")
    cfg.write_text('{"model": "m", "data": "d.tsv", "eps": [0.1, NaN]}')
    with pytest.raises(UserError, match=rf"^{cfg}: eps: got \[0.1, nan\], expected finite values >= 0$"):
        options("attack", "--config", str(cfg))


def test_list_and_switch_flags():
    opts = options("classify", *WHERE, "--labels", "neg,pos", "--regression", "--alum", "--no-alum-embed-grad")
    assert opts.labels == ["neg", "pos"] and opts.regression and opts.alum.enabled and not opts.alum.embed_grad
    assert options("classify", *WHERE, "--labels", "neg", "pos").labels == ["neg", "pos"]
    assert not options("classify", *WHERE, "--alum", "--no-alum").alum.enabled


def test_text_attack_flags_keep_their_spellings_and_defaults():
    opts = options("text-attack", "--model", "m", "--data", "d.tsv", "--examples", "20", "--max-seq-len", "64",
                   "--seed", "3", "--threads", "1", "-o", "w.json")
    assert (opts.examples, opts.max_seq_len, opts.seed, opts.threads, str(opts.output)) == (20, 64, 3, 1, "w.json")
    assert (opts.recipe, opts.batch_size) == ("deepwordbug", 64)
    code, _, err = cli("text-attack", "--model", "m", "--data", "d.tsv", "--examples", "0")
    assert code == 2 and "argument --examples: expected a finite int ≥ 1, got '0'" in err


def test_every_finetune_call_of_the_study_parses(tmp_path):
    """The flags experiments/plan.py writes (classify, attack, text-attack) are all still accepted."""
    from experiments.budgets import BUDGETS
    from experiments.corpus import StudyData
    from experiments.plan import Layout, jobs

    tasks = {name: {"dir": str(tmp_path / name)} for name in ("bbc", "polarity")}
    data = StudyData(corpus="c", tokenizer="t", tasks=tasks, documents=1, sentences=1, tokens=1,
                     unigram_entropy=1.0, sources=[])
    calls = [job.argv for job in jobs(BUDGETS["quick"], data, Layout(tmp_path), seeds=[1]) if job.tool == "finetune"]
    assert {argv[0] for argv in calls} >= {"classify", "attack"}
    for argv in calls:
        assert options(*argv)


def test_text_attack_options_are_run_text_attacks_keywords():
    # cmd_text_attack passes the options as run_text_attack's keywords: a field without a parameter (or the
    # reverse) would fail only when someone runs it.
    import inspect

    from finetune.text_attack import run_text_attack

    params = set(inspect.signature(run_text_attack).parameters) - {"model_dir", "data"}
    assert params == set(TextAttackOptions.model_fields) - {"model", "data"}
