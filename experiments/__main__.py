"""``python -m experiments``: studies built from the project's own CLIs.

Examples::

    python -m experiments replicate --budget quick -o runs/replicate            # ≤ 15 min on 2 cores
    python -m experiments replicate --budget full -o runs/replicate-full --seeds 5
    python -m experiments replicate --budget tiny -o /tmp/rep --seeds 1         # what CI runs
    python -m experiments readme --results experiments/results/full.json --update-readme README.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data_tools.errors import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with one subcommand per study."""
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("replicate", help="does ALUM help? plain vs noise vs ALUM pre-training and fine-tuning, "
                                         "clean and attacked, over seeds")
    p.add_argument("--budget", choices=("tiny", "quick", "full"), default="quick",
                   help="tiny: CI smoke run; quick: ≤ 15 min on 2 cores; full: ≤ 90 min (default: quick)")
    p.add_argument("-o", "--output", default="runs/replicate", help="study folder (reruns reuse finished jobs)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: the budget's: 3 for quick, 5 for full)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: pre-train a larger model for longer on the GPU (fine-tuning stays on the CPU)")
    p.add_argument("--workers", type=int, default=None, help="jobs run at once (default: the budget's, 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    p.add_argument("--quiet", action="store_true", help="print only the final summary")
    p.add_argument("--note", default=None, help="a line stored in results.json and printed with the report "
                                                "(e.g. the code version, or that the machine was shared)")
    r = sub.add_parser("readme", help="render a results.json as markdown, or rewrite the README's section")
    r.add_argument("--results", default=None, help="results JSON (default: experiments/results/full.json, the committed study)")
    r.add_argument("--update-readme", metavar="README", default=None, help="rewrite this README's block")
    return parser


def cmd_replicate(args: argparse.Namespace) -> None:
    import signal

    from experiments.replicate import replicate

    def stop(signum, frame):  # a killed study stops its workers too (runner), like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    result = replicate(args.budget, Path(args.output), seeds=args.seeds, device=args.device, workers=args.workers,
                       threads=args.threads, echo=(lambda s: None) if args.quiet else print, note=args.note)
    print(result["summary"])


def cmd_readme(args: argparse.Namespace) -> None:
    from experiments.report import COMMITTED, render_markdown, update_readme

    path = Path(args.results) if args.results else COMMITTED
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: expected a results.json written by `python -m experiments replicate` ({exc})") \
            from None
    if args.update_readme:
        changed = update_readme(Path(args.update_readme), results)
        print(f"{args.update_readme}: 'Does ALUM help?' section {'updated' if changed else 'already up to date'}")
    else:
        print(render_markdown(results), end="")


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run the chosen command."""
    args = build_parser().parse_args(argv)
    {"replicate": cmd_replicate, "readme": cmd_readme}[args.cmd](args)


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
