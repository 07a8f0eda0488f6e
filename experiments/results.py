"""Read the study's run directories back into one JSON-ready dict, and the statistics over seeds.

Every number comes from a file a CLI wrote: ``metrics.jsonl`` and ``config.json`` of each pre-training run,
``metrics.json`` of each fine-tuning run, the attack's JSON report, and the runner's job markers (wall and
CPU seconds). Differences between arms are paired by seed (same data order, same fine-tuning seed) and
tested with a two-sided paired t-test; a difference "exceeds the seed noise" when p < 0.05. With one seed
there is no test, and nothing is called a finding.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

from data_tools.errors import UserError
from experiments.budgets import Budget
from experiments.corpus import StudyData
from experiments.plan import FINETUNE_ALUM, Layout, pretrain_arms

SCHEMA = 2  # 2: DeepWordBug accuracy per fine-tuning run
ALUM_DIAGNOSTICS = ("delta_ratio", "ascent_gain", "delta_cos_init", "adv_share", "ascent_overflows")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: expected a JSON file written by the study ({exc})") from None


def _rows(path: Path) -> list[dict]:
    try:
        return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: expected the run's metrics.jsonl ({exc})") from None


def pretrain_run(run_dir: Path, marker: dict) -> dict:
    """Curves and final figures of one pre-training run."""
    rows = _rows(run_dir / "metrics.jsonl")
    train = [r for r in rows if "mlm_loss" in r]
    evals = [r for r in rows if "eval_mlm_loss" in r]
    if not train or not evals:
        raise UserError(f"{run_dir / 'metrics.jsonl'}: expected training and eval rows")
    cfg = _read_json(run_dir / "config.json")
    last = train[-1]
    return {
        "seconds": marker["seconds"], "cpu_seconds": marker["cpu_seconds"],
        "steps": last["step"],
        "tokens_seen": last["step"] * cfg["train"]["global_batch"] * cfg["data"]["max_seq_len"],
        "eval_mlm_loss": evals[-1]["eval_mlm_loss"], "eval_accuracy": evals[-1]["eval_accuracy"],
        "train_mlm_loss": last["mlm_loss"], "train_masked_accuracy": last["masked_accuracy"],
        "curve": [[r["step"], r["mlm_loss"]] for r in train],
        "eval_curve": [[r["step"], r["eval_mlm_loss"], r["eval_accuracy"]] for r in evals],
        # Each diagnostic's last logged value (the ascent gain is measured every few steps, null in between).
        "alum_diagnostics": {k: vals[-1] for k in ALUM_DIAGNOSTICS
                             if (vals := [r[k] for r in train if r.get(k) is not None])},
        "alum_config": cfg["alum"],
    }


def finetune_run(run_dir: Path, attack_json: Path, text_attack_json: Path, marker: dict) -> dict:
    """Clean (final checkpoint, no selection on dev) and attacked accuracy of one fine-tuning run."""
    metrics = _read_json(run_dir / "metrics.json")
    attack = _read_json(attack_json)
    words = _read_json(text_attack_json)["results"][0]
    final = metrics["final"]
    return {
        "seconds": marker["seconds"], "cpu_seconds": marker["cpu_seconds"], "train_seconds": metrics["train_seconds"],
        "clean": final["accuracy"],
        "attacked": {f"{r['eps']:g}": r["accuracy"] for r in attack["results"]},
        # DeepWordBug on the first dev rows: accuracy there without and under attack, and the success rate
        "deepwordbug": {k: words[k] for k in ("examples", "clean_accuracy", "accuracy", "success_rate",
                                              "mean_queries", "seconds")},
        "alum_config": metrics.get("alum"),
    }


def collect(out: Path, budget: Budget, data: StudyData, seeds: list[int], markers: dict[str, dict],
            device: str, wall_seconds: float) -> dict:
    """Everything the report needs, as one dict (written as ``results.json``)."""
    import torch

    layout = Layout(out)
    tasks = [t for t in budget.tasks if t in data.tasks]
    pre: dict[str, dict] = {}
    for arm in pretrain_arms():
        runs = []
        for s in seeds:
            run = pretrain_run(layout.pretrain(arm, s), markers[f"pretrain/{arm.name}/seed{s}"])
            runs.append({"seed": s, **run})
        pre[arm.name] = {"runs": runs}
    fine: dict[str, dict] = {}
    for task in tasks:
        fine[task] = {}
        for arm in pretrain_arms():
            for ft in FINETUNE_ALUM:
                runs = []
                for s in seeds:
                    m = markers[f"finetune/{task}/{arm.name}/{ft}/seed{s}"]
                    runs.append({"seed": s, **finetune_run(layout.finetune(task, arm, ft, s),
                                                           layout.attack(task, arm, ft, s),
                                                           layout.text_attack(task, arm, ft, s), m)})
                fine[task][f"{arm.name}|{ft}"] = {"runs": runs}
    from dataclasses import asdict

    results = {
        "schema": SCHEMA,
        "budget": asdict(budget),
        "device": device,
        "seeds": seeds,
        "data": {"documents": data.documents, "sentences": data.sentences, "tokens": data.tokens,
                 "unigram_entropy": data.unigram_entropy,
                 "tasks": {t: {k: data.tasks[t][k] for k in ("train", "dev", "labels", "dev_majority_accuracy")}
                           for t in tasks}},
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "torch": torch.__version__,
                    "platform": platform.machine()},
        "wall_seconds": wall_seconds,
        "pretrain": pre,
        "finetune": fine,
    }
    results["jobs"] = {"count": len(markers), "seconds": sum(m["seconds"] for m in markers.values()),
                       "cpu_seconds": sum(m["cpu_seconds"] for m in markers.values())}
    results["comparisons"] = comparisons(results)
    return results


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ------------------------------------------------------------------------------------------ statistics


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd


def paired_test(a: list[float], b: list[float]) -> dict:
    """Paired differences ``a - b`` over seeds: mean, std, two-sided t-test p (None with one seed)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    m, sd = mean_std(diffs)
    n = len(diffs)
    if n < 2:
        p = None
    elif sd == 0:
        p = 1.0 if m == 0 else 0.0
    else:
        from scipy import stats

        t = m / (sd / math.sqrt(n))
        p = float(2 * stats.t.sf(abs(t), n - 1))
    return {"diffs": diffs, "mean": m, "std": sd, "n": n, "p": p, "exceeds_noise": p is not None and p < 0.05}


