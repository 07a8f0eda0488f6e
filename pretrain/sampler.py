"""Rank-sharded, resumable sample order (Megatron's ``MegatronPretrainingRandomSampler`` idea).

Each epoch has one global order: a permutation of all sample ids seeded by (seed, epoch), or the identity.
It is cut into global batches of ``micro_batch × world_size``; rank ``r`` takes the ``r``-th micro-batch of
each global batch. The incomplete last global batch of an epoch is dropped, so every epoch has the same
number of steps and all ranks the same number of samples. Resuming needs only ``consumed_samples`` (global,
over all epochs): the order is a pure function of it, so a resumed run sees bit-exactly the samples it
would have seen, whatever the world size was before, provided the global batch is unchanged.

Sample ids of epoch ``e`` are yielded as ``e * total_samples + id``; ``MLMDataset[i]`` maps them back to
``(i % len, i // len)``, so the epoch reaches dynamic masking without any state in the dataset.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from data_tools.errors import UserError


class RankSampler(torch.utils.data.Sampler[int]):
    """This rank's remaining sample ids, global batch by global batch, across epochs.

    Args:
        total_samples: samples per epoch (``len(dataset)``).
        world_size: number of data-parallel ranks.
        rank: this rank (0-based).
        micro_batch: samples per rank per step.
        consumed_samples: samples already consumed by all ranks together (a multiple of the global batch).
        seed: seeds each epoch's permutation.
        shuffle: permute each epoch (False: ids in order, e.g. for evaluation).
        max_samples: stop once this many samples (global) are consumed; None: never stop.
    """

    def __init__(
        self,
        total_samples: int,
        world_size: int = 1,
        rank: int = 0,
        micro_batch: int = 1,
        consumed_samples: int = 0,
        seed: int = 1234,
        shuffle: bool = True,
        max_samples: int | None = None,
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise UserError(f"sampler: rank {rank} is not within world size {world_size}")
        if micro_batch < 1:
            raise UserError(f"micro_batch: got {micro_batch}, expected >= 1")
        self.global_batch = micro_batch * world_size
        if total_samples < self.global_batch:
            raise UserError(
                f"the dataset has {total_samples} samples, fewer than one global batch "
                f"(micro_batch {micro_batch} × world size {world_size} = {self.global_batch})"
            )
        if consumed_samples < 0 or consumed_samples % self.global_batch:
            raise UserError(
                f"consumed_samples={consumed_samples} is not a multiple of the global batch {self.global_batch} "
                "(was the global batch size changed between runs?)"
            )
        self.total_samples = total_samples
        self.world_size = world_size
        self.rank = rank
        self.micro_batch = micro_batch
        self.consumed_samples = consumed_samples
        self.seed = seed
        self.shuffle = shuffle
        self.max_samples = max_samples
        self.per_epoch = total_samples - total_samples % self.global_batch

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The global order of sample ids in ``epoch`` (before sharding; only the first ``per_epoch`` used)."""
        if not self.shuffle:
            return np.arange(self.total_samples, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(self.total_samples).astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        consumed = self.consumed_samples
        while self.max_samples is None or consumed < self.max_samples:
            epoch, offset = divmod(consumed, self.per_epoch)
            order = self.epoch_order(epoch)[: self.per_epoch]
            batches = order.reshape(-1, self.world_size, self.micro_batch)[offset // self.global_batch :]
            for batch in batches:
                if self.max_samples is not None and consumed >= self.max_samples:
                    return
                for i in batch[self.rank]:
                    yield int(epoch * self.total_samples + i)
                consumed += self.global_batch

    def __len__(self) -> int:
        if self.max_samples is None:
            raise TypeError("RankSampler without max_samples is endless")
        steps = -(-max(self.max_samples - self.consumed_samples, 0) // self.global_batch)
        return steps * self.micro_batch
