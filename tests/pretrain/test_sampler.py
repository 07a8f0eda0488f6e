"""RankSampler: disjoint, covering ranks; bit-exact resume; epochs numbered for dynamic masking."""

from __future__ import annotations

import itertools

import pytest

from data_tools.errors import UserError
from pretrain.sampler import RankSampler


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_are_disjoint_and_cover_an_epoch(shuffle):
    total, world, micro = 103, 4, 3  # 103 % 12 = 7 samples dropped per epoch
    per_rank = (total // (world * micro)) * micro
    shards = [_take(RankSampler(total, world, r, micro, seed=3, shuffle=shuffle), per_rank) for r in range(world)]
    ids = [i for shard in shards for i in shard]
    assert len(ids) == len(set(ids)) == total - total % (world * micro)
    assert all(0 <= i < total for i in ids)
    if not shuffle:
        assert shards[1][:micro] == [3, 4, 5]  # rank 1 takes the second micro-batch of each global batch


def test_resume_gives_the_same_remaining_sequence_on_every_rank():
    total, world, micro = 50, 2, 4
    for rank in range(world):
        full = _take(RankSampler(total, world, rank, micro, seed=9), 200)  # crosses several epochs
        for steps_done in (0, 1, 5, 6, 13):
            resumed = RankSampler(total, world, rank, micro, consumed_samples=steps_done * world * micro, seed=9)
            assert _take(resumed, 200 - steps_done * micro) == full[steps_done * micro:]


def test_epochs_are_reshuffled_and_numbered():
    total = 20
    ids = _take(RankSampler(total, 1, 0, 4, seed=1), 40)
    first, second = ids[:20], ids[20:]
    assert sorted(first) == list(range(20)) and sorted(i - 20 for i in second) == list(range(20))
    assert [i - 20 for i in second] != first  # a new order each epoch


def test_max_samples_and_len():
    sampler = RankSampler(100, 2, 1, 5, consumed_samples=20, max_samples=60)
    ids = list(sampler)
    assert len(ids) == len(sampler) == 20


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="not a multiple of the global batch"):
        RankSampler(100, 2, 0, 4, consumed_samples=12)
    with pytest.raises(UserError, match="fewer than one global batch"):
        RankSampler(5, 2, 0, 4)
    with pytest.raises(UserError, match="rank 2"):
        RankSampler(100, 2, 2, 4)
