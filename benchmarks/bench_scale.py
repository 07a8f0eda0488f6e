"""Corpora at scale (issue 12): each figure against a peer in the same run.

- ``index``: the MLM sample index on synthetic corpora of 1×, 4× and 16× ``--base-tokens`` (µs per sample
  and peak RSS over the index size), from ``benchmarks/bench_scale_index.py`` (pretrain's side) when present;
- ``build``: ``build --tasks 1`` and ``--tasks 2`` tokens per CPU-second (whole process tree) against the raw
  tokenizer (``encode_batch_fast`` on 2 Rust threads over documents already in memory, its encode call only:
  no reading, splitting or writing) on the same text; wall times too;
- ``merge``: peak RSS of ``merge`` over ``--shards`` shards, and of the former in-memory merge
  (``IndexedCorpusWriter.append_corpus``, which keeps every length and document index) as the peer;
- ``extract``: ``extract-wiki --workers 2`` over a multistream dump (the embedded dump's pages ×``--dump-copies``,
  ≥ 30 MB of bz2 at 20) against WikiExtractor 3.1.0 ``--processes 2`` on the same file: pages per CPU-second
  of the whole process tree (per core, robust to a busy shared machine), and wall time.

Every measurement runs in a fresh subprocess (peak RSS is its own VmHWM). On a shared machine compare the
ratios, not absolute numbers.

Usage::

    python benchmarks/bench_scale.py                          # issue sizes: 16× = 2 B tokens (~4.5 GB disk)
    python benchmarks/bench_scale.py --base-tokens 8000000 --dump-copies 20 --shards 1000   # what we ran

Last line: ``index_us_per_sample=… index_rss_over_size=… extract_speed_vs_wikiextractor=…
build_speed_vs_raw=… merge_peak_rss_mb=…``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe
from parts import peak_rss_mb, raw_tokenizer_inputs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def part_raw(docs: str, tok_dir: str, threads: str) -> dict:
    texts, tok = raw_tokenizer_inputs(docs, tok_dir)
    start, cpu = time.perf_counter(), time.process_time()  # process_time counts every Rust thread
    n = sum(len(e.ids) for e in tok.encode_batch_fast(texts, add_special_tokens=False))
    return {"tokens": n, "seconds": time.perf_counter() - start, "encode_cpu": time.process_time() - cpu}


def part_build(docs: str, tok_dir: str, out: str, tasks: str) -> dict:
    from data_tools.build_tasks import build_tasks

    start = time.perf_counter()
    r = build_tasks([docs], tok_dir, out, num_tasks=int(tasks), workers=int(tasks), progress=False)
    return {"tokens": r.tokens, "seconds": time.perf_counter() - start}


def part_merge(shards: str, out: str, kind: str) -> dict:
    from data_tools.indexed import IndexedCorpus, IndexedCorpusWriter, resolve_prefixes
    from data_tools.merge import merge

    start = time.perf_counter()
    if kind == "ours":
        merge([shards], out)
    else:  # the former merge: every input's lengths and document ends held in memory until the end
        prefixes = resolve_prefixes(shards)
        with IndexedCorpusWriter(out, IndexedCorpus(prefixes[0]).dtype) as w:
            for p in prefixes:
                w.append_corpus(IndexedCorpus(p))
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}


def part_extract(dump: str, out: str) -> dict:
    from data_tools.extract import extract_wiki

    r = extract_wiki(dump, out, workers=2, progress=False)
    return {"pages": r.pages, "documents": r.documents, "parent_peak_rss_mb": peak_rss_mb()}


def run_part(name: str, **kw) -> dict:
    """One measurement in a fresh interpreter: its JSON result plus the CPU seconds of its process tree."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    if name == "raw":
        env.update(TOKENIZERS_PARALLELISM="true", RAYON_NUM_THREADS=kw["threads"])
    args = [sys.executable, __file__, "--part", name, "--kw", json.dumps(kw)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"part {name} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(wall=wall, cpu=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return res


def run_wikiextractor(dump: Path, out: Path) -> dict:
    """WikiExtractor 3.1.0 on the same dump, 2 processes, JSON output (its cleaning: templates, tables, refs)."""
    exe = shutil.which("wikiextractor", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if exe is None:
        sys.exit("wikiextractor not installed: pip install wikiextractor==3.1.0 (in the dev extra)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([exe, str(dump), "-o", str(out), "--json", "--processes", "2", "-q"], capture_output=True,
                       text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"wikiextractor failed:\n{r.stderr[-3000:]}")
    docs = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in out.rglob("wiki_*"))
    return {"documents": docs, "wall": wall,
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def make_shards(prefix: Path, count: int, sequences: int) -> int:
    """``count`` shards of ``sequences`` random sentences each (10 per document); returns total tokens."""
    import numpy as np

    from data_tools.indexed import IndexedCorpusWriter, shard_prefix

    rng = np.random.default_rng(0)
    total = 0
    for k in range(count):
        lengths = rng.integers(5, 60, sequences)
        tokens = rng.integers(0, 30000, int(lengths.sum())).astype(np.uint16)
        with IndexedCorpusWriter(shard_prefix(prefix, k), np.uint16, meta={"format": "MMIDIDX"}) as w:
            bounds = np.concatenate(([0], np.cumsum(lengths)))
            for d in range(0, sequences, 10):
                w.add_document(tokens[bounds[d] : bounds[min(d + 10, sequences)]], lengths[d : d + 10])
        total += len(tokens)
    return total


def bench_extract(tmp: Path, copies: int, repeats: int) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_indexing import scaled_dump

    from data_tools.sources.multistream import write_multistream
    from data_tools.wheel_data import wiki_dump_path

    xml = tmp / "scaled.xml"
    scaled_dump(wiki_dump_path(), xml, copies)
    dump = tmp / "enwiki-bench-multistream.xml.bz2"
    write_multistream(xml.read_bytes(), dump, tmp / "enwiki-bench-multistream-index.txt.bz2")
    xml.unlink()
    ours, peer = [], []
    for r in range(repeats):
        ours.append(run_part("extract", dump=str(dump), out=str(tmp / f"ours{r}.jsonl")))
        peer.append(run_wikiextractor(dump, tmp / f"we{r}"))
        print(f"  extract round {r}: ours cpu {ours[-1]['cpu']:.1f}s wall {ours[-1]['wall']:.1f}s, "
              f"wikiextractor cpu {peer[-1]['cpu']:.1f}s wall {peer[-1]['wall']:.1f}s", file=sys.stderr)
    pages = ours[0]["pages"]
    med = lambda xs, k: sorted(x[k] for x in xs)[len(xs) // 2]  # noqa: E731
    return {"dump_mb": dump.stat().st_size / 2**20, "pages": pages, "ours_docs": ours[0]["documents"],
            "peer_docs": peer[0]["documents"], "ours_cpu": med(ours, "cpu"), "peer_cpu": med(peer, "cpu"),
            "ours_wall": med(ours, "wall"), "peer_wall": med(peer, "wall"),
            "cpu_spread": (min(x["cpu"] for x in ours), max(x["cpu"] for x in ours)),
            "parent_rss": max(x["parent_peak_rss_mb"] for x in ours)}


def bench_build(tmp: Path, copies: int, repeats: int) -> dict:
    from data_tools.extract import extract_wiki
    from data_tools.sentences import split_sentences
    from data_tools.sources import read_documents
    from data_tools.tokenizer import train_tokenizer
    from data_tools.wheel_data import wiki_dump_path

    articles = tmp / "articles.jsonl"
    extract_wiki(wiki_dump_path(), articles, progress=False)
    docs = tmp / "docs.jsonl"
    docs.write_bytes(articles.read_bytes() * copies)
    tok = tmp / "tok"
    train_tokenizer((s for d in read_documents(articles) for s in split_sentences(d.text)), tok, kind="wordpiece",
                    vocab_size=16000)
    runs: dict[str, list[dict]] = {"raw": [], "build1": [], "build2": []}
    for r in range(repeats):
        runs["raw"].append(run_part("raw", docs=str(docs), tok_dir=str(tok), threads="2"))
        for t in (1, 2):
            runs[f"build{t}"].append(run_part("build", docs=str(docs), tok_dir=str(tok),
                                              out=str(tmp / f"b{t}_{r}" / "c"), tasks=str(t)))
        print("  build round " + str(r) + ": " + ", ".join(f"{k} cpu {v[-1].get('encode_cpu', v[-1]['cpu']):.2f}s "
                                                        f"wall {v[-1]['seconds']:.2f}s" for k, v in runs.items()),
              file=sys.stderr)
    # Wall time on a shared machine mostly measures the neighbours; CPU time is what a task costs. The raw
    # tokenizer is charged only its encode call, the builds their whole process tree (start-up, reading,
    # splitting, writing, checksums): the ratio is conservative.
    med = lambda k, key: sorted(x[key] for x in runs[k])[len(runs[k]) // 2]  # noqa: E731
    tokens = runs["raw"][0]["tokens"]
    return {"tokens": tokens, "input_mb": docs.stat().st_size / 2**20,
            "raw_cpu": med("raw", "encode_cpu"), "build1_cpu": med("build1", "cpu"), "build2_cpu": med("build2", "cpu"),
            "raw_wall": med("raw", "seconds"), "build1_wall": med("build1", "wall"), "build2_wall": med("build2", "wall")}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-tokens", type=int, default=125_000_000, help="index: the 1× corpus (16× = 2 B)")
    p.add_argument("--dump-copies", type=int, default=20, help="extract: the embedded dump's pages × this")
    p.add_argument("--build-copies", type=int, default=5, help="build: the extracted articles × this")
    p.add_argument("--shards", type=int, default=1000, help="merge: this many shards")
    p.add_argument("--shard-sequences", type=int, default=5000, help="merge: sentences per shard")
    p.add_argument("--repeats", type=int, default=3, help="build/extract rounds; medians count")
    p.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir, removed at the end)")
    p.add_argument("--skip", default="", help="comma list of sections to skip: index,build,merge,extract")
    p.add_argument("--part", help=argparse.SUPPRESS)
    p.add_argument("--kw", help=argparse.SUPPRESS)
    return p.parse_args()


class Summary:
    """What the sections found: their lines and the final line's figures (nan for a section not run)."""

    def __init__(self) -> None:
        self.figures = {"index_us_per_sample": "nan", "index_rss_over_size": "nan",
                        "extract_speed_vs_wikiextractor": "nan", "build_speed_vs_raw": "nan",
                        "merge_peak_rss_mb": "nan"}
        self.lines: list[str] = []

    def report(self, line: str) -> None:
        """Keep a section's line for the summary and show it now (a long run stopped late keeps it)."""
        print("  " + line, file=sys.stderr, flush=True)
        self.lines.append(line)


def section_index(a: argparse.Namespace, tmp: Path, summary: Summary) -> None:
    if importlib.util.find_spec("bench_scale_index") is None:
        summary.report("index: benchmarks/bench_scale_index.py not found (pretrain's side of issue 12); "
                       "index figures are nan")
    else:
        import bench_scale_index

        sizes = [a.base_tokens * m for m in (1, 4, 16)]
        res = bench_scale_index.run(tmp / "index", sizes)
        for row in res.get("rows", []):
            summary.report(f"index row: {json.dumps(row)}")
        summary.report(f"index: sizes {sizes} tokens: {res['index_us_per_sample']:.3f} us/sample, peak RSS growth / "
                       f"index size {res['index_rss_over_size']:.2f} at the largest; skipped: {res.get('skipped') or 'none'}")
        summary.figures["index_us_per_sample"] = f"{res['index_us_per_sample']:.3f}"
        summary.figures["index_rss_over_size"] = f"{res['index_rss_over_size']:.2f}"
    shutil.rmtree(tmp / "index", ignore_errors=True)


def section_merge(a: argparse.Namespace, tmp: Path, summary: Summary) -> None:
    shards = tmp / "shards" / "s"
    t = time.perf_counter()
    tokens = make_shards(shards, a.shards, a.shard_sequences)
    print(f"  made {a.shards} shards ({tokens:,} tokens) in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    ours = run_part("merge", shards=str(shards), out=str(tmp / "m_ours"), kind="ours")
    peer = run_part("merge", shards=str(shards), out=str(tmp / "m_peer"), kind="peer")
    same = all((tmp / f"m_ours.{e}").read_bytes() == (tmp / f"m_peer.{e}").read_bytes() for e in ("bin", "idx"))
    idx_mb = (tmp / "m_ours.idx").stat().st_size / 2**20
    summary.report(f"merge: {a.shards} shards, {a.shards * a.shard_sequences:,} sentences, {tokens:,} tokens "
                   f"(merged .idx {idx_mb:.0f} MB): peak RSS ours {ours['peak_rss_mb']:.0f} MB in "
                   f"{ours['seconds']:.1f}s, in-memory merge {peer['peak_rss_mb']:.0f} MB in "
                   f"{peer['seconds']:.1f}s; identical bytes: {same}")
    summary.figures["merge_peak_rss_mb"] = f"{ours['peak_rss_mb']:.0f}"
    shutil.rmtree(tmp / "shards", ignore_errors=True)
    for f in tmp.glob("m_*"):
        f.unlink()


def section_build(a: argparse.Namespace, tmp: Path, summary: Summary) -> None:
    b = bench_build(tmp / "build", a.build_copies, a.repeats)
    rate = {k: b["tokens"] / b[f"{k}_cpu"] for k in ("raw", "build1", "build2")}
    summary.report(f"build: {b['tokens']:,} tokens ({b['input_mb']:.0f} MB JSONL), tokens per CPU-second: raw "
                   f"tokenizer (encode only, 2 threads) {rate['raw']:,.0f}, build --tasks 1 {rate['build1']:,.0f}, "
                   f"--tasks 2 {rate['build2']:,.0f}; wall: raw {b['raw_wall']:.1f}s, --tasks 1 "
                   f"{b['build1_wall']:.1f}s, --tasks 2 {b['build2_wall']:.1f}s "
                   f"(--tasks 2 speed-up {b['build1_wall'] / b['build2_wall']:.2f}x)")
    summary.figures["build_speed_vs_raw"] = f"{rate['build2'] / rate['raw']:.2f}"
    shutil.rmtree(tmp / "build", ignore_errors=True)


def section_extract(a: argparse.Namespace, tmp: Path, summary: Summary) -> None:
    (tmp / "extract").mkdir(exist_ok=True)
    e = bench_extract(tmp / "extract", a.dump_copies, a.repeats)
    summary.report(
        f"extract: {e['dump_mb']:.1f} MB multistream dump, {e['pages']:,} pages (ours {e['ours_docs']:,} "
        f"articles, wikiextractor {e['peer_docs']:,}): pages per CPU-second ours "
        f"{e['pages'] / e['ours_cpu']:.0f} (cpu {e['cpu_spread'][0]:.1f}-{e['cpu_spread'][1]:.1f}s), "
        f"wikiextractor {e['pages'] / e['peer_cpu']:.0f}; wall ours {e['ours_wall']:.1f}s, "
        f"wikiextractor {e['peer_wall']:.1f}s; our parent's peak RSS {e['parent_rss']:.0f} MB"
    )
    summary.figures["extract_speed_vs_wikiextractor"] = f"{e['peer_cpu'] / e['ours_cpu']:.2f}"
    shutil.rmtree(tmp / "extract", ignore_errors=True)


# In this order: each section removes its scratch files before the next starts.
SECTIONS = {"index": section_index, "merge": section_merge, "build": section_build,
            "extract": section_extract}


def print_summary(a: argparse.Namespace, summary: Summary) -> None:
    print("# bench_scale: corpora at scale (sample index, build, merge, extract-wiki) against peers")
    print(describe(("tokenizers", "blingfire", "numpy", "mwparserfromhell", "wikiextractor", "ray")))
    print(f"config base_tokens={a.base_tokens} dump_copies={a.dump_copies} build_copies={a.build_copies} "
          f"shards={a.shards} shard_sequences={a.shard_sequences} repeats={a.repeats}")
    for line in summary.lines:
        print(line)
    print(" ".join(f"{k}={v}" for k, v in summary.figures.items()))


def main() -> None:
    a = parse_args()
    if a.part:
        fn = {"raw": part_raw, "build": part_build, "merge": part_merge, "extract": part_extract}[a.part]
        print(json.dumps(fn(**json.loads(a.kw))))
        return
    skip = set(filter(None, a.skip.split(",")))
    tmp = Path(a.workdir or tempfile.mkdtemp(prefix="bench_scale_"))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"# bench_scale: disk free at {tmp}: {shutil.disk_usage(tmp).free / 2**30:.1f} GiB", file=sys.stderr)
    summary = Summary()
    try:
        for name, section in SECTIONS.items():
            if name not in skip:
                section(a, tmp, summary)
    finally:
        if a.workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print_summary(a, summary)


if __name__ == "__main__":
    main()
