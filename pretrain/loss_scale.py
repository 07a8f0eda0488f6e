"""Dynamic loss scaling for ALUM's inner ascent.

In float16 the δ-gradient of the ascent loss underflows to zero (the loss is tiny because δ starts at
σ = 1e-5), so the loss is multiplied by ``scale`` before ``torch.autograd.grad`` and the gradient divided by
it in float32. A non-finite gradient means the scale was too large: the ascent step is skipped, the scale
backed off and the event counted. After ``growth_interval`` clean steps the scale grows again. This mirrors
``torch.amp.GradScaler``'s policy but acts on one ``autograd.grad`` call instead of an optimizer, so it
works with or without DeepSpeed, in pre-training and fine-tuning alike.

One owner: under DeepSpeed fp16 the engine's loss scale SEEDS this scale once (:meth:`seed`, called by
``pretrain.engine.sync_ascent_scale``); from then on only this scaler's own backoff and growth change it, so a
backoff on an ascent overflow survives the next DeepSpeed step (overwriting it every micro-step, as an earlier
version did, undid every backoff).
"""

from __future__ import annotations

import math


class AscentScaler:
    """Loss scale for the ascent gradient.

    Args:
        init_scale: starting scale.
        backoff: factor applied on overflow (0 < backoff < 1).
        growth: factor applied after ``growth_interval`` steps without overflow (>= 1).
        growth_interval: clean steps between growths.
        min_scale: the scale never goes below this.
        max_scale: the scale never grows above this (keeps float32 far from inf).
    """

    def __init__(
        self,
        init_scale: float = 2.0**16,
        backoff: float = 0.5,
        growth: float = 2.0,
        growth_interval: int = 1000,
        min_scale: float = 1.0,
        max_scale: float = 2.0**24,
    ):
        if not (math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"init_scale: got {init_scale!r}, expected a finite number > 0")
        if not 0 < backoff < 1:
            raise ValueError(f"backoff: got {backoff!r}, expected 0 < backoff < 1")
        if growth < 1:
            raise ValueError(f"growth: got {growth!r}, expected >= 1")
        if growth_interval < 1:
            raise ValueError(f"growth_interval: got {growth_interval!r}, expected >= 1")
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"min_scale/max_scale: got {min_scale!r}/{max_scale!r}, expected 0 < min <= max")
        self.backoff = backoff
        self.growth = growth
        self.growth_interval = growth_interval
        self.min_scale = min_scale
        self.max_scale = max_scale
        self._scale = float(min(max(init_scale, min_scale), max_scale))
        self.overflows = 0
        self._clean_steps = 0
        self.seeded = False

    @property
    def scale(self) -> float:
        """Current scale (settable, e.g. to DeepSpeed's loss scale)."""
        return self._scale

    @scale.setter
    def scale(self, value: float) -> None:
        value = float(value)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"scale: got {value!r}, expected a finite number > 0")
        self._scale = value

    def seed(self, value: float) -> bool:
        """Start from ``value`` (e.g. DeepSpeed's loss scale) unless already seeded; True if it was applied."""
        if self.seeded:
            return False
        self.scale = min(max(float(value), self.min_scale), self.max_scale)
        self.seeded = True
        return True

    def update(self, overflow: bool) -> None:
        """Record one ascent gradient: back off and count on overflow, otherwise maybe grow.

        Args:
            overflow: True if the unscaled gradient had an inf or NaN.
        """
        if overflow:
            self.overflows += 1
            self._clean_steps = 0
            self._scale = max(self._scale * self.backoff, self.min_scale)
            return
        self._clean_steps += 1
        if self._clean_steps >= self.growth_interval:
            self._clean_steps = 0
            self._scale = min(self._scale * self.growth, self.max_scale)

    def state_dict(self) -> dict:
        """Scale, overflow count and growth tracker, for checkpoints."""
        return {"scale": self._scale, "overflows": self.overflows, "clean_steps": self._clean_steps,
                "seeded": self.seeded}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.scale = state["scale"]
        self.overflows = int(state["overflows"])
        self._clean_steps = int(state.get("clean_steps", 0))
        self.seeded = bool(state.get("seeded", True))

    def __repr__(self) -> str:
        return f"AscentScaler(scale={self._scale:g}, overflows={self.overflows})"
