"""ALUM's diagnostics: what each adversarial step measures about δ, and how those measurements add up into
log rows.

Per step (:func:`delta_diagnostics`, :func:`ascent_gain`): ``delta_ratio`` = mean over real tokens of
‖δ_t‖/‖x_t‖; ``delta_cos_init`` = mean cos(δ_final, δ_init) per token; ``ascent_gain`` = l_sym at the final δ
over l_sym at a random δ with the same per-token norms (same dropout masks), measured when asked. A gain near
1 means the "adversarial" term is noise injection.

Over steps (:class:`AlumSums`, :class:`AlumStats`): the measurements are kept as sums so that micro-batches,
steps and ranks add up; a log row divides them by the number of ALUM steps (gains by the number measured).
Pre-training packs the sums into its step record (``pretrain.step_stats``) to reduce them over ranks;
fine-tuning accumulates them here directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import astuple, dataclass, fields
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from pretrain.alum_math import l2_direction, safe_divisor, sym_kl

if TYPE_CHECKING:  # annotations only: pretrain.alum imports this module
    from pretrain.alum import AlumConfig, Regularized

# A run warns when the mean measured gain stays below this after _GAIN_WARN_AFTER measurements.
GAIN_WARN_BELOW = 2.0
_GAIN_WARN_AFTER = 3


def _token_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # values: [..., 1] per token; mask: [...] 1 for real tokens.
    values = values.squeeze(-1)
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def delta_diagnostics(embeds: torch.Tensor, delta: torch.Tensor, start: torch.Tensor,
                      token_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``delta_ratio`` (mean ‖δ_t‖/‖x_t‖) and ``delta_cos_init`` (mean cos(δ, δ_init)) over real tokens, detached."""
    with torch.no_grad():
        d = delta.float()
        ratio = d.norm(dim=-1, keepdim=True) / safe_divisor(embeds.detach().float().norm(dim=-1, keepdim=True))
        cos = F.cosine_similarity(d, start.float(), dim=-1, eps=1e-30).unsqueeze(-1)
        return {"delta_ratio": _token_mean(ratio, token_mask), "delta_cos_init": _token_mean(cos, token_mask)}


def _same_norm_random(delta: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    noise = torch.randn(delta.shape, generator=generator, device=delta.device, dtype=torch.float32)
    return l2_direction(noise) * delta.float().norm(dim=-1, keepdim=True)


def ascent_gain(loss: torch.Tensor, delta: torch.Tensor, base: torch.Tensor, target: torch.Tensor,
                forward: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator | None) -> torch.Tensor:
    """l_sym at the adversarial δ (``loss``) over l_sym at a random δ of the same per-token norms.

    Args:
        loss: l_sym(f(base + δ), f(base)) of the step.
        delta: the final δ; base: the detached clean embeddings; target: the detached clean logits.
        forward: perturbed embeddings → logits, with the step's dropout masks (one extra no-grad forward).
        generator: RNG of the random δ (default: torch's global RNG).
    """
    # A diagnostic must not change training: the probe's random draws leave the global RNG (and the caller's
    # generator) as they were, so a resumed run, whose probes fall on other steps, repeats the straight run.
    devices = [base.device] if base.device.type == "cuda" else []
    saved = generator.get_state() if generator is not None else None
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        probe = _same_norm_random(delta, generator).to(base.dtype)
        at_random = sym_kl(forward(base + probe), target)
        gain = loss.detach().float() / at_random.float().clamp(min=1e-30)
    if saved is not None:
        generator.set_state(saved)
    return gain


@dataclass
class AlumSums:
    """ALUM diagnostics summed over ALUM steps (host floats): micro-batches, steps and ranks add up."""

    steps: float = 0.0
    """ALUM steps run (the divisor of the three means below)."""
    delta_ratio: float = 0.0
    delta_cos_init: float = 0.0
    adv_share: float = 0.0
    ascent_gain: float = 0.0
    """Sum of the finite gains measured (the divisor is ``gains``)."""
    gains: float = 0.0
    """Gain measurements."""

    @classmethod
    def of(cls, reg: Regularized) -> AlumSums:
        """One step's diagnostics (all zero when ALUM did not run)."""
        adv = reg.adv
        if adv is None:
            return cls()
        out = cls(steps=1.0, delta_ratio=_float(adv.delta_ratio), delta_cos_init=_float(adv.delta_cos_init),
                  adv_share=_float(reg.adv_share))
        if adv.ascent_gain is not None and math.isfinite(float(adv.ascent_gain)):
            out.ascent_gain, out.gains = float(adv.ascent_gain), 1.0
        return out

    def __add__(self, other: AlumSums) -> AlumSums:
        return AlumSums(*(a + b for a, b in zip(astuple(self), astuple(other))))

    def values(self) -> list[float]:
        """The sums in field order (to pack into one tensor)."""
        return list(astuple(self))

    @classmethod
    def size(cls) -> int:
        return len(fields(cls))


def _float(value: torch.Tensor | None) -> float:
    return float(value) if value is not None else 0.0


class AlumStats:
    """Accumulates the per-step ALUM diagnostics between two log rows, and warns once about a low gain.

    ``add`` takes a :class:`pretrain.alum.Regularized`; ``row()`` returns the keys every log row gets
    (``delta_ratio``, ``ascent_gain`` (None when not measured in the interval), ``delta_cos_init``,
    ``adv_share``, ``ascent_overflows`` (cumulative)) and resets the interval. Pre-training sums
    :class:`AlumSums` over ranks itself and calls ``row_from``; fine-tuning uses ``add``/``row`` directly.
    """

    KEYS = ("delta_ratio", "ascent_gain", "delta_cos_init", "adv_share", "ascent_overflows")

    def __init__(self, cfg: AlumConfig | None):
        self.cfg = cfg
        self.overflows = 0.0
        self._gains: list[float] = []
        self.warned = False
        self.sums = AlumSums()

    def add(self, reg: Regularized) -> None:
        self.sums += AlumSums.of(reg)
        if reg.adv is not None and reg.adv.overflow:
            self.overflows += 1

    def row_from(self, sums: AlumSums, overflows: float) -> dict:
        """Log-row values from summed diagnostics (e.g. all-reduced over ranks) and the overflow count."""
        n, ng = sums.steps, sums.gains
        gain = sums.ascent_gain / ng if ng else None
        if gain is not None:
            self._gains.append(gain)
        return {"delta_ratio": sums.delta_ratio / n if n else 0.0, "ascent_gain": gain,
                "delta_cos_init": sums.delta_cos_init / n if n else 0.0, "adv_share": sums.adv_share / n if n else 0.0,
                "ascent_overflows": overflows}

    def row(self) -> dict:
        out = self.row_from(self.sums, self.overflows)
        self.sums = AlumSums()
        return out

    def warning(self) -> str | None:
        """A one-line warning, returned once, when the mean measured gain stays below 2 with an ascent on."""
        if self.warned or self.cfg is None or not self.cfg.active or self.cfg.steps == 0:
            return None
        if len(self._gains) < _GAIN_WARN_AFTER:
            return None
        mean = sum(self._gains) / len(self._gains)
        if mean >= GAIN_WARN_BELOW:
            return None
        self.warned = True
        return (f"warning: ALUM ascent gain {mean:.2f} < {GAIN_WARN_BELOW:g} over {len(self._gains)} measurements: "
                f"the perturbation is not adversarial (variant {self.cfg.variant!r}; see README, ALUM)")
