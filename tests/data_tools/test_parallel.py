"""data_tools.parallel: a worker pool leaves no process behind, whether its block ends normally or fails."""

from __future__ import annotations

import time

import pytest

from data_tools.parallel import ordered_map, worker_pool


def _slow_square(x: int) -> int:
    time.sleep(0.05 if x == 3 else 0.0)
    return x * x


def _workers_alive(pool) -> list:
    return [p for p in pool._pool if p.is_alive()]


def test_a_finished_block_drains_the_pool_in_order():
    with worker_pool(2) as pool:
        assert list(ordered_map(pool, _slow_square, range(8), in_flight=3)) == [x * x for x in range(8)]
    assert not _workers_alive(pool)


def test_an_error_in_the_block_terminates_the_workers():
    with pytest.raises(RuntimeError, match="reader failed"), worker_pool(2) as pool:
        pending = pool.apply_async(time.sleep, (30,))  # a worker busy far longer than the test
        raise RuntimeError("reader failed")
    assert not _workers_alive(pool) and not pending.ready()