def headline_eps(results: dict) -> str:
    """The ε the summary quotes: ALUM's default ε (the training perturbation's size) when the sweep holds it,
    else the middle non-zero ε of the sweep."""
    eps = [e for e in results["budget"]["attack_eps"] if e > 0]
    alum = [r["alum_config"] for arm in results["pretrain"].values() for r in arm["runs"]
            if r["alum_config"].get("enabled") and r["alum_config"].get("variant") == "default"]
    if alum and alum[0].get("eps") in eps:
        return f"{alum[0]['eps']:g}"
    return f"{eps[len(eps) // 2]:g}" if eps else "0"


def comparisons(results: dict) -> list[dict]:
    """The study's questions, each a paired difference over seeds (a − b)."""
    out = []
    pre = results["pretrain"]

    def add(group: str, what: str, metric: str, a_vals: list[float], b_vals: list[float], better: str) -> None:
        out.append({"group": group, "what": what, "metric": metric, "better": better,
                    **paired_test(a_vals, b_vals)})

    for a, b, what in (("scratch/noise", "scratch/plain", "noise vs plain pre-training"),
                       ("scratch/alum", "scratch/plain", "ALUM vs plain pre-training"),
                       ("scratch/alum", "scratch/noise", "ALUM vs noise pre-training"),
                       ("continual/alum", "continual/plain", "ALUM vs plain continual pre-training")):
        for key, better in (("eval_mlm_loss", "lower"), ("eval_accuracy", "higher")):
            add("pretrain", what, key, [r[key] for r in pre[a]["runs"]], [r[key] for r in pre[b]["runs"]], better)
    eps = headline_eps(results)
    pairs = [("scratch/noise|plain", "scratch/plain|plain", "noise vs plain pre-training (plain fine-tuning)"),
             ("scratch/alum|plain", "scratch/plain|plain", "ALUM vs plain pre-training (plain fine-tuning)"),
             ("continual/alum|plain", "continual/plain|plain", "ALUM vs plain continual pre-training"),
             ("scratch/plain|alum", "scratch/plain|plain", "ALUM vs plain fine-tuning (plain pre-training)"),
             ("scratch/alum|alum", "scratch/plain|plain", "ALUM pre-training + ALUM fine-tuning vs plain + plain")]
    for task, runs in results["finetune"].items():
        for a, b, what in pairs:
            ra, rb = runs[a]["runs"], runs[b]["runs"]
            add(task, what, "clean", [r["clean"] for r in ra], [r["clean"] for r in rb], "higher")
            add(task, what, f"eps={eps}", [r["attacked"][eps] for r in ra], [r["attacked"][eps] for r in rb],
                "higher")
            add(task, what, "deepwordbug", [r["deepwordbug"]["accuracy"] for r in ra],
                [r["deepwordbug"]["accuracy"] for r in rb], "higher")
    return out
