"""Does the MLM sample index scale to billions of tokens? Time per sample and peak memory of building it.

For synthetic corpora of 1×, 4× and 16× a base size (written with ``IndexedCorpusWriter``; sentence lengths
drawn around 24 tokens, documents around 30 sentences, like the 157 M-token corpus measured in issue 12),
each build runs in a fresh child process and reports:

- CPU time of the build alone (``write_sample_index``, the path training and ``prepare-data`` take: compiled
  kernel, windows of the ``.idx``, rows appended to the ``.npy``), after the kernel is compiled/loaded on a
  tiny corpus, so that compilation is not counted;
- peak RSS growth during the build (``VmHWM`` after − ``VmRSS`` before; ``ru_maxrss`` would count pages a
  fork copied from the parent) against the size of the index file: flat growth means streaming.

The peer, in the same run, on the smallest corpus: the per-sample Python loop the compiled build replaced
(kept as the reference in ``tests/pretrain/test_sample_index.py``), with the index in memory as it had it.
BERT style at ``max_seq_len`` 128 (the issue's figure) is the headline; RoBERTa at 512 is measured alongside.

Usage::

    python benchmarks/bench_scale_index.py                        # 125 M, 500 M, 2 B tokens (~5 GB disk at most)
    python benchmarks/bench_scale_index.py --base 10_000_000      # quicker

Each build runs ``--rounds`` times (fresh processes): the median CPU time is reported with its min-max.

Ends with ``index_us_per_sample=… index_rss_over_size=… index_speedup_vs_python=…`` (µs per sample and RSS
ratio: the largest corpus; speedup: the smallest, against the Python loop).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from parts import vm_kib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BYTES_PER_TOKEN = 2.6  # uint16 .bin + ~0.5 byte of .idx per token + the index file


def _vm(key: str) -> float:
    kib = vm_kib(key)
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def write_corpus(prefix: Path, tokens: int, seed: int = 0) -> dict:
    """A synthetic corpus of about ``tokens`` tokens (all token ids 5: the index reads only lengths)."""
    import numpy as np

    from data_tools.indexed import IndexedCorpusWriter

    rng = np.random.default_rng(seed)
    zeros = np.full(1 << 16, 5, dtype=np.uint16)
    written = sentences = docs = 0
    with IndexedCorpusWriter(prefix, np.uint16) as w:
        while written < tokens:
            # a block of documents at a time: numbers of sentences ~ geometric(1/30), lengths ~ 1 + gamma(4, 6)
            counts = rng.geometric(1 / 30, 4096)
            lengths = (1 + rng.gamma(4.0, 5.9, int(counts.sum()))).astype(np.int64)
            lengths = np.minimum(lengths, 400)
            ends = np.cumsum(counts)
            starts = ends - counts
            for s, e in zip(starts, ends):
                doc = lengths[s:e]
                n = int(doc.sum())
                w.add_document(zeros[:n] if n <= len(zeros) else np.full(n, 5, np.uint16), doc)
                written += n
                sentences += len(doc)
                docs += 1
                if written >= tokens:
                    break
    return {"tokens": written, "sentences": sentences, "documents": docs}


def child(mode: str, prefix: str, style: str, max_seq_len: int, out: str) -> dict:
    """Runs in a fresh process: build one index, report CPU seconds, samples and RSS growth."""
    import numpy as np

    from pretrain import sample_index

    if mode == "compiled":
        with tempfile.TemporaryDirectory() as tmp:  # load (or compile) the kernels outside the measurement
            warm = Path(tmp) / "w"
            write_corpus(warm, 5000)
            sample_index.build_sample_index(str(warm), style, max_seq_len)
        rss0, cpu0, t0 = _vm("VmRSS"), _cpu(), time.perf_counter()
        samples = sample_index.write_sample_index(prefix, Path(out), style, max_seq_len, 1234, 0.1)
        index_bytes = Path(out).stat().st_size
    else:
        sys.path.insert(0, str(ROOT / "tests" / "pretrain"))
        from test_sample_index import reference_index

        from data_tools.indexed import IndexedCorpus

        rss0, cpu0, t0 = _vm("VmRSS"), _cpu(), time.perf_counter()
        index = reference_index(IndexedCorpus(prefix, validate=False), style, max_seq_len)
        samples, index_bytes = len(index), index.nbytes + 3 * 8
        np.save(out, index)  # what load_or_build_index then did (after the build: not counted in the time)
    cpu, wall = _cpu() - cpu0, time.perf_counter() - t0
    return {"samples": samples, "cpu_s": cpu, "wall_s": wall, "rss_growth_mb": _vm("VmHWM") - rss0,
            "peak_rss_mb": _vm("VmHWM"), "index_mb": index_bytes / 2**20}


def _measure(mode: str, prefix: Path, style: str, max_seq_len: int, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(prefix), style, str(max_seq_len), str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{proc.stderr[-3000:]}")
    out.unlink(missing_ok=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rounds(mode: str, prefix: Path, style: str, max_seq_len: int, out: Path, rounds: int) -> dict:
    """``rounds`` fresh-process measurements: median CPU time, its spread, the largest RSS growth."""
    ms = [_measure(mode, prefix, style, max_seq_len, out) for _ in range(rounds)]
    cpu = sorted(m["cpu_s"] for m in ms)
    return {**max(ms, key=lambda m: m["rss_growth_mb"]), "cpu_s": statistics.median(cpu),
            "cpu_s_min": cpu[0], "cpu_s_max": cpu[-1], "rounds": rounds}


def run(workdir: Path, sizes: list[int], rounds: int = 3) -> dict:
    """Build the index of a synthetic corpus of each size (tokens) in a child process; compare with the
    Python loop on the smallest. Corpora are written under ``workdir`` and removed after use. Each
    measurement is repeated ``rounds`` times (median CPU time, min/max kept; the largest RSS growth).

    Returns:
        ``index_us_per_sample`` (BERT-128 build CPU µs per sample, largest size), ``index_rss_over_size``
        (peak RSS growth / index file size, largest size), ``index_speedup_vs_python`` (smallest size),
        ``rows`` (one dict per size and style) and ``skipped`` (sizes without the disk space).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    sizes = sorted(sizes)
    for k, tokens in enumerate(sizes):
        free = shutil.disk_usage(workdir).free
        if free < tokens * BYTES_PER_TOKEN * 1.2:
            skipped.append({"tokens": tokens, "reason": f"{free / 2**30:.1f} GiB free, needs "
                                                       f"{tokens * BYTES_PER_TOKEN * 1.2 / 2**30:.1f}"})
            continue
        prefix = workdir / f"synthetic_{tokens}"
        t0 = time.perf_counter()
        info = write_corpus(prefix, tokens)
        write_s = time.perf_counter() - t0
        try:
            for style, max_seq_len in (("bert", 128), ("roberta", 512)):
                modes = ["compiled", "python"] if k == 0 and style == "bert" else ["compiled"]
                for mode in modes:
                    m = _rounds(mode, prefix, style, max_seq_len, workdir / "index.npy", rounds)
                    rows.append({**info, "style": style, "max_seq_len": max_seq_len, "impl": mode,
                                 "corpus_write_s": round(write_s, 1), **m,
                                 "us_per_sample": 1e6 * m["cpu_s"] / max(1, m["samples"]),
                                 "us_per_sample_range": [1e6 * m[k] / max(1, m["samples"])
                                                         for k in ("cpu_s_min", "cpu_s_max")],
                                 "rss_over_size": m["rss_growth_mb"] / max(m["index_mb"], 1e-9)})
        finally:
            for f in workdir.glob(f"synthetic_{tokens}*"):
                f.unlink()
    compiled = [r for r in rows if r["impl"] == "compiled" and r["style"] == "bert"]
    old = [r for r in rows if r["impl"] == "python"]
    if not compiled:
        raise RuntimeError(f"no size fitted on disk: {skipped}")
    largest = compiled[-1]
    same = [r for r in compiled if r["tokens"] == old[0]["tokens"]] if old else []
    return {
        "index_us_per_sample": largest["us_per_sample"],
        "index_rss_over_size": largest["rss_over_size"],
        "index_speedup_vs_python": old[0]["us_per_sample"] / same[0]["us_per_sample"] if same else None,
        "rows": rows,
        "skipped": skipped,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=int, default=125_000_000, help="tokens of the 1× corpus (default 125 M)")
    p.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16], help="multiples of --base (default 1 4 16)")
    p.add_argument("--workdir", default=None, help="where corpora go (default: a temporary directory)")
    p.add_argument("--rounds", type=int, default=3, help="fresh-process builds per measurement (default 3)")
    args = p.parse_args()
    from machine import describe

    print(describe(("numpy", "numba")))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        result = run(Path(tmp), [args.base * s for s in args.scales], args.rounds)
    print(f"{'tokens':>14} {'samples':>11} {'style':>10} {'impl':>9} {'cpu s':>7} {'µs/sample (min-max)':>20} "
          f"{'RSS+ MB':>8} {'peak MB':>8} {'index MB':>9} {'RSS+/index':>10}")
    for r in result["rows"]:
        lo, hi = r["us_per_sample_range"]
        spread = f"{r['us_per_sample']:.3f} ({lo:.3f}-{hi:.3f})"
        print(f"{r['tokens']:>14,} {r['samples']:>11,} {r['style'] + str(r['max_seq_len']):>10} {r['impl']:>9} "
              f"{r['cpu_s']:>7.2f} {spread:>20} {r['rss_growth_mb']:>8.1f} "
              f"{r.get('peak_rss_mb', float('nan')):>8.1f} {r['index_mb']:>9.1f} {r['rss_over_size']:>10.3f}")
    for s in result["skipped"]:
        print(f"skipped {s['tokens']:,} tokens: {s['reason']}")
    speed = result["index_speedup_vs_python"]
    print(f"index_us_per_sample={result['index_us_per_sample']:.3f} "
          f"index_rss_over_size={result['index_rss_over_size']:.3f} "
          f"index_speedup_vs_python={f'{speed:.1f}' if speed else 'nan'}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, mode, prefix, style, max_seq_len, out = sys.argv
        print(json.dumps(child(mode, prefix, style, int(max_seq_len), out)))
    else:
        main()
