"""build --tasks: the plan reads every document once for any N, shards resume after kill -9, Slurm-style
single tasks in any order give the same bytes, multistream dumps read in pieces equal the whole dump."""

from __future__ import annotations

import bz2
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from process_kit import sigkill_when

from data_tools.build import build
from data_tools.build_tasks import build_tasks, marker_path
from data_tools.errors import UserError
from data_tools.extract import extract_wiki
from data_tools.indexed import IndexedCorpus, resolve_prefixes
from data_tools.merge import merge
from data_tools.sources import BadInputPolicy, read_documents
from data_tools.sources.multistream import read_layout, write_multistream
from data_tools.sources.wiki import iter_articles
from data_tools.tasks import plan_tasks, read_pieces

ROOT = Path(__file__).resolve().parents[2]


def corpus_files(prefix) -> dict[str, bytes]:
    """Every shard's .bin/.idx/.meta.json bytes, keyed by shard number and extension."""
    out = {}
    for p in resolve_prefixes(prefix):
        for ext in ("bin", "idx", "meta.json"):
            out[f"{p[-5:]}.{ext}"] = Path(f"{p}.{ext}").read_bytes()
    return out


@pytest.mark.parametrize("n", [1, 2, 5, 17, 400])
def test_plan_reads_every_document_once(tmp_path, wiki_docs, small_docs, n):
    text = tmp_path / "plain.txt"
    text.write_text("First document.\n\nSecond one here.\n", encoding="utf-8")
    inputs = [wiki_docs, text, small_docs]
    expected = [d.text for d in read_documents(inputs)]
    plan = plan_tasks(inputs, n)
    assert len(plan) == n
    got = [d.text for task in plan for d in read_pieces(task, "text", BadInputPolicy())]
    assert got == expected
    if n in (2, 5):  # a large JSONL is cut: more than one task reads it
        assert sum(any(p.path == str(wiki_docs) for p in task) for task in plan) > 1


@pytest.fixture(scope="module")
def multistream(tmp_path_factory, wiki_dump):
    """The embedded dump rewritten as a multistream dump (10 pages per stream) with its index."""
    d = tmp_path_factory.mktemp("ms")
    dump, index = d / "sample-multistream.xml.bz2", d / "sample-multistream-index.txt.bz2"
    streams = write_multistream(bz2.decompress(wiki_dump.read_bytes()), dump, index, pages_per_stream=10)
    assert streams > 10
    return dump, index


def test_multistream_equals_single_stream(tmp_path, wiki_dump, wiki_extract, multistream):
    dump, index = multistream
    layout = read_layout(dump, index)
    assert layout.header_end == layout.offsets[0] > 0
    out = tmp_path / "ms.jsonl"
    r = extract_wiki(dump, out, workers=2, progress=False)  # index found beside the dump
    single_path, single = wiki_extract
    a = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    b = [json.loads(line) for line in single_path.read_text(encoding="utf-8").splitlines()]
    assert len(a) == len(b) == single.documents
    for x, y in zip(a, b):
        assert x == y
    assert (r.pages, r.redirects, r.other_namespace) == (single.pages, single.redirects, single.other_namespace)
    # Pieces of a plan, in order, are the whole dump's pages.
    whole = [p.id for p in iter_articles(wiki_dump)]
    for n in (3, 50):
        assert [p.id for p in read_pieces(plan_tasks([dump], n)[0] + [q for t in plan_tasks([dump], n)[1:] for q in t],
                                          "text", BadInputPolicy())] == whole


def test_export_without_siteinfo_uses_default_namespaces(tmp_path):
    xml = ("<mediawiki><page><title>Template:Box</title><id>1</id><revision><text>{{{1}}}</text></revision></page>"
           "<page><title>Paris</title><id>2</id><revision><text>'''Paris''' is a [[city]]. "
           "[[File:P.jpg|thumb|A view]] [[Category:Cities]]</text></revision></page></mediawiki>")
    path = tmp_path / "export.xml"
    path.write_text(xml, encoding="utf-8")
    stats: dict = {}
    docs = list(read_documents(path))
    assert [d.text for d in docs] == ["Paris is a city."]
    list(iter_articles(path, stats=stats))
    assert stats["other_namespace"] == 1


