"""Resumable stages for the demo: each stage's output appears complete or not at all.

A stage writes into ``<out>/<name>.partial`` and is renamed to ``<out>/<name>`` when its command succeeds;
its marker ``<out>/.stages/<name>.json`` (elapsed time, command) is written last, atomically. A rerun skips a
stage whose marker and output both exist, and throws away a ``.partial`` left by an interrupted run. A stage
that resumes on its own (pre-training from its last checkpoint) may keep its directory in place instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from data_tools.atomic import write_json
from data_tools.errors import UserError


@dataclass
class Stage:
    """One step of the pipeline.

    Args:
        name: directory name of its output under the demo's output folder (also the marker's name).
        title: what the progress line says.
        command: argv, built from the stage's output directory (the ``.partial`` one while it runs).
        in_place: the command writes ``<out>/<name>`` directly and resumes by itself if interrupted.
    """

    name: str
    title: str
    command: Callable[[Path], list[str]]
    in_place: bool = False


@dataclass
class StageResult:
    name: str
    title: str
    path: Path
    seconds: float
    skipped: bool


class Runner:
    """Runs stages in order under ``out``, logging each command's output to ``<out>/logs/<name>.log``."""

    def __init__(self, out: Path, echo: Callable[[str], None] = print, stream: bool = True):
        self.out = out
        self.echo = echo
        self.stream = stream
        self.markers = out / ".stages"
        self.markers.mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(exist_ok=True)
        self.results: list[StageResult] = []

    def run(self, stage: Stage) -> Path:
        final = self.out / stage.name
        marker = self.markers / f"{stage.name}.json"
        if marker.exists() and final.exists():
            done = json.loads(marker.read_text())
            self.echo(f"[skip] {stage.title}: done in a previous run ({done['seconds']:.1f}s) -> {final}")
            self.results.append(StageResult(stage.name, stage.title, final, done["seconds"], True))
            return final
        work = final if stage.in_place else self.out / f"{stage.name}.partial"
        if not stage.in_place:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)  # an output without its marker is not trusted
        if stage.in_place:
            work.mkdir(parents=True, exist_ok=True)
        argv = stage.command(work)
        self.echo(f"[run ] {stage.title}\n       $ {' '.join(argv)}")
        start = time.perf_counter()
        self._execute(stage, argv)
        seconds = time.perf_counter() - start
        if not stage.in_place:
            work.mkdir(exist_ok=True)  # a stage that only checks (verify) leaves just its log
            os.replace(work, final)
        write_json(marker, {"seconds": seconds, "command": argv})
        self.echo(f"[done] {stage.title} in {seconds:.1f}s -> {final}")
        self.results.append(StageResult(stage.name, stage.title, final, seconds, False))
        return final

    def _execute(self, stage: Stage, argv: list[str]) -> None:
        log_path = self.out / "logs" / f"{stage.name}.log"
        with open(log_path, "w", encoding="utf-8") as log:
            # The child runs in its own session so Ctrl-C reaches it once, through us, and we can wait for it.
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                assert proc.stdout is not None
                for raw in iter(lambda: proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
                    log.write(raw.decode("utf-8", "replace"))
                    log.flush()
                    if self.stream:
                        sys.stdout.buffer.write(raw)
                        sys.stdout.flush()
                rc = proc.wait()
            except KeyboardInterrupt:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                raise
        if rc != 0:
            if not self.stream:
                tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
                print("\n".join(tail), file=sys.stderr)
            raise UserError(f"stage '{stage.name}' failed (exit {rc}); its full log is {log_path}")
