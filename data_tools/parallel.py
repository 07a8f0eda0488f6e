"""Worker processes that always end cleanly and never leave the caller waiting on a dead one.

- ``worker_pool`` + ``ordered_map``: a pool of forked workers (started with an initializer) and an ordered map
  with a bounded number of tasks in flight. ``Pool.imap`` hands the whole input to a feeder thread, which reads it
  as fast as it can: with a fast reader (XML, JSONL) and slower workers (wikitext parsing, tokenizing) the queue,
  and memory, grow with the input. Here at most ``in_flight`` tasks exist at once, so memory stays flat however
  large the dump or corpus.
- ``run_each_in_own_process``: independent tasks, each in a new process, as they finish.

Both raise ``WorkerDied`` when a worker is killed (the kernel's out-of-memory killer, a stray ``kill -9``).
``multiprocessing.Pool`` would replace the worker and wait for the lost task's result forever (seen: a build
hung for 15 minutes in CI after an OOM kill). ``concurrent.futures.ProcessPoolExecutor`` notices the death, so
the pool is one. A fresh process per task is started here directly: the executor's ``max_tasks_per_child``
refuses the fork start method (each task would re-import everything under spawn or forkserver), it can stop
running tasks only through its private worker map, and its report of a death does not say which signal.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
import os
import signal
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import wait
from typing import TypeVar

from data_tools.errors import UserError

T = TypeVar("T")
R = TypeVar("R")

KILL_HINT = "out of memory? completed outputs stay, partial ones are removed: run the same command again to go on"


class WorkerDied(UserError):
    """A worker process ended without a result (killed by a signal or exited): one line, no traceback."""


class RemoteTraceback(Exception):
    """The worker's formatted traceback, attached as ``__cause__`` of the exception it raised."""


def _exit_text(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


def kill_workers(pool: ProcessPoolExecutor, process_groups: bool = False) -> None:
    """SIGKILL a ``ProcessPoolExecutor``'s workers (with ``process_groups``, the group each one leads).

    The executor can cancel queued tasks but not stop running ones, and no public API lists its workers
    (Python 3.14 adds ``kill_workers``); ``_processes`` is the pid -> process map it keeps.
    """
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if process_groups:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()


@contextlib.contextmanager
def worker_pool(workers: int, initializer: Callable | None = None, initargs: tuple = ()
                ) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` forked processes: drained when the block ends normally; on an error, an interrupt or
    an abandoned generator, queued tasks are cancelled and busy workers killed.

    Fork: the children start with the parent's imports done (tokenizer, parser); the executor forks all of them
    before it starts its own thread.
    """
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=initializer,
                               initargs=initargs)
    try:
        yield pool
    except BaseException:
        kill_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def ordered_map(pool: ProcessPoolExecutor, func: Callable[[T], R], items: Iterable[T], in_flight: int
                ) -> Iterator[R]:
    """Yield ``func(item)`` for each item, in input order, computed in ``pool``.

    Args:
        pool: from ``worker_pool``.
        func: a picklable function.
        items: the inputs, consumed lazily.
        in_flight: most tasks submitted and not yet yielded (e.g. 2-4 per worker).
    Raises:
        WorkerDied: a worker was killed; the pool is then unusable.
    """
    pending: collections.deque[Future] = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(func, item))  # raises too once the pool knows a worker died
            if len(pending) >= in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        raise WorkerDied(f"a worker process died ({KILL_HINT})") from None


def _run_child(send, func: Callable, arg) -> None:
    try:
        reply = (True, func(arg), "")
    except BaseException as exc:  # noqa: BLE001 - the parent re-raises it
        reply = (False, exc, traceback.format_exc())
    try:
        send.send(reply)
    except Exception as exc:  # an unpicklable result or exception: say so rather than die without a word
        send.send((False, RuntimeError(f"{getattr(func, '__name__', func)!s}: cannot send its result to the parent ({exc})"),
                   traceback.format_exc()))
    send.close()


def run_each_in_own_process(func: Callable[[T], R], args: Iterable[T], workers: int) -> Iterator[R]:
    """Yield ``func(arg)`` for each arg, in the order they finish, each computed in a new forked process (so one
    task's memory never adds to the next one's), at most ``workers`` at a time.

    An exception in a task is re-raised here with the worker's traceback as its cause. On any error, or when the
    caller stops iterating, the running processes are killed.

    Raises:
        WorkerDied: a process ended without sending its result.
    """
    ctx = mp.get_context("fork")
    todo = collections.deque(args)
    running: dict = {}  # the result pipe's receiving end -> its process
    try:
        while todo or running:
            while todo and len(running) < workers:
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_run_child, args=(send, func, todo.popleft()), daemon=True)
                proc.start()
                send.close()  # only the child writes; EOF on recv then means the child is gone
                running[recv] = proc
            for recv in wait(list(running)):
                proc = running.pop(recv)
                try:
                    ok, value, remote_tb = recv.recv()
                except EOFError:
                    proc.join()
                    raise WorkerDied(f"a task's process ended without a result ({_exit_text(proc.exitcode)}; "
                                     f"{KILL_HINT})") from None
                finally:
                    recv.close()
                proc.join()
                if not ok:
                    raise value from RemoteTraceback(remote_tb)
                yield value
    finally:
        for proc in running.values():
            proc.kill()
        for recv, proc in running.items():
            proc.join()
            recv.close()
