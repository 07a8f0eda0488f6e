"""``python -m demo [-o demo_out] [--tiny]``: dump → corpus → ALUM pre-training → export → fine-tune → attack.

Every stage is one of the project's CLIs; finished stages are reused on a rerun (and said so), an interrupted
one is redone from scratch (pre-training resumes from its last checkpoint).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from data_tools.atomic import write_json
from data_tools.errors import run_cli
from demo.pipeline import FULL, TINY, stages
from demo.runner import Runner
from demo.summary import collect, plot, render


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out", default="demo_out", help="folder for every artefact (default: demo_out)")
    parser.add_argument("--tiny", action="store_true", help="minimal sizes (what the end-to-end test runs)")
    parser.add_argument("--workers", type=int, default=2, help="processes for extraction and indexing")
    parser.add_argument("--quiet", action="store_true", help="don't stream each stage's output (logs still kept)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    size = TINY if args.tiny else FULL
    start = time.perf_counter()
    runner = Runner(out, stream=not args.quiet)
    for stage in stages(out, size, workers=args.workers):
        runner.run(stage)
    figures = collect(out)
    png = plot(figures, out / "loss_curves.png")
    write_json(out / "summary.json", {
        "figures": dataclasses.asdict(figures),
        "stages": [{"name": r.name, "seconds": r.seconds, "reused": r.skipped, "path": str(r.path)}
                   for r in runner.results],
        "size": dataclasses.asdict(size),
    })
    render(figures, runner.results, png)
    print(f"demo finished in {time.perf_counter() - start:.1f}s; summary: {out / 'summary.json'}")


if __name__ == "__main__":
    run_cli(main)
