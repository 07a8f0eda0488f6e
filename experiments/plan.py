"""The study's arms and the jobs that run them, each job one call of a project CLI.

Pre-training arms (one small BERT, the same samples in the same order, the same number of steps):

- ``scratch/plain``: plain MLM (``--alum.enabled false``);
- ``scratch/noise``: MLM + α·l_sym at a random δ of ALUM's size, no ascent (``alum.variant noise``): the
  control that separates "adversarial" from "noisy" (Aghajanyan et al. 2020, R3F);
- ``scratch/alum``: ALUM with the project's default variant;
- ``continual/plain``, ``continual/alum``: from ``scratch/plain``'s checkpoint, more steps without and with
  ALUM (the paper's continual pre-training of RoBERTa, §4.2 of Liu et al. 2020).

Every pre-trained model is fine-tuned on each task plain and with ALUM (α = 1, ``--alum --alum-variant
default``), then attacked: in embedding space (``finetune attack``) at every ε of the budget, and with
TextAttack's DeepWordBug character edits (``finetune text-attack``) on the first dev rows. Arms differ only in their ALUM
options: ``pretrain_config`` builds every arm's config from one base and changes only the ``alum`` section.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from data_tools.atomic import write_json
from experiments.budgets import Budget
from experiments.corpus import StudyData
from experiments.runner import Job

ROOT = Path(__file__).resolve().parents[1]

# ALUM options per arm: the ONLY thing that differs between arms (tests compare the resolved configs).
PRETRAIN_ALUM = {
    "plain": {"enabled": False},
    "noise": {"enabled": True, "variant": "noise"},
    "alum": {"enabled": True, "variant": "default"},
}
FINETUNE_ALUM = {
    "plain": [],
    "alum": ["--alum", "--alum-variant", "default"],
}
SCRATCH = ("plain", "noise", "alum")
CONTINUAL = ("plain", "alum")


@dataclass(frozen=True)
class PretrainArm:
    """``stage`` is ``scratch`` or ``continual``; ``alum`` a key of ``PRETRAIN_ALUM``."""

    stage: str
    alum: str

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.alum}"


def pretrain_arms() -> list[PretrainArm]:
    """All pre-training arms in report order."""
    return [PretrainArm("scratch", a) for a in SCRATCH] + [PretrainArm("continual", a) for a in CONTINUAL]


def pretrain_config(budget: Budget, data: StudyData, arm: PretrainArm, seed: int, run_dir: Path,
                    init_from: Path | None = None) -> dict:
    """The run config of one pre-training run (``pretrain train --config``)."""
    continual = arm.stage == "continual"
    steps = budget.continual_steps if continual else budget.pretrain_steps
    cfg = {
        "data": {"prefixes": [data.corpus], "tokenizer": data.tokenizer, "style": "roberta",
                 "max_seq_len": budget.seq_len, "eval_samples": budget.eval_samples, "num_workers": 0},
        "model": {"arch": "bert", "hidden_size": budget.hidden, "num_layers": budget.layers,
                  "num_heads": budget.heads, "max_position_embeddings": budget.seq_len,
                  "dropout": budget.dropout},
        "alum": copy.deepcopy(PRETRAIN_ALUM[arm.alum]),
        "optim": {"name": "adamw", "lr": budget.continual_lr if continual else budget.lr,
                  "warmup_ratio": budget.warmup_ratio},
        "train": {"output_dir": str(run_dir), "deepspeed_config": str(ROOT / "deepspeed_configs" / "zero0_fp32.json"),
                  "micro_batch": budget.batch, "global_batch": budget.batch, "train_steps": steps,
                  # continual runs draw a fresh sample order (the scratch run already saw seed's first samples)
                  "seed": seed + (1000 if continual else 0),
                  "log_interval": max(1, steps // 30), "eval_interval": max(1, steps // 6), "eval_batches": 8,
                  "save_interval": 0, "keep_last": 1, "progress": False, "resume": "never"},
    }
    if init_from is not None:
        cfg["model"]["init_from"] = str(init_from)
    return cfg


class Layout:
    """Where each run of the study lives under the output folder."""

    def __init__(self, out: Path):
        self.out = out

    def pretrain(self, arm: PretrainArm, seed: int) -> Path:
        return self.out / "pretrain" / arm.stage / arm.alum / f"seed{seed}"

    def config(self, arm: PretrainArm, seed: int) -> Path:
        return self.out / "configs" / arm.stage / arm.alum / f"seed{seed}.json"

    def export(self, arm: PretrainArm, seed: int) -> Path:
        return self.out / "export" / arm.stage / arm.alum / f"seed{seed}"

    def finetune(self, task: str, arm: PretrainArm, ft: str, seed: int) -> Path:
        return self.out / "finetune" / task / arm.stage / arm.alum / ft / f"seed{seed}"

    def attack(self, task: str, arm: PretrainArm, ft: str, seed: int) -> Path:
        return self.out / "attack" / task / arm.stage / arm.alum / ft / f"seed{seed}.json"

    def text_attack(self, task: str, arm: PretrainArm, ft: str, seed: int) -> Path:
        return self.out / "text_attack" / task / arm.stage / arm.alum / ft / f"seed{seed}.json"


def jobs(budget: Budget, data: StudyData, layout: Layout, seeds: list[int]) -> list[Job]:
    """Every job of the study, with its dependencies."""
    out: list[Job] = []
    tasks = [t for t in budget.tasks if t in data.tasks]
    for seed in seeds:
        for arm in pretrain_arms():
            base = PretrainArm("scratch", "plain")
            init = layout.export(base, seed) if arm.stage == "continual" else None
            cfg = pretrain_config(budget, data, arm, seed, layout.pretrain(arm, seed), init)
            cfg_path = layout.config(arm, seed)
            steps = cfg["train"]["train_steps"]
            cost = steps * (1 if arm.alum == "plain" else 2.5 if arm.alum == "noise" else 3.0)
            pid = f"pretrain/{arm.name}/seed{seed}"
            out.append(Job(pid, "pretrain", ["train", "--config", str(cfg_path)],
                           deps=[f"export/{base.name}/seed{seed}"] if init is not None else [],
                           outputs=[layout.pretrain(arm, seed)],
                           prepare=lambda p=cfg_path, c=cfg: write_json(p, c), weight=10 * cost + 1e6))
            eid = f"export/{arm.name}/seed{seed}"
            out.append(Job(eid, "pretrain", ["export", str(layout.pretrain(arm, seed)), "-o",
                                             str(layout.export(arm, seed))],
                           deps=[pid], outputs=[layout.export(arm, seed)], weight=2e6))
            for task in tasks:
                t = data.tasks[task]
                for ft, flags in FINETUNE_ALUM.items():
                    run = layout.finetune(task, arm, ft, seed)
                    fid = f"finetune/{task}/{arm.name}/{ft}/seed{seed}"
                    out.append(Job(fid, "finetune", [
                        "classify", "--model", str(layout.export(arm, seed)), "--train", f"{t['dir']}/train.tsv",
                        "--dev", f"{t['dir']}/dev.tsv", "-o", str(run), "--epochs", str(budget.finetune_epochs),
                        "--lr", str(budget.finetune_lr), "--batch-size", str(budget.finetune_batch),
                        "--max-seq-len", str(budget.finetune_seq_len), "--seed", str(seed), "--threads", "1",
                        *flags], deps=[eid], outputs=[run], weight=1e3 if task == "bbc" else 10))
                    report = layout.attack(task, arm, ft, seed)
                    out.append(Job(f"attack/{task}/{arm.name}/{ft}/seed{seed}", "finetune", [
                        "attack", "--model", str(run / "final"), "--data", f"{t['dir']}/dev.tsv",
                        "--eps", *map(str, budget.attack_eps), "--steps", str(budget.attack_steps),
                        "--max-seq-len", str(budget.finetune_seq_len), "--threads", "1", "-o", str(report)],
                        deps=[fid], outputs=[report], weight=100 if task == "bbc" else 1))
                    words = layout.text_attack(task, arm, ft, seed)
                    out.append(Job(f"text_attack/{task}/{arm.name}/{ft}/seed{seed}", "finetune", [
                        "text-attack", "--model", str(run / "final"), "--data", f"{t['dir']}/dev.tsv",
                        "--examples", str(budget.text_attack_examples), "--max-seq-len", str(budget.finetune_seq_len),
                        "--seed", str(seed), "--threads", "1", "-o", str(words)],
                        deps=[fid], outputs=[words], weight=50 if task == "bbc" else 1))
    return out
