"""Ascent gain of ALUM options on the tiny model of ``tests/pretrain/test_alum.py`` (hidden 32, 2 layers, 30 seeded
AdamW MLM steps, no dropout), mean over its 4 evaluation batches: how ε, η, σ, K and the ascent loss move the gain.

Run:  python benchmarks/alum_gain_probe.py      (about a minute of CPU)
Last line: ``gain_default=…`` (the default options' mean gain; ``tests/pretrain/test_alum.py`` requires ≥ 5).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "pretrain")]

import torch  # noqa: E402
from pretrain_tiny import tiny_batch, tiny_model  # noqa: E402

from pretrain.alum import AlumConfig, adversarial_loss  # noqa: E402

ARMS = {
    "default (eps = eta = 0.1)": AlumConfig(),
    "eps = eta = 0.03": AlumConfig(eps=0.03, step_size=0.03),
    "eps = eta = 0.3": AlumConfig(eps=0.3, step_size=0.3),
    "eps = eta = 1": AlumConfig(eps=1.0, step_size=1.0),
    "eps = 0.3, K = 2": AlumConfig(eps=0.3, step_size=0.3, steps=2),
    "default, K = 2": AlumConfig(steps=2),
    "eps = 0.3, sigma = 0.03": AlumConfig(eps=0.3, step_size=0.3, init_std=0.03),
    "eps = 0.3, eta = 0.6": AlumConfig(eps=0.3, step_size=0.6),
    "eps = 0.3, ascent kl": AlumConfig(eps=0.3, step_size=0.3, ascent_loss="kl"),
    "noise": AlumConfig.from_variant("noise"),
    "authors": AlumConfig.from_variant("authors"),
}


def main() -> None:
    torch.set_num_threads(1)
    model = tiny_model(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for s in range(30):  # the fixture of tests/pretrain/test_alum.py
        torch.manual_seed(s)
        model(**tiny_batch(batch=8, seed=100 + s)).loss.backward()
        opt.step()
        opt.zero_grad()
    batches = [tiny_batch(batch=4, seed=500 + i) for i in range(4)]
    means = {}
    print("| options | gain per batch | mean gain | l_sym (last batch) |\n|---|---|---|---|")
    for name, cfg in ARMS.items():
        gains, loss = [], 0.0
        for i, b in enumerate(batches):
            t = model.task(b["input_ids"], b["attention_mask"], b["token_type_ids"], b["mlm_labels"])
            res = adversarial_loss(t.embeds, t.logits, t.logits_from, cfg, generator=torch.Generator().manual_seed(i),
                                   token_mask=b["attention_mask"], measure_gain=True)
            gains.append(float(res.ascent_gain))
            loss = float(res.loss.detach())
        means[name] = sum(gains) / len(gains)
        print(f"| {name} | {', '.join(f'{g:.2f}' for g in gains)} | {means[name]:.2f} | {loss:.2e} |", flush=True)
    print(f"gain_default={means['default (eps = eta = 0.1)']:.2f}")


if __name__ == "__main__":
    main()
