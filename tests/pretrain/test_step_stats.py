"""StepStats: a step's sums by name, added over micro-batches and steps, packed for one all-reduce."""

from __future__ import annotations

import torch

from pretrain.alum_stats import AlumSums
from pretrain.model import PretrainOutput
from pretrain.step_stats import StepStats


def _out(loss: float, alum: AlumSums | None, overflow: int = 0) -> PretrainOutput:
    t = torch.tensor
    return PretrainOutput(loss=t(loss), mlm_loss=t(loss - 1), adv_loss=t(0.25), nsp_loss=t(0.0),
                          overflow=t(overflow), masked_correct=t(3), masked_count=t(5), alum_stats=alum)


def test_sums_by_name_and_one_packed_tensor():
    step = StepStats.zeros("cpu")
    step.add(_out(2.0, AlumSums(steps=1, delta_ratio=0.1, ascent_gain=3.0, gains=1)), tokens=10)
    step.add(_out(3.0, None, overflow=1), tokens=6)
    both = step + step
    assert float(both.loss) == 10.0 and float(both.mlm_loss) == 6.0 and float(both.overflows) == 2.0
    assert both.tokens == 32 and both.micro_batches == 4
    assert both.alum == AlumSums(steps=2, delta_ratio=0.2, ascent_gain=6.0, gains=2)
    packed = both.pack("cpu")
    assert packed.dtype == torch.float64 and packed.shape == (7 + AlumSums.size(),)
    back = StepStats.unpack(packed, both.micro_batches)
    assert back == both.all_reduce(world_size=1)  # one rank: the reduction is the identity
    assert (back.loss, back.masked_correct, back.masked_count, back.tokens) == (10.0, 12.0, 20.0, 32.0)
