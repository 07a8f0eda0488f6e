"""What one or more optimizer steps of one rank add up to, as a typed record reduced over ranks in one call.

The trainer adds each micro-batch's ``PretrainOutput`` into a :class:`StepStats`; the monitor adds steps up
until a log row is due, then :meth:`StepStats.all_reduce` sums every field over the ranks with ONE
``all_reduce`` (the fields packed into one float64 tensor, unpacked after). Everything is a sum, so that
micro-batches, steps and ranks add up; the monitor divides when it writes a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from pretrain.alum_stats import AlumSums

if TYPE_CHECKING:  # an annotation only: the monitor needs no model code
    from pretrain.model import PretrainOutput

# Fields that stay on the model's device while a step runs: reading them on the host every micro-batch
# would synchronise a GPU each time. The token count and ALUM's sums are already host numbers.
_DEVICE_FIELDS = ("loss", "mlm_loss", "adv_loss", "overflows", "masked_correct", "masked_count")


@dataclass
class StepStats:
    """Sums over micro-batches (and, once reduced, over ranks) of what the objective reports.

    Device fields are 0-d float64 tensors (on the model's device) while accumulating; floats after
    :meth:`all_reduce`.
    """

    loss: torch.Tensor | float = 0.0
    """Total loss (MLM + NSP + α·adversarial), summed over micro-batches."""
    mlm_loss: torch.Tensor | float = 0.0
    adv_loss: torch.Tensor | float = 0.0
    """l_sym at the adversarial δ (0 for micro-batches without ALUM)."""
    overflows: torch.Tensor | float = 0.0
    """ALUM ascents skipped for a non-finite gradient."""
    masked_correct: torch.Tensor | float = 0.0
    masked_count: torch.Tensor | float = 0.0
    tokens: float = 0.0
    """Non-padding input tokens."""
    alum: AlumSums = field(default_factory=AlumSums)
    micro_batches: int = 0
    """Micro-batches summed on this rank (not reduced: every rank runs the same number)."""

    @classmethod
    def zeros(cls, device: torch.device | str) -> StepStats:
        zero = torch.zeros((), dtype=torch.float64, device=device)
        return cls(**{name: zero.clone() for name in _DEVICE_FIELDS})

    def add(self, out: PretrainOutput, tokens: float) -> None:
        """Add one micro-batch: the objective's output and its count of non-padding tokens."""
        for name, value in zip(_DEVICE_FIELDS, (out.loss, out.mlm_loss, out.adv_loss, out.overflow,
                                                  out.masked_correct, out.masked_count)):
            setattr(self, name, getattr(self, name) + value.detach().to(torch.float64))
        self.tokens += tokens
        if out.alum_stats is not None:
            self.alum += out.alum_stats
        self.micro_batches += 1

    def __add__(self, other: StepStats) -> StepStats:
        summed = {name: getattr(self, name) + getattr(other, name) for name in _DEVICE_FIELDS}
        return StepStats(**summed, tokens=self.tokens + other.tokens, alum=self.alum + other.alum,
                         micro_batches=self.micro_batches + other.micro_batches)

    def pack(self, device: torch.device | str) -> torch.Tensor:
        """Every summed field in one float64 tensor on ``device``: device fields, tokens, then ALUM's sums."""
        on_device = [torch.as_tensor(getattr(self, name), dtype=torch.float64, device=device)
                     for name in _DEVICE_FIELDS]
        host = torch.tensor([self.tokens, *self.alum.values()], dtype=torch.float64, device=device)
        return torch.cat([torch.stack(on_device), host])

    @classmethod
    def unpack(cls, packed: torch.Tensor, micro_batches: int) -> StepStats:
        """The record :meth:`pack` made (host floats)."""
        values = packed.cpu().tolist()
        n = len(_DEVICE_FIELDS)
        return cls(**dict(zip(_DEVICE_FIELDS, values[:n])), tokens=values[n], alum=AlumSums(*values[n + 1 :]),
                   micro_batches=micro_batches)

    def all_reduce(self, world_size: int) -> StepStats:
        """The sums over every rank (one collective), as host floats; ``micro_batches`` counts all ranks'."""
        # On the model's device: NCCL reduces GPU tensors only, gloo CPU ones.
        packed = self.pack(self.loss.device if torch.is_tensor(self.loss) else "cpu")
        if world_size > 1:
            torch.distributed.all_reduce(packed)
        return self.unpack(packed, self.micro_batches * world_size)
