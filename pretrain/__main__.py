"""``python -m pretrain {prepare-data,train,export,build-ops}`` — thin CLI over ``pretrain.loader``, ``pretrain.train.run``
and ``pretrain.export``.

Examples::

    python -m pretrain prepare-data --config run.json --workers 4
    python -m pretrain train --config run.json --train.micro_batch 8 --alum.enabled false
    deepspeed --num_gpus 2 --module pretrain train --config run.json
    torchrun --nproc_per_node 2 -m pretrain train --config run.json
    mpirun -np 2 python -m pretrain train --config run.json
    python -m pretrain export runs/bert-tiny --step 1000 -o hf/bert-tiny
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_tools.errors import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # The deepspeed launcher puts --local_rank=N before the subcommand.
    p.add_argument("--local_rank", "--local-rank", dest="launcher_local_rank", type=int, default=None,
                   help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="pre-train (or resume) a masked LM with DeepSpeed",
                       epilog="Any other --section.key VALUE overrides the config, e.g. --optim.lr 2e-4.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--config", required=True, help="run config JSON (see pretrain/config.py)")
    t.add_argument("--resume", default=None, help="auto | never | step_<N> (overrides train.resume)")
    t.add_argument("--local_rank", "--local-rank", type=int, default=None, help="set by launchers")
    t.add_argument("--trust-checkpoint", action="store_true",
                   help="resume from checkpoint files that need more than tensors and plain data to load (full "
                        "unpickling can run code in the file: only for checkpoints you made)")
    d = sub.add_parser("prepare-data", help="build every sample index and blend map of a run before training",
                       epilog="Takes the same --section.key VALUE overrides as train. Training then only maps the "
                              "cached files (data.cache_dir, default beside each corpus).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--config", required=True, help="run config JSON (see pretrain/config.py)")
    d.add_argument("--workers", type=int, default=1, help="corpora (shards) indexed at once (default 1)")
    e = sub.add_parser("export", help="consolidate a checkpoint (ZeRO shards → fp32) into a Hugging Face dir",
                       epilog="example: python -m pretrain export runs/bert-tiny -o hf/bert-tiny")
    e.add_argument("run_dir", help="run directory (holds config.json, checkpoints/, latest)")
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    e.add_argument("-o", "--output", required=True, help="output directory (must not exist, or be empty)")
    e.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    e.add_argument("--trust-checkpoint", action="store_true",
                   help="load checkpoint files that need more than tensors and plain data (full unpickling can "
                        "run code in the file: only for checkpoints you made)")
    sub.add_parser("build-ops", help="compile DeepSpeed's CPU ops (shared-memory collectives, cpu_adam) now",
                   epilog="They compile on first use otherwise (minutes on a small machine), into "
                          "TORCH_EXTENSIONS_DIR; `make test` runs this beside the data_tools tests.")
    r = sub.add_parser("config-reference", help="print the run-config reference (Markdown, from the typed model)",
                       epilog="example: python -m pretrain config-reference --update-readme README.md")
    r.add_argument("--update-readme", metavar="README", default=None,
                   help="rewrite the generated block of this README instead of printing")
    return p


def _train(args: argparse.Namespace, overrides: list[str]) -> None:
    from pretrain.config import load_config
    from pretrain.dist import shutdown_distributed
    from pretrain.train import run

    if args.resume is not None:
        overrides = [*overrides, "--train.resume", args.resume]
    cfg = load_config(args.config, overrides)
    try:
        local_rank = args.local_rank if args.local_rank is not None else args.launcher_local_rank
        result = run(cfg, local_rank=local_rank, trust_checkpoint=args.trust_checkpoint)
    finally:
        shutdown_distributed()
    if result.rank == 0 and result.eval is not None:
        print(f"final step {result.step}: eval mlm_loss={result.eval['mlm_loss']:.4f} "
              f"accuracy={result.eval['accuracy']:.4f}")


def _prepare_data(args: argparse.Namespace, overrides: list[str]) -> None:
    import time

    import numpy as np

    from pretrain.config import load_config
    from pretrain.loader import prepare_data

    if args.workers < 1:
        raise UserError(f"--workers: got {args.workers}, expected at least 1")
    cfg = load_config(args.config, overrides)
    t0 = time.perf_counter()
    data = prepare_data(cfg, workers=args.workers)
    files = set()
    for ds in {id(x): x for x in (data.train, data.eval)}.values():
        for part in getattr(ds, "datasets", [ds]):
            files.update(str(ix.filename) for ix in part.indices if isinstance(ix, np.memmap))
        if isinstance(getattr(ds, "map", None), np.memmap):
            files.add(str(ds.map.filename))
    print(f"prepared {len(data.train):,} training samples ({data.train_size:,} trained on) in "
          f"{time.perf_counter() - t0:.1f}s; {len(files)} cached files:")
    for f in sorted(files):
        print(f"  {f}")


def export(run_dir: str | Path, output: str | Path, step: int | None = None, trust_checkpoint: bool = False) -> Path:
    """Write a checkpoint of ``run_dir`` as a Hugging Face directory.

    Args:
        run_dir: The run directory.
        output: The HF directory to create.
        step: Which checkpoint (default: the one ``latest`` names).
        trust_checkpoint: Load with DeepSpeed's unrestricted unpickling (``--trust-checkpoint``).
    Returns:
        The output directory.
    """
    from data_tools.tokenizer import load_tokenizer
    from pretrain import checkpoint
    from pretrain.config import build_config, load_json
    from pretrain.export import save_hf
    from pretrain.train import build_export_model

    run_dir, output = Path(run_dir), Path(output)
    if output.exists() and any(output.iterdir()):
        raise UserError(f"-o {output}: exists and is not empty")
    cfg_file = run_dir / "config.json"
    if not cfg_file.exists():
        raise UserError(f"{run_dir}: not a run directory (no config.json)")
    cfg = build_config(load_json(cfg_file), str(cfg_file))
    tag = checkpoint.resolve_tag(run_dir, step)
    state = checkpoint.consolidated_state_dict(run_dir, tag, trust=trust_checkpoint)
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    model = build_export_model(cfg, tokenizer)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise UserError(f"{run_dir / 'checkpoints' / tag}: weights do not fit the model in config.json "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    save_hf(model, tokenizer, output)
    print(f"exported {tag} of {run_dir} to {output}")
    return output


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m pretrain``."""
    argv = sys.argv[1:] if argv is None else argv
    args, rest = build_parser().parse_known_args(argv)
    if args.command == "train":
        _train(args, rest)
    elif args.command == "prepare-data":
        _prepare_data(args, rest)
    elif args.command == "build-ops":
        from pretrain.engine import build_ops

        for name, seconds in build_ops():
            print(f"{name}: ready ({seconds:.1f}s)", flush=True)
    elif args.command == "config-reference":
        from pretrain.config_docs import reference_markdown, update_readme

        if args.update_readme:
            changed = update_readme(args.update_readme)
            print(f"{args.update_readme}: config reference {'updated' if changed else 'already up to date'}")
        else:
            print(reference_markdown())
    else:
        if rest:
            raise UserError(f"export: unknown arguments {' '.join(rest)}")
        export(args.run_dir, args.output, args.step, trust_checkpoint=args.trust_checkpoint)


if __name__ == "__main__":
    run_cli(main)
