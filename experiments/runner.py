"""Run the study's jobs on a pool of worker processes, in dependency order, each job once.

A job is one call of a project CLI (``pretrain train``, ``pretrain export``, ``finetune classify``,
``finetune attack``). Exports, fine-tuning runs and attacks are made in-process through the CLI's
``main(argv)``, so that a worker pays for importing torch and transformers once rather than once per job
(about 10 s each on the 2-core machine); ``pretrain train`` runs as its own process (DeepSpeed's
communication state lives as long as the process, and a second engine in one process fails). Each
job's output (stdout, stderr, progress bars) goes to ``logs/<job>.log``; a marker ``.done/<job>.json``
(wall and CPU seconds, the argv) is written last, atomically, so a rerun skips finished jobs and redoes an
interrupted one from scratch. Every job seeds what it uses and runs with a fixed number of torch threads,
so its numbers do not depend on which worker ran it or what ran before.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from data_tools.atomic import write_json
from data_tools.errors import UserError
from data_tools.parallel import kill_workers


@dataclass
class Job:
    """One CLI call: ``tool`` is ``pretrain`` or ``finetune``; ``argv`` its arguments.

    ``outputs`` are removed before the job runs (a half-written run directory is not resumed: the study
    wants every run straight). ``prepare`` runs in the parent just before submission (e.g. writes a config).
    """

    id: str
    tool: str
    argv: list[str]
    deps: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    prepare: Callable[[], None] | None = None
    weight: float = 1.0  # rough cost, to start long jobs first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_worker(threads: int, env: dict[str, str]) -> None:
    # Each worker leads its own process group (with the pretrain processes it starts), so that an interrupted
    # study can stop a worker and everything under it at once.
    os.setpgrp()
    os.environ.update(env)
    import torch

    torch.set_num_threads(threads)
    import finetune.__main__  # noqa: F401
    import pretrain.__main__  # noqa: F401  (pay the imports once per worker)


def _execute(tool: str, argv: list[str], log_path: str, threads: int) -> dict:
    """Run one CLI in this worker with its stdout/stderr in ``log_path``; returns wall and CPU seconds."""
    import torch

    torch.set_num_threads(threads)
    # A process group of one still binds a TCP store: a free port per job (several workers, other users).
    os.environ["MASTER_PORT"] = str(_free_port())
    saved = os.dup(1), os.dup(2)
    with open(log_path, "w", encoding="utf-8") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        t0, c0, r0 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
        error = None
        try:
            if tool == "pretrain" and argv[:1] == ["train"]:
                # DeepSpeed keeps its communication backend for the life of a process: a second engine in the
                # same process fails, so training runs as its own process (exactly the CLI a user runs).
                env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                rc = subprocess.run([sys.executable, "-m", "pretrain", *argv], stdout=log, stderr=log,
                                    env=env).returncode
                if rc != 0:
                    error = f"python -m pretrain {' '.join(argv)} exited with {rc}"
            else:
                from finetune.__main__ import main as finetune_main
                from pretrain.__main__ import main as pretrain_main

                (pretrain_main if tool == "pretrain" else finetune_main)(list(argv))
        except UserError as exc:
            error = f"error: {exc}"
        except BaseException as exc:  # a bug in a job is reported with its traceback, the study goes on
            import traceback

            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}"
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0 + child, "error": error}


def _kill_workers(pool: cf.ProcessPoolExecutor) -> None:
    kill_workers(pool, process_groups=True)  # each worker leads a group: its tools' children die with it
    pool.shutdown(wait=False, cancel_futures=True)


class Runner:
    """Runs jobs under ``out`` with ``workers`` processes of ``threads`` torch threads each."""

    def __init__(self, out: Path, workers: int, threads: int, env: dict[str, str] | None = None,
                 echo: Callable[[str], None] = print):
        self.out, self.workers, self.threads, self.env, self.echo = out, workers, threads, env or {}, echo
        self.ran = 0  # jobs run (not skipped) by the last run()
        (out / ".done").mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(exist_ok=True)

    def marker(self, job_id: str) -> Path:
        return self.out / ".done" / f"{job_id.replace('/', '__')}.json"

    def done(self, job_id: str) -> dict | None:
        path = self.marker(job_id)
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def run(self, jobs: list[Job]) -> dict[str, dict]:
        """Run every job not already done; returns ``job id -> marker`` for all of them.

        Raises:
            UserError: when a job fails (after the jobs already running have finished), naming its log.
        """
        by_id = {j.id: j for j in jobs}
        results = {j.id: m for j in jobs if (m := self.done(j.id)) is not None}
        todo = [j for j in jobs if j.id not in results]
        self.ran = len(todo)
        if results:
            self.echo(f"[skip] {len(results)} job(s) finished in an earlier run")
        total, finished, start = len(todo), 0, time.perf_counter()
        failed: list[str] = []
        ctx = mp.get_context("spawn")
        pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                      initargs=(self.threads, self.env))
        try:
            running: dict[cf.Future, Job] = {}
            while todo or running:
                ready = [j for j in todo if all(d in results for d in j.deps)] if not failed else []
                ready.sort(key=lambda j: -j.weight)
                for job in ready[: max(0, self.workers - len(running))]:
                    todo.remove(job)
                    for path in job.outputs:
                        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                    if job.prepare is not None:
                        job.prepare()
                    log = self.out / "logs" / f"{job.id.replace('/', '__')}.log"
                    running[pool.submit(_execute, job.tool, job.argv, str(log), self.threads)] = job
                if not running:
                    if failed or todo:
                        break
                    continue
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    job = running.pop(fut)
                    res = fut.result()
                    finished += 1
                    if res["error"]:
                        failed.append(job.id)
                        self.echo(f"[fail] {job.id}: {res['error']} (log: {self._log(job)})")
                        continue
                    marker = {"seconds": res["seconds"], "cpu_seconds": res["cpu_seconds"],
                              "tool": job.tool, "argv": job.argv}
                    write_json(self.marker(job.id), marker)
                    results[job.id] = marker
                    elapsed = time.perf_counter() - start
                    self.echo(f"[{finished}/{total}] {job.id} {res['seconds']:.1f}s "
                              f"(elapsed {elapsed / 60:.1f} min)")
        except BaseException:
            # Ctrl-C / SIGTERM: stop every worker and the training processes it started; their jobs have no
            # marker, so a rerun redoes them.
            _kill_workers(pool)
            raise
        pool.shutdown()
        if failed:
            raise UserError(f"{len(failed)} job(s) failed, first {failed[0]}; see {self._log(by_id[failed[0]])}")
        missing = [j.id for j in jobs if j.id not in results]
        if missing:
            raise UserError(f"jobs never became ready (missing dependency): {missing[:3]}")
        return results

    def _log(self, job: Job) -> Path:
        return self.out / "logs" / f"{job.id.replace('/', '__')}.log"
