"""Worker pools that always end cleanly, and an ordered parallel map with a bounded number of tasks in flight.

``Pool.imap`` hands the whole input to a feeder thread, which reads it as fast as it can: with a fast reader
(XML, JSONL) and slower workers (wikitext parsing, tokenizing) the queue, and memory, grow with the input.
Here at most ``in_flight`` tasks exist at once, so memory stays flat however large the dump or corpus.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.pool import Pool
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def worker_pool(workers: int, initializer: Callable | None = None, initargs: tuple = (),
                maxtasksperchild: int | None = None) -> Iterator[Pool]:
    """A fork pool of ``workers`` processes: drained (close + join) when the block ends normally, terminated on
    an error, an interrupt or an abandoned generator.

    Fork: the children start with the parent's imports done (tokenizer, parser). Not terminate() after a
    finished run: with ``maxtasksperchild`` the pool's handler thread may be forking a replacement worker while
    terminate() holds the task queue's lock; that worker never gets the lock and terminate()'s join waits for it
    forever (seen as a hung test). close() lets idle workers exit cleanly.
    """
    pool = mp.get_context("fork").Pool(workers, initializer=initializer, initargs=initargs,
                                       maxtasksperchild=maxtasksperchild)
    try:
        yield pool
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()


def ordered_map(pool: Pool, func: Callable[[T], R], items: Iterable[T], in_flight: int) -> Iterator[R]:
    """Yield ``func(item)`` for each item, in input order, computed in ``pool``.

    Args:
        pool: a multiprocessing pool.
        func: a picklable function.
        items: the inputs, consumed lazily.
        in_flight: most tasks submitted and not yet yielded (e.g. 2-4 per worker).
    """
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.apply_async(func, (item,)))
        if len(pending) >= in_flight:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()
