"""How big a replication run is: ``tiny`` (CI), ``quick`` (≤ 15 min on 2 cores), ``full`` (≤ 90 min).

Every arm of one budget gets the same model, the same samples in the same order and the same number of
optimizer steps; only the ALUM options differ. ``for_device("cuda")`` scales the model and the budget for a
GPU (pre-training runs there; fine-tuning and the attacks stay on the CPU, where ``finetune`` runs).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from demo.pipeline import RECIPE
from pretrain.alum import AlumConfig

# ε of finetune attack, in its default units (a fraction of each token's embedding norm, the default ALUM
# variant's units): a third of, exactly, and twice ALUM's own default ε. The report quotes ALUM's ε.
ALUM_EPS = AlumConfig().eps
ATTACK_EPS = (0.0, round(ALUM_EPS / 3, 6), ALUM_EPS, round(2 * ALUM_EPS, 6))


@dataclass(frozen=True)
class Budget:
    """Sizes of one replication run; model and optimiser default to the demo's pre-training recipe."""

    name: str
    # data
    vocab_size: int = RECIPE.vocab_size
    bbc_limit: int | None = None  # BBC training articles kept (tiny runs only)
    bbc_dev_limit: int | None = None  # BBC dev articles kept (tiny runs only)
    wiki_limit: int | None = None  # Wikipedia articles kept (tiny runs only)
    # model
    hidden: int = RECIPE.hidden
    layers: int = RECIPE.layers
    heads: int = RECIPE.heads
    seq_len: int = RECIPE.seq_len
    dropout: float = RECIPE.dropout
    # pre-training from scratch (one process; global batch = micro batch)
    batch: int = RECIPE.batch
    pretrain_steps: int = 600
    lr: float = RECIPE.lr
    warmup_ratio: float = RECIPE.warmup_ratio
    eval_samples: int = 512
    # continual pre-training from the plain checkpoint (the paper's RoBERTa setting)
    continual_steps: int = 200
    continual_lr: float = 1e-3
    # fine-tuning (finetune classify) and attacks (finetune attack)
    finetune_epochs: float = 2.0
    finetune_lr: float = 1e-3
    finetune_batch: int = 16
    finetune_seq_len: int = RECIPE.seq_len
    attack_eps: tuple[float, ...] = ATTACK_EPS
    attack_steps: int = 3
    text_attack_examples: int = 100  # dev rows attacked by TextAttack's DeepWordBug (``finetune text-attack``)
    tasks: tuple[str, ...] = ("bbc", "polarity")
    seeds: int = 3
    workers: int = 2


BUDGETS = {
    "tiny": Budget(name="tiny", vocab_size=500, bbc_limit=120, bbc_dev_limit=60, wiki_limit=5, hidden=32, layers=1,
                   heads=2, batch=8, pretrain_steps=12, warmup_ratio=0.1, eval_samples=16, continual_steps=4,
                   finetune_epochs=0.5, attack_eps=(0.0, ALUM_EPS), attack_steps=1, text_attack_examples=8,
                   tasks=("bbc",), seeds=1),
    "quick": Budget(name="quick", tasks=("bbc",)),
    "full": Budget(name="full", pretrain_steps=2000, continual_steps=600, finetune_epochs=3.0, seeds=5),
}


def for_device(budget: Budget, device: str) -> Budget:
    """The budget on ``device``: ``cuda`` gets a wider, deeper model trained 4× longer."""
    if device == "cpu":
        return budget
    return replace(budget, hidden=budget.hidden * 2, layers=budget.layers * 2, heads=budget.heads * 2,
                   pretrain_steps=budget.pretrain_steps * 4, continual_steps=budget.continual_steps * 4,
                   batch=budget.batch * 2)
