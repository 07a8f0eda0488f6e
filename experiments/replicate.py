"""``python -m experiments replicate``: does ALUM help? (issue: a built-in replication study).

data → three pre-training arms from scratch (plain, noise, ALUM) and two continual ones (plain, ALUM from
the plain checkpoint) → export → fine-tuning on every shipped labelled task, plain and ALUM → embedding
attack at several ε → ``results.json``, ``results.md``, ``replicate.png``. Each step is a project CLI run
by ``experiments.runner``; see ``experiments.plan`` for the arms.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from data_tools.atomic import write_json, write_text
from data_tools.errors import UserError
from experiments.budgets import BUDGETS, for_device
from experiments.corpus import prepare
from experiments.plan import Layout, jobs
from experiments.report import plot, render_markdown
from experiments.results import collect
from experiments.runner import Runner


def replicate(budget_name: str, out: Path, seeds: int | None = None, device: str = "cpu",
              workers: int | None = None, threads: int = 1, echo: Callable[[str], None] = print,
              note: str | None = None) -> dict:
    """Run (or finish) the study in ``out``; returns the results dict plus a one-line ``summary``."""
    if budget_name not in BUDGETS:
        raise UserError(f"--budget {budget_name!r}: expected one of {', '.join(BUDGETS)}")
    budget = for_device(BUDGETS[budget_name], device)
    n_seeds = budget.seeds if seeds is None else seeds
    if n_seeds < 1:
        raise UserError(f"--seeds {n_seeds}: expected at least 1")
    if workers is not None and workers < 1 or threads < 1:
        raise UserError("--workers/--threads: expected at least 1")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device visible to torch")
    out = out.resolve()
    _same_budget(out, budget, device)
    start = time.perf_counter()
    echo(f"[data] preparing the corpus and tasks under {out / 'data'}")
    data = prepare(out / "data", budget.vocab_size, budget.tasks, bbc_limit=budget.bbc_limit,
                   wiki_limit=budget.wiki_limit, bbc_dev_limit=budget.bbc_dev_limit)
    echo(f"[data] {data.documents:,} documents, {data.tokens:,} tokens, unigram entropy "
         f"{data.unigram_entropy:.3f} nats; tasks: {', '.join(data.tasks)}")
    seed_list = list(range(1, n_seeds + 1))
    layout = Layout(out)
    plan = jobs(budget, data, layout, seed_list)
    # CPU runs never see a GPU (same seed → same numbers); cuda runs leave the device visible.
    env = {"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {}
    env.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    runner = Runner(out, workers or budget.workers, threads, env=env, echo=echo)
    echo(f"[plan] {len(plan)} jobs, {len(seed_list)} seed(s), {runner.workers} worker(s) × {threads} thread(s)")
    markers = runner.run(plan)
    wall = time.perf_counter() - start
    # A resumed study adds this invocation's wall time to the earlier ones'; a rerun with nothing left to do
    # keeps the recorded figure.
    total_wall = _prior_wall(out) + (wall if runner.ran else 0.0)
    results = collect(out, budget, data, seed_list, markers, device, total_wall)
    if note:
        results["note"] = note
    write_json(out / "results.json", results)
    write_text(out / "results.md", "# Does ALUM help?\n\n" + render_markdown(results))
    plot(results, out / "replicate.png")
    write_json(out / ".wall.json", {"seconds": total_wall})
    results["summary"] = (f"replicate ({budget.name}, {len(seed_list)} seeds) finished in {wall / 60:.1f} min: "
                          f"{out / 'results.json'}, {out / 'results.md'}, {out / 'replicate.png'}")
    return results


def _prior_wall(out: Path) -> float:
    """Wall time of earlier, interrupted invocations on the same folder (a resumed study counts them)."""
    import json

    path = out / ".wall.json"
    return json.loads(path.read_text())["seconds"] if path.exists() and os.path.getsize(path) else 0.0


def _same_budget(out: Path, budget, device: str) -> None:
    """A study folder holds one budget: reusing its finished jobs under other sizes would mix two studies."""
    import json
    from dataclasses import asdict

    mine = {**asdict(budget), "seeds": None, "device": device}
    path = out / "study.json"
    if path.exists():
        theirs = json.loads(path.read_text(encoding="utf-8"))
        if theirs != json.loads(json.dumps(mine)):
            raise UserError(f"{out}: holds a study of another budget or device ({path}); expected the same "
                            "--budget/--device, or a new -o folder")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, mine)
