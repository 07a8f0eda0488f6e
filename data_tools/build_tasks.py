"""``build --tasks N``: one shard per task, each with a completion marker, so that a build resumes.

Layout for ``-o corpus/wiki --tasks 4``::

    corpus/wiki_00000.bin .idx .meta.json   shard of task 0 (what `resolve_prefixes("corpus/wiki")` finds)
    …
    corpus/wiki_00003.bin .idx .meta.json
    corpus/wiki.tasks/plan.json             inputs (path, size, mtime), settings, and each task's pieces
    corpus/wiki.tasks/00000.done …          completion markers: the shard's counts and checksums

As in huggingface/datatrove (``src/datatrove/executor/base.py`` @ f423321: ``completions/{rank:05d}`` files
written after a task's output, checked to skip finished ranks), a task writes its shard (atomically, ``.idx``
last), then its marker (atomically); a task with a marker is done and never redone; a task without one is
run again from its start, overwriting whatever a killed run left. Every task's bytes depend only on the
plan, so the result is the same whatever ran when, where, or how often.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from tqdm import tqdm

from data_tools.atomic import ensure_parent, write_json
from data_tools.build import (
    BuildResult,
    _batches,
    _remove_corpus,
    _stale_outputs,
    choose_dtype,
    encode_documents,
)
from data_tools.errors import UserError
from data_tools.executors import run_tasks
from data_tools.indexed import IndexedCorpusWriter, read_meta, shard_prefix
from data_tools.sources import BadInputPolicy
from data_tools.tasks import Piece, plan_tasks, read_pieces
from data_tools.tokenizer import load_tokenizer

PLAN_VERSION = 1


@dataclass(frozen=True)
class TaskSpec:
    """Everything one task needs (picklable: it travels to a pool process or a Ray worker)."""

    index: int
    num_tasks: int
    output: str
    pieces: tuple[Piece, ...]
    tokenizer: str
    dtype: str
    json_key: str
    skip_bad: bool
    split_sentences: bool
    meta: dict


def tasks_dir(output: str) -> Path:
    """``PREFIX.tasks``: the plan and the completion markers."""
    return Path(f"{output}.tasks")


def marker_path(output: str, k: int) -> Path:
    """The completion marker of task ``k``."""
    return tasks_dir(output) / f"{k:05d}.done"


def is_done(output: str, k: int) -> bool:
    """Task ``k`` finished: its marker and its shard's index exist."""
    return marker_path(output, k).is_file() and Path(f"{shard_prefix(output, k)}.idx").is_file()