@pytest.mark.slow
def test_build_from_multistream_dump_in_tasks_equals_one_build(tmp_path, wiki_dump, multistream, wordpiece_dir):
    dump, _ = multistream
    build_tasks([dump], wordpiece_dir, tmp_path / "t" / "wiki", num_tasks=4, workers=2, progress=False)
    assert len(resolve_prefixes(tmp_path / "t" / "wiki")) == 4
    merge([tmp_path / "t" / "wiki"], tmp_path / "m" / "wiki")
    build([wiki_dump], wordpiece_dir, tmp_path / "one" / "wiki", progress=False)
    for ext in ("bin", "idx"):
        assert (tmp_path / "m" / f"wiki.{ext}").read_bytes() == (tmp_path / "one" / f"wiki.{ext}").read_bytes()


def test_slurm_style_tasks_in_any_order_equal_local_pool(tmp_path, small_docs, wiki_docs, wordpiece_dir):
    inputs = [wiki_docs, small_docs]
    pool = tmp_path / "pool" / "c"
    build_tasks(inputs, wordpiece_dir, pool, num_tasks=5, workers=2, progress=False)
    arr = tmp_path / "array" / "c"
    for k in (3, 0, 4, 2, 1):  # what a job array might do
        r = build_tasks(inputs, wordpiece_dir, arr, num_tasks=5, task_index=k, progress=False)
        assert r.prefixes == [f"{arr}_{k:05d}"]
    assert corpus_files(arr) == corpus_files(pool)
    # A final whole-build call finds everything finished and rewrites nothing.
    before = {m: marker_path(str(arr), m).stat().st_mtime_ns for m in range(5)}
    r = build_tasks(inputs, wordpiece_dir, arr, num_tasks=5, progress=False)
    assert before == {m: marker_path(str(arr), m).stat().st_mtime_ns for m in range(5)}
    assert r.documents == sum(IndexedCorpus(p).num_documents for p in resolve_prefixes(arr))


def test_changed_plan_is_refused_then_fresh(tmp_path, small_docs, wordpiece_dir):
    out = tmp_path / "c"
    build_tasks([small_docs], wordpiece_dir, out, num_tasks=3, progress=False)
    with pytest.raises(UserError, match=r"plan.json: an earlier build .* different settings, tasks.*--fresh"):
        build_tasks([small_docs], wordpiece_dir, out, num_tasks=2, progress=False)
    build_tasks([small_docs], wordpiece_dir, out, num_tasks=2, fresh=True, progress=False)
    assert len(resolve_prefixes(out)) == 2  # the third shard of the old plan is gone
    with pytest.raises(UserError, match="--task-index 2: expected 0..1"):
        build_tasks([small_docs], wordpiece_dir, out, num_tasks=2, task_index=2, progress=False)


@pytest.fixture(scope="module")
def big_docs(tmp_path_factory, wiki_docs):
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    path.write_bytes(wiki_docs.read_bytes() * 3)
    return path


@pytest.mark.slow
def test_kill9_mid_task_build_then_rerun(tmp_path, big_docs, wordpiece_dir):
    out = tmp_path / "killed" / "wiki"
    n = 8
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "data_tools", "build", str(big_docs), "--tokenizer", str(wordpiece_dir), "-o",
           str(out), "--tasks", str(n), "--workers", "1", "-q"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    markers = out.parent / "wiki.tasks"
    sigkill_when(proc, lambda: markers.exists() and len(list(markers.glob("*.done"))) >= 2, timeout=120, poll=0.01)
    done = sorted(markers.glob("*.done"))
    assert 2 <= len(done) < n
    stamps = {m.name: (m.stat().st_mtime_ns, Path(f"{out}_{m.name[:5]}.idx").stat().st_mtime_ns) for m in done}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{len(done)} of {n} task(s) already finished" in r.stderr
    for m in done:  # finished tasks were not redone
        assert (m.stat().st_mtime_ns, Path(f"{out}_{m.name[:5]}.idx").stat().st_mtime_ns) == stamps[m.name]
    assert not list(out.parent.glob(".*.tmp")), "temporary files of the killed run were not cleaned"
    clean = tmp_path / "clean" / "wiki"
    build_tasks([big_docs], wordpiece_dir, clean, num_tasks=n, workers=2, progress=False)
    assert corpus_files(out) == corpus_files(clean)
