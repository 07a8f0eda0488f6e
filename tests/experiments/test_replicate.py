"""``python -m experiments replicate`` end to end at the tiny budget (one seed): the pipeline, the output schema, that
arms differ only in their ALUM options, that a job rerun with the same seed gives the same numbers; the
README's section is what the committed results render; the statistics are a paired t-test."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from json_values import all_finite

from experiments.report import COMMITTED, END, START, readme_section, render_markdown
from experiments.results import paired_test

ROOT = Path(__file__).resolve().parents[2]


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments", "replicate", "--budget", "tiny", "-o", str(out),
                           "--seeds", "1", *extra], cwd=ROOT, capture_output=True, text=True, timeout=1700)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("replicate")
    proc = _run(out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the whole tiny study runs in the first test's fixture
def test_outputs_and_schema(study):
    results = json.loads((study / "results.json").read_text())
    assert results["schema"] == 2 and results["seeds"] == [1]
    assert set(results["pretrain"]) == {"scratch/plain", "scratch/noise", "scratch/alum", "continual/plain",
                                        "continual/alum"}
    for arm in results["pretrain"].values():
        for run in arm["runs"]:
            assert run["steps"] > 0 and run["tokens_seen"] > 0 and run["seconds"] > 0
            assert run["curve"] and run["eval_curve"] and all_finite(run["curve"])
    # Every arm of a stage: the same number of optimizer steps and tokens.
    for stage in ("scratch", "continual"):
        arms = [a for name, a in results["pretrain"].items() if name.startswith(stage)]
        assert len({(r["steps"], r["tokens_seen"]) for a in arms for r in a["runs"]}) == 1
    bbc = results["finetune"]["bbc"]
    assert len(bbc) == 10  # 5 pre-trained models × plain/ALUM fine-tuning
    for arm in bbc.values():
        for run in arm["runs"]:
            assert 0.0 <= run["clean"] <= 1.0
            accs = [run["attacked"][k] for k in sorted(run["attacked"], key=float)]
            assert accs == sorted(accs, reverse=True) and run["attacked"]["0"] == pytest.approx(run["clean"])
            words = run["deepwordbug"]  # TextAttack's DeepWordBug on the first dev rows: never raises accuracy
            assert words["examples"] == 8 and 0.0 <= words["accuracy"] <= words["clean_accuracy"] <= 1.0
    # One seed: every comparison is listed, none is tested (no seed noise to compare with).
    assert results["comparisons"] and all(c["n"] == 1 and c["p"] is None for c in results["comparisons"])
    assert (study / "replicate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (study / "results.md").read_text().startswith("# Does ALUM help?")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the whole tiny study runs in the first test's fixture
def test_arms_differ_only_in_alum_options(study):
    def resolved(path: Path) -> dict:
        cfg = json.loads(path.read_text())
        if isinstance(cfg.get("train"), dict):  # pre-training: train.output_dir; fine-tuning: output_dir
            cfg["train"].pop("output_dir")
        cfg.pop("output_dir", None)
        return cfg

    for seed in (1,):
        for stage, arms in (("scratch", ("plain", "noise", "alum")), ("continual", ("plain", "alum"))):
            cfgs = {a: resolved(study / "pretrain" / stage / a / f"seed{seed}" / "config.json") for a in arms}
            alums = {a: cfgs[a].pop("alum") for a in arms}
            assert all(cfgs[a] == cfgs[arms[0]] for a in arms), stage
            assert len({json.dumps(v, sort_keys=True) for v in alums.values()}) == len(arms)
            assert not alums["plain"]["enabled"] and alums[arms[-1]]["enabled"]
        for pt in ("scratch/plain", "scratch/alum", "continual/alum"):
            ft = {f: resolved(study / "finetune" / "bbc" / pt / f / f"seed{seed}" / "config.json")
                  for f in ("plain", "alum")}
            alums = {f: ft[f].pop("alum") for f in ft}
            assert ft["plain"] == ft["alum"]
            assert not alums["plain"]["enabled"] and alums["alum"]["enabled"] and alums["alum"]["alpha"] == 1.0


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the whole tiny study runs in the first test's fixture
def test_same_seed_same_numbers_when_a_job_reruns(study):
    run = study / "pretrain" / "scratch" / "alum" / "seed1"
    before = (run / "metrics.jsonl").read_text()
    marker = study / ".done" / "pretrain__scratch__alum__seed1.json"
    marker.unlink()
    shutil.rmtree(run)
    proc = _run(study)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[skip]" in proc.stdout and "pretrain/scratch/alum/seed1" in proc.stdout
    strip = lambda text: [{k: v for k, v in json.loads(x).items()  # noqa: E731
                           if not k.endswith("_per_sec") and k not in ("mfu", "data_wait_frac")}
                          for x in text.splitlines()]
    assert strip((run / "metrics.jsonl").read_text()) == strip(before)


def test_readme_section_is_rendered_from_the_committed_results():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index(START): readme.index(END) + len(END)]
    results = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert block == readme_section(results), \
        "run: python -m experiments readme --update-readme README.md"


def test_committed_results_come_from_a_multi_seed_run():
    results = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert results["budget"]["name"] in ("quick", "full") and len(results["seeds"]) >= 3
    for arm in results["pretrain"].values():
        assert len(arm["runs"]) == len(results["seeds"])


def test_paired_test_matches_scipy():
    from scipy import stats

    a, b = [0.81, 0.84, 0.79, 0.86], [0.78, 0.80, 0.80, 0.82]
    res = paired_test(a, b)
    ref = stats.ttest_rel(a, b)
    assert res["p"] == pytest.approx(ref.pvalue) and res["mean"] == pytest.approx(0.025)
    assert res["exceeds_noise"] == (ref.pvalue < 0.05)
    one = paired_test([0.9], [0.5])
    assert one["p"] is None and not one["exceeds_noise"]


def test_one_seed_is_never_a_finding():
    results = json.loads(COMMITTED.read_text(encoding="utf-8"))
    results = json.loads(json.dumps(results))
    results["seeds"] = results["seeds"][:1]
    for arm in results["pretrain"].values():
        arm["runs"] = arm["runs"][:1]
    for task in results["finetune"].values():
        for arm in task.values():
            arm["runs"] = arm["runs"][:1]
    from experiments.results import comparisons

    results["comparisons"] = comparisons(results)
    text = render_markdown(results)
    assert "none is a finding" in text and "**yes**" not in text


def test_a_comparison_against_an_arm_at_the_majority_class_gets_no_verdict():
    from experiments.report import comparison_table
    from experiments.results import at_majority, comparisons

    results = json.loads(COMMITTED.read_text(encoding="utf-8"))
    task = "bbc"
    arm = "scratch/plain|plain"
    # Make one arm predict like the majority class: every comparison with it loses its verdict, even a "beyond
    # seed noise" one, and the other comparisons keep theirs.
    majority = results["data"]["tasks"][task]["dev_majority_accuracy"]
    for run in results["finetune"][task][arm]["runs"]:
        run["clean"] = majority
    assert at_majority(results, task, arm)
    results["comparisons"] = comparisons(results)
    flat = [c for c in results["comparisons"] if c["at_majority"]]
    mine = [c for c in flat if c["group"] == task]
    assert mine and all(c["metric"] != "clean" for c in mine)  # clean accuracy is still compared
    assert any(c["exceeds_noise"] for c in mine)  # the p-value alone would have called these findings
    table = comparison_table(results)
    assert table.count("no verdict: an arm is at the majority class") == len(flat)
    assert not any(c["at_majority"] for c in results["comparisons"] if c["group"] == "pretrain")
