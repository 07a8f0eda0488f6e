"""Ordered parallel map with a bounded number of tasks in flight.

``Pool.imap`` hands the whole input to a feeder thread, which reads it as fast as it can: with a fast reader
(XML, JSONL) and slower workers (wikitext parsing, tokenizing) the queue, and memory, grow with the input.
Here at most ``in_flight`` tasks exist at once, so memory stays flat however large the dump or corpus.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.pool import Pool
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


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
