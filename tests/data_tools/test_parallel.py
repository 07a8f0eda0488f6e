"""data_tools.parallel: workers leave no process behind, whether their block ends normally or fails, and a killed
worker is an error at once, not a wait for a result that never comes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from data_tools.parallel import WorkerDied, ordered_map, run_each_in_own_process, worker_pool


def _slow_square(x: int) -> int:
    time.sleep(0.05 if x == 3 else 0.0)
    return x * x


def _die_on_three(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
    time.sleep(0.01)
    return x


def _pid_after(x: int) -> tuple[int, int]:
    time.sleep(0.2 if x == 0 else 0.0)  # the first task finishes last
    return x, os.getpid()


def _fail_on_two(x: int) -> int:
    if x == 2:
        raise ValueError(f"bad item {x}")
    return x


def _workers(pool) -> list:
    return list(pool._processes.values())


def test_a_finished_block_drains_the_pool_in_order():
    with worker_pool(2) as pool:
        assert list(ordered_map(pool, _slow_square, range(8), in_flight=3)) == [x * x for x in range(8)]
        procs = _workers(pool)
    assert len(procs) == 2 and not [p for p in procs if p.is_alive()]


def test_an_error_in_the_block_kills_busy_workers():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="reader failed"), worker_pool(2) as pool:
        pending = pool.submit(time.sleep, 30)  # a worker busy far longer than the test
        while not pending.running():
            time.sleep(0.01)
        procs = _workers(pool)
        raise RuntimeError("reader failed")
    assert not [p for p in procs if p.is_alive()]  # killed, not waited for (30 s)
    assert time.monotonic() - start < 20


def test_a_killed_pool_worker_is_an_error_not_a_hang():
    start = time.monotonic()
    with pytest.raises(WorkerDied, match="worker process died"), worker_pool(2) as pool:
        list(ordered_map(pool, _die_on_three, range(50), in_flight=4))
    assert time.monotonic() - start < 60


def test_each_task_gets_its_own_process_and_results_come_as_they_finish():
    out = list(run_each_in_own_process(_pid_after, range(4), workers=2))
    assert sorted(x for x, _ in out) == [0, 1, 2, 3]
    assert out[-1][0] == 0  # the slow first task is yielded last
    pids = {pid for _, pid in out}
    assert len(pids) == 4 and os.getpid() not in pids


def test_a_task_error_is_raised_with_the_workers_traceback():
    with pytest.raises(ValueError, match="bad item 2") as info:
        list(run_each_in_own_process(_fail_on_two, range(4), workers=2))
    assert "_fail_on_two" in str(info.value.__cause__)


def test_a_killed_task_process_is_an_error_naming_the_signal():
    with pytest.raises(WorkerDied, match="killed by SIGKILL"):
        list(run_each_in_own_process(_die_on_three, range(6), workers=2))


def test_closing_early_kills_the_running_tasks():
    gen = run_each_in_own_process(time.sleep, [0, 30, 30], workers=3)
    assert next(gen) is None  # the 0 s sleep
    assert len(mp.active_children()) == 2  # the two 30 s sleeps
    start = time.monotonic()
    gen.close()
    assert not mp.active_children() and time.monotonic() - start < 10
