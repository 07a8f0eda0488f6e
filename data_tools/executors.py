"""Run independent tasks: a local process pool (default) or a Ray cluster. No scheduler of our own: the
pool or Ray decides where and when each task runs; Slurm job arrays run one task per array element and
need no executor at all (``build --task-index``).

A task is a picklable ``func(arg) -> dict``; results are yielded as tasks finish (any order). The caller
makes each task's output and completion marker atomic, so a task killed anywhere is simply run again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from data_tools.errors import UserError
from data_tools.parallel import run_each_in_own_process

EXECUTORS = ("local", "ray")


def run_local(func: Callable[[Any], dict], args: list, workers: int) -> Iterator[dict]:
    """Run ``func`` on each arg in a pool of ``workers`` processes (in this process if 1)."""
    if workers <= 1 or len(args) <= 1:
        for a in args:
            yield func(a)
        return
    # A fresh process per task: one task's memory (a large shard's index) never adds to the next one's.
    yield from run_each_in_own_process(func, args, min(workers, len(args)))


def run_ray(func: Callable[[Any], dict], args: list, address: str | None) -> Iterator[dict]:
    """Run ``func`` on each arg as one Ray task (1 CPU each) on the cluster at ``address``.

    The driver only submits and waits (as datatrove's RayPipelineExecutor does, huggingface/datatrove
    ``src/datatrove/executor/ray.py`` @ 2e74705: one ``ray.remote`` call per task, ``ray.wait`` for results);
    the outputs go to a filesystem every node sees (the ``-o`` path). Every node must be able to import
    ``data_tools`` and read the inputs and tokenizer at the same paths.
    """
    if address and address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost"):
        # A cluster on loopback (one machine, e.g. the tests'): Ray 2.60 rewrites 127.0.0.1 to the machine's
        # outward IP before dialling (ray/_private/services.py resolve_ip_for_localhost), which a cluster
        # listening on 127.0.0.1 never answers, unless its single-machine mode is on. Read at import.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray: Ray is not installed (pip install ray==2.60.0)") from None
    try:
        ray.init(address=address or "auto", log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"--address {address}: cannot connect to a Ray cluster ({exc})") from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=2)(func)
        pending = [remote.remote(a) for a in args]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                cause = exc.as_instanceof_cause()
                if isinstance(cause, UserError):
                    raise UserError(str(cause)) from None
                raise
    finally:
        for ref in locals().get("pending", []):
            ray.cancel(ref, force=True)
        ray.shutdown()  # disconnects this driver; the cluster keeps running


def run_tasks(func: Callable[[Any], dict], args: list, executor: str = "local", workers: int | None = None,
              address: str | None = None) -> Iterator[dict]:
    """Dispatch to :func:`run_local` or :func:`run_ray`."""
    if executor == "local":
        if address:
            raise UserError("--address is for --executor ray")
        return run_local(func, args, workers or min(len(args), os.cpu_count() or 1))
    if executor == "ray":
        return run_ray(func, args, address)
    raise UserError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
