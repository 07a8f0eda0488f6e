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


def _pid_first_waits(arg: tuple[int, str]) -> tuple[int, int]:
    """Task 0 finishes only after tasks 1-3 have left their marks. With two workers task 3 starts only once task 1
    or 2 has been yielded, so task 0 cannot be the first result, however slow forks are."""
    x, marks = arg
    if x == 0:
        while len(os.listdir(marks)) < 3:
            time.sleep(0.01)
    else:
        open(os.path.join(marks, str(x)), "w").close()
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


def test_each_task_gets_its_own_process_and_results_come_as_they_finish(tmp_path):
    out = list(run_each_in_own_process(_pid_first_waits, [(x, str(tmp_path)) for x in range(4)], workers=2))
    assert sorted(x for x, _ in out) == [0, 1, 2, 3]
    assert out[0][0] != 0  # as they finish, not in input order
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
    before = set(mp.active_children())  # whatever earlier tests in this process left
    gen = run_each_in_own_process(time.sleep, [0, 30, 30], workers=3)
    assert next(gen) is None  # the 0 s sleep
    assert len(set(mp.active_children()) - before) == 2  # the two 30 s sleeps
    start = time.monotonic()
    gen.close()
    assert not set(mp.active_children()) - before and time.monotonic() - start < 10