def run_task(spec: TaskSpec) -> dict:
    """Build the shard of one task and then write its marker. Returns the marker's contents."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per task; no Rust thread pool on top
    start = time.process_time()
    tok = load_tokenizer(spec.tokenizer)
    policy = BadInputPolicy(skip=spec.skip_bad)
    prefix = shard_prefix(spec.output, spec.index)
    counts = {"documents": 0, "sentences": 0, "tokens": 0, "empty_documents": 0}
    with IndexedCorpusWriter(prefix, spec.dtype, meta=spec.meta) as w:
        for batch in _batches(read_pieces(list(spec.pieces), spec.json_key, policy)):
            for tokens, lengths in encode_documents(batch, tok, spec.split_sentences):
                if not len(lengths):
                    counts["empty_documents"] += 1
                    continue
                w.add_document(tokens, lengths)
                counts["documents"] += 1
                counts["sentences"] += len(lengths)
                counts["tokens"] += len(tokens)
    marker = dict(task=spec.index, num_tasks=spec.num_tasks, shard=prefix, skipped=policy.skipped,
                  cpu_seconds=round(time.process_time() - start, 3), **counts,
                  checksums=(read_meta(prefix) or {}).get("checksums"))
    write_json(marker_path(spec.output, spec.index), marker)
    return marker


def _plan_record(inputs: list[str], plan: list[list[Piece]], settings: dict) -> dict:
    files = []
    for p in inputs:
        st = Path(p).stat()
        files.append({"path": str(Path(p).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return {"version": PLAN_VERSION, "inputs": files, "settings": settings,
            "tasks": [[vars(piece) for piece in pieces] for pieces in plan]}


def _check_plan(output: str, record: dict, fresh: bool) -> None:
    """Write the plan, or check it against the one a previous run left (its markers are only valid for it)."""
    path = tasks_dir(output) / "plan.json"
    old = None
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None  # a plan is written atomically; an unreadable one is not ours: start over
    if old is not None and old != record and not fresh:
        what = [k for k in ("inputs", "settings", "tasks") if old.get(k) != record.get(k)] or ["version"]
        raise UserError(
            f"{path}: an earlier build of {output} used different {', '.join(what)}; its finished tasks do not "
            "fit this one. Rerun with --fresh to discard them, or choose another -o"
        )
    if old != record:
        if old is not None:  # --fresh: the markers were for the old plan
            for m in tasks_dir(output).glob("*.done"):
                m.unlink()
        write_json(path, record)


def _remove_other_layouts(output: str, num_tasks: int) -> None:
    """Corpora under ``output`` that are not this plan's shards: a single-file corpus (which
    ``resolve_prefixes`` would prefer) and shards numbered ``num_tasks`` and up from a bigger earlier build."""
    _remove_corpus(output)
    parent, name = os.path.split(output)
    pattern = re.compile(re.escape(name) + r"_(\d{5})\.idx")
    for e in os.listdir(parent or "."):
        m = pattern.fullmatch(e)
        if m and int(m.group(1)) >= num_tasks:
            _remove_corpus(os.path.join(parent, e[: -len(".idx")]))


def build_tasks(
    inputs: list[str | os.PathLike],
    tokenizer: str | os.PathLike,
    output: str | os.PathLike,
    num_tasks: int,
    task_index: int | None = None,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    dtype: str = "auto",
    json_key: str = "text",
    skip_bad: bool = False,
    split_sentences: bool = True,
    input_kind: str = "auto",
    fresh: bool = False,
    progress: bool = True,
) -> BuildResult:
    """Tokenize ``inputs`` into ``num_tasks`` shards ``OUTPUT_00000``…, one task each, resuming finished ones.

    Args:
        inputs, tokenizer, dtype, json_key, skip_bad, split_sentences, input_kind: as :func:`data_tools.build.build`.
        output: corpus prefix; shards ``OUTPUT_{k:05d}``, plan and markers in ``OUTPUT.tasks/``.
        num_tasks: how many tasks (= shards) the inputs are split into (see :mod:`data_tools.tasks`).
        task_index: run only this task (a Slurm array element); others are left alone.
        executor: ``local`` (a process pool of ``workers``) or ``ray`` (the cluster at ``address``).
        fresh: discard the markers of an earlier build with a different plan instead of refusing.

    Returns:
        a :class:`BuildResult` over all finished shards (with ``task_index``: over that one).
    """
    output = os.fspath(output)
    if not os.path.basename(output):
        raise UserError(f"-o {output!r}: expected a corpus prefix such as corpus/wiki, not a directory")
    if task_index is not None and not 0 <= task_index < num_tasks:
        raise UserError(f"--task-index {task_index}: expected 0..{num_tasks - 1} for --num-tasks {num_tasks}")
    tok = load_tokenizer(tokenizer)
    dt = choose_dtype(dtype, tok.vocab_size)
    inputs = [os.fspath(p) for p in inputs]
    # Absolute paths in the tasks: a Ray worker or an array task may start in another directory.
    plan = plan_tasks([os.path.abspath(p) for p in inputs], num_tasks, input_kind)
    meta = {
        "format": "MMIDIDX",
        "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint,
                      "path": str(Path(tok.path).resolve())},
        "splitter": f"blingfire-{version('blingfire')}" if split_sentences else "none",
        "sequence": "sentence" if split_sentences else "document",
        "inputs": inputs,
        "num_shards": num_tasks,
    }
    settings = {"tokenizer": meta["tokenizer"]["fingerprint"], "dtype": dt.name, "json_key": json_key,
                "split_sentences": split_sentences, "input_kind": input_kind, "num_tasks": num_tasks}
    ensure_parent(output)
    _check_plan(output, _plan_record(inputs, plan, settings), fresh)
    _remove_other_layouts(output, num_tasks)
    wanted = [task_index] if task_index is not None else list(range(num_tasks))
    for stale in _stale_outputs(output):  # temp files of killed runs (a concurrent array task's are
        if task_index is None:            # its own business: only the whole-build driver sweeps)
            stale.unlink(missing_ok=True)
    specs = [
        TaskSpec(k, num_tasks, os.path.abspath(output), tuple(plan[k]), os.path.abspath(tokenizer), dt.name, json_key, skip_bad,
                 split_sentences, dict(meta, shard=k, task={"index": k, "pieces": [vars(p) for p in plan[k]]}))
        for k in wanted if not is_done(output, k)
    ]
    result = BuildResult(prefixes=[])
    start = time.perf_counter()
    if len(specs) < len(wanted):
        print(f"{len(wanted) - len(specs)} of {len(wanted)} task(s) already finished ({tasks_dir(output)}); "
              f"running {len(specs)}", file=sys.stderr)
    with tqdm(total=len(specs), desc="build tasks", unit=" task", disable=not progress, file=sys.stderr) as bar:
        for marker in run_tasks(run_task, specs, executor, workers, address):
            bar.update(1)
            bar.set_postfix_str(f"task {marker['task']}: {marker['tokens']:,} tokens", refresh=False)
    for k in wanted:
        m = json.loads(marker_path(output, k).read_text(encoding="utf-8"))
        result.prefixes.append(shard_prefix(output, k))
        result.shard_documents.append(m["documents"])
        result.documents += m["documents"]
        result.sentences += m["sentences"]
        result.tokens += m["tokens"]
        result.empty_documents += m["empty_documents"]
        result.skipped += m["skipped"]
    if task_index is None and result.documents == 0:
        raise UserError(f"{', '.join(inputs)}: no document produced any token (empty input?)")
    result.bytes = result.tokens * dt.itemsize
    result.elapsed = time.perf_counter() - start
    return result
