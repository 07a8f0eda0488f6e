"""`make demo`, shortened (--tiny): every artefact exists and is valid, Ctrl-C is safe, reruns reuse stages."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from json_values import all_finite

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["documents", "tokenizer", "corpus", "verify", "pretrain", "export", "bbc", "finetune_plain",
          "finetune_alum", "attack_plain", "attack_alum"]

pytestmark = [pytest.mark.slow, pytest.mark.multiproc]


def _demo(out: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "demo", "-o", str(out), "--tiny", "--quiet"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> tuple[Path, str, str]:
    out = tmp_path_factory.mktemp("demo")
    # 1. Ctrl-C while pre-training runs: the run stops, and nothing of that stage is marked finished.
    proc = _demo(out, start_new_session=True)
    deadline = time.time() + 300
    while not (out / "pretrain").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGINT)
    interrupted_output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, interrupted_output
    assert (out / ".stages" / "verify.json").exists()
    assert not (out / ".stages" / "pretrain.json").exists()
    assert not (out / "export").exists()
    # 2. A rerun reuses the finished stages and completes the rest.
    proc = _demo(out)
    second_output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, second_output
    # 3. A third run has nothing left to do.
    proc = _demo(out)
    third_output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, third_output
    return out, second_output, third_output


def test_rerun_after_interrupt_reuses_finished_stages(demo_out):
    _, second, _ = demo_out
    assert "[skip] verify the corpus" in second
    assert "[run ] ALUM pre-training" in second


def test_second_run_skips_every_stage(demo_out):
    _, _, third = demo_out
    for stage in STAGES:
        assert (demo_out[0] / ".stages" / f"{stage}.json").exists()
    assert "[run ]" not in third
    assert third.count("[skip]") == len(STAGES)


def test_corpus_verifies_and_summary_comes_from_artefacts(demo_out):
    out, _, _ = demo_out
    proc = subprocess.run([sys.executable, "-m", "data_tools", "verify", str(out / "corpus" / "wiki")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    fig = summary["figures"]
    metas = [json.loads(p.read_text()) for p in sorted((out / "corpus").glob("wiki_*.meta.json"))]
    assert fig["tokens"] == sum(m["tokens"] for m in metas) > 0
    rows = [json.loads(x) for x in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert fig["pretrain_loss"] == losses
    assert losses[-1] < losses[0], losses
    # The summary sets the held-out MLM loss against the corpus' unigram entropy (a context-free predictor).
    from data_tools.inspect import unigram_entropy
    from data_tools.tokenizer import load_tokenizer

    entropy = unigram_entropy(out / "corpus" / "wiki", load_tokenizer(out / "tokenizer").special_ids)
    assert fig["unigram_entropy"] == pytest.approx(entropy) and 0 < entropy < math.log(2000)
    assert fig["eval_mlm"] == [r["eval_mlm_loss"] for r in rows if "eval_mlm_loss" in r] and fig["eval_mlm"]
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exports_load_in_transformers(demo_out):
    out, _, _ = demo_out
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

    mlm = AutoModelForMaskedLM.from_pretrained(out / "export")
    tok = AutoTokenizer.from_pretrained(out / "export")
    assert mlm.config.vocab_size == len(tok)
    clf = AutoModelForSequenceClassification.from_pretrained(out / "finetune_alum" / "best")
    assert clf.config.num_labels == 5


def test_metrics_parse_with_finite_values(demo_out):
    out, _, _ = demo_out
    for run in ("finetune_plain", "finetune_alum"):
        metrics = json.loads((out / run / "metrics.json").read_text())
        assert all_finite(metrics) and 0.0 <= metrics["best"]["accuracy"] <= 1.0
    for run in ("attack_plain", "attack_alum"):
        results = json.loads((out / run / "attack.json").read_text())["results"]
        accs = [r["accuracy"] for r in sorted(results, key=lambda r: r["eps"])]
        assert all_finite(accs) and accs == sorted(accs, reverse=True)
