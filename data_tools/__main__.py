"""``python -m data_tools <command>``: every command is one function; this file only maps flags to it."""

from __future__ import annotations

import argparse
import itertools
import json
import sys

from data_tools.atomic import remove_new_dirs_on_error
from data_tools.errors import run_cli

EXAMPLES = """examples:
  python -m data_tools extract-wiki enwiki-latest-pages-articles.xml.bz2 -o wiki.jsonl --workers 2
  python -m data_tools extract-owt openwebtext.tar.xz -o owt.jsonl --dedup
  python -m data_tools train-tokenizer wiki.jsonl --kind wordpiece --vocab-size 30522 -o tok/
  python -m data_tools build wiki.jsonl --tokenizer tok/ -o corpus/wiki --workers 2 --shards 4
  python -m data_tools build enwiki-multistream.xml.bz2 --tokenizer tok/ -o corpus/wiki --tasks 64   (resumable)
  python -m data_tools verify corpus/wiki
  python -m data_tools inspect corpus/wiki --document 0
  python -m data_tools merge corpus/wiki corpus/owt -o corpus/all
  python -m data_tools demo -o demo_out/data     (all of the above on the embedded Wikipedia sample)
"""


def cmd_extract_wiki(a: argparse.Namespace) -> None:
    from data_tools.extract import extract_wiki

    with remove_new_dirs_on_error(a.output):
        r = extract_wiki(a.dump, a.output, workers=a.workers, headings=a.headings, min_chars=a.min_chars,
                         progress=not a.quiet, index=a.index)
    print(r.summary())


def cmd_extract_owt(a: argparse.Namespace) -> None:
    from data_tools.extract import extract_owt

    with remove_new_dirs_on_error(a.output):
        r = extract_owt(a.source, a.output, dedup=a.dedup, skip_bad=a.skip_bad, min_chars=a.min_chars,
                        progress=not a.quiet, max_doc_bytes=a.max_doc_bytes)
    print(r.summary())


def cmd_train_tokenizer(a: argparse.Namespace) -> None:
    from data_tools.sentences import split_sentences
    from data_tools.sources import BadInputPolicy, read_documents
    from data_tools.tokenizer import train_tokenizer

    policy = BadInputPolicy(skip=a.skip_bad, max_doc_bytes=a.max_doc_bytes)
    docs = read_documents(a.inputs, json_key=a.json_key, policy=policy, kind=a.input_kind)
    sentences = (s for d in docs for s in split_sentences(d.text))
    if a.max_sentences:
        sentences = itertools.islice(sentences, a.max_sentences)
    lowercase = None if a.lowercase is None else a.lowercase == "yes"
    tok = train_tokenizer(sentences, a.output, kind=a.kind, vocab_size=a.vocab_size, model_type=a.model_type,
                          lowercase=lowercase, threads=a.threads)
    print(f"trained {tok.kind} tokenizer: vocab {tok.vocab_size:,}, fingerprint {tok.fingerprint} -> {a.output}"
          + (f" ({policy.summary()})" if policy.skipped else ""))


def cmd_build(a: argparse.Namespace) -> None:
    from data_tools.errors import UserError

    if a.tasks is not None:
        from data_tools.build_tasks import build_tasks

        if a.shards is not None or a.shard_size is not None:
            raise UserError("--tasks writes one shard per task: drop --shards/--shard-size")
        r = build_tasks(a.inputs, a.tokenizer, a.output, a.tasks, task_index=a.task_index, executor=a.executor,
                        workers=a.workers, address=a.address, dtype=a.dtype, json_key=a.json_key,
                        skip_bad=a.skip_bad, split_sentences=not a.no_split, input_kind=a.input_kind,
                        fresh=a.fresh, progress=not a.quiet)
        print(r.summary())
        return
    if a.task_index is not None or a.executor != "local" or a.address or a.fresh:
        raise UserError("--task-index, --executor, --address and --fresh need --tasks N")
    from data_tools.build import build

    with remove_new_dirs_on_error(a.output):  # a failed build leaves no empty output directory
        r = build(a.inputs, a.tokenizer, a.output, workers=a.workers or 1, shards=a.shards,
                  shard_size=a.shard_size, dtype=a.dtype, json_key=a.json_key, skip_bad=a.skip_bad,
                  split_sentences=not a.no_split, input_kind=a.input_kind, progress=not a.quiet,
                  max_doc_bytes=a.max_doc_bytes)
    print(r.summary())


def cmd_merge(a: argparse.Namespace) -> None:
    from data_tools.merge import merge

    with remove_new_dirs_on_error(a.output):
        c = merge(a.inputs, a.output, force=a.force)
    print(f"merged {len(a.inputs)} input(s) -> {c.prefix}: {c.num_documents:,} documents, {len(c):,} sentences, "
          f"{c.num_tokens:,} tokens")


def cmd_inspect(a: argparse.Namespace) -> None:
    from data_tools.inspect import inspect_corpus

    print(inspect_corpus(a.prefix, tokenizer=a.tokenizer, document=a.document, sentence=a.sentence,
                         show_histogram=not a.no_histogram))


def cmd_verify(a: argparse.Namespace) -> None:
    from data_tools.verify import verify

    reports = verify(a.prefix, checksums=not a.no_checksums)
    if a.json:
        print(json.dumps(reports, indent=2))
        return
    for r in reports:
        print(f"ok {r['prefix']}: {r['documents']:,} documents, {r['sequences']:,} sentences, {r['tokens']:,} tokens, "
              f"dtype {r['dtype']}, checksums {r['checksums']}")


def cmd_demo(a: argparse.Namespace) -> None:
    from data_tools.demo import run_demo

    run_demo(a.output, workers=a.workers, kind=a.kind, vocab_size=a.vocab_size, progress=not a.quiet)


def _common_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json-key", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--input-kind", default="auto", choices=["auto", "jsonl", "text", "wiki", "owt"],
                   help="force the input reader (default: from the file name)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad documents (and report how many) instead of stopping")
    _max_doc_bytes(p)


def _max_doc_bytes(p: argparse.ArgumentParser) -> None:
    from data_tools.sources import MAX_DOC_BYTES

    p.add_argument("--max-doc-bytes", type=int, default=MAX_DOC_BYTES, metavar="N",
                   help=f"largest document (or input line) read, decompressed; bigger ones are bad input "
                        f"(default {MAX_DOC_BYTES:,}: memory stays bounded on a decompression bomb)")


def build_parser() -> argparse.ArgumentParser:
    """The CLI's parser (one subparser per command)."""
    top = argparse.ArgumentParser(prog="python -m data_tools", description="Build Megatron-compatible indexed corpora "
                                  "from Wikipedia dumps, OpenWebText, JSONL or text.", epilog=EXAMPLES,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func, help_: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        return p

    p = add("extract-wiki", cmd_extract_wiki, "MediaWiki XML dump (.xml/.xml.bz2) -> clean article text as JSONL",
            "python -m data_tools extract-wiki enwiki-latest-pages-articles.xml.bz2 -o wiki.jsonl --workers 2")
    p.add_argument("dump")
    p.add_argument("-o", "--output", required=True, help="JSONL to write")
    p.add_argument("--workers", type=int, default=1, help="processes cleaning wikitext")
    p.add_argument("--headings", action="store_true", help="keep section headings as lines")
    p.add_argument("--index", default=None, help="multistream index (default: DUMP's …-index.txt.bz2 if present): "
                   "workers then read their own byte ranges of the dump")
    p.add_argument("--min-chars", type=int, default=1, help="drop articles shorter than this after cleaning")

    p = add("extract-owt", cmd_extract_owt, "OpenWebText tar of .xz archives (or folders of .xz/.txt) -> JSONL",
            "python -m data_tools extract-owt openwebtext.tar.xz -o owt.jsonl --dedup")
    p.add_argument("source")
    p.add_argument("-o", "--output", required=True, help="JSONL to write")
    p.add_argument("--dedup", action="store_true", help="drop exact duplicate documents")
    p.add_argument("--skip-bad", action="store_true", help="skip unsafe members / non-UTF-8 / oversized documents")
    _max_doc_bytes(p)
    p.add_argument("--min-chars", type=int, default=1, help="drop documents shorter than this")

    p = add("train-tokenizer", cmd_train_tokenizer, "train a WordPiece or SentencePiece tokenizer on documents",
            "python -m data_tools train-tokenizer wiki.jsonl --kind wordpiece --vocab-size 30522 -o tok/")
    p.add_argument("inputs", nargs="+")
    p.add_argument("-o", "--output", required=True, help="tokenizer directory to write")
    p.add_argument("--kind", choices=["wordpiece", "sentencepiece"], default="wordpiece")
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--model-type", choices=["unigram", "bpe"], default="unigram", help="SentencePiece algorithm")
    p.add_argument("--lowercase", choices=["yes", "no"], default=None, help="WordPiece: lower-case (default yes)")
    p.add_argument("--max-sentences", type=int, default=0, help="train on at most this many sentences (0 = all)")
    p.add_argument("--threads", type=int, default=1, help="SentencePiece trainer threads")
    _common_input(p)

    p = add("build", cmd_build, "documents -> sentences -> tokens -> Megatron MMIDIDX .bin/.idx (sharded)",
            "python -m data_tools build wiki.jsonl --tokenizer tok/ -o corpus/wiki --workers 2 --shards 4")
    p.add_argument("inputs", nargs="+", help="JSONL, text, wiki dump or OpenWebText inputs")
    p.add_argument("--tokenizer", required=True, help="tokenizer dir, vocab.txt, tokenizer.json or .model")
    p.add_argument("-o", "--output", required=True, help="corpus prefix (shards: PREFIX_00000 ...)")
    p.add_argument("--workers", type=int, default=None, help="tokenizer processes (output identical for any "
                   "value; default 1, with --tasks: one per core)")
    p.add_argument("--tasks", "--num-tasks", type=int, default=None, metavar="N",
                   help="split the inputs into N tasks, each writing shard PREFIX_0000k and a completion marker in "
                   "PREFIX.tasks/; a rerun skips finished tasks")
    p.add_argument("--task-index", type=int, default=None, metavar="K",
                   help="with --tasks: run only task K (a Slurm array element: $SLURM_ARRAY_TASK_ID)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="with --tasks: a local process pool (default) or a Ray cluster")
    p.add_argument("--address", default=None, help="--executor ray: the cluster's HOST:PORT (default: auto)")
    p.add_argument("--fresh", action="store_true", help="with --tasks: discard an earlier build's tasks when "
                   "its inputs or settings differ (default: refuse)")
    p.add_argument("--shards", type=int, default=None, help="write this many shards (documents dealt round-robin)")
    p.add_argument("--shard-size", type=int, default=None, help="or: documents per shard")
    p.add_argument("--dtype", default="auto", choices=["auto", "uint16", "int32"], help="token dtype")
    p.add_argument("--no-split", action="store_true", help="one sequence per document instead of per sentence")
    _common_input(p)

    p = add("merge", cmd_merge, "concatenate corpora (or their shards) into one",
            "python -m data_tools merge corpus/wiki corpus/owt -o corpus/all")
    p.add_argument("inputs", nargs="+", help="corpus prefixes")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--force", action="store_true", help="merge even if the inputs were built with different tokenizers, or some record none "
                   "(the output's tokenizer is then recorded as unknown)")

    p = add("inspect", cmd_inspect, "counts, length histogram, decode a document or sentence",
            "python -m data_tools inspect corpus/wiki --document 0 --tokenizer tok/")
    p.add_argument("prefix")
    p.add_argument("--tokenizer", default=None, help="to decode (default: the one recorded at build time)")
    p.add_argument("--document", type=int, default=None, help="print document N (global number)")
    p.add_argument("--sentence", type=int, default=None, help="print sentence N (global number)")
    p.add_argument("--no-histogram", action="store_true")

    p = add("verify", cmd_verify, "check every structural invariant and the build-time checksums",
            "python -m data_tools verify corpus/wiki")
    p.add_argument("prefix")
    p.add_argument("--no-checksums", action="store_true", help="skip reading the .bin for checksums")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")

    p = add("demo", cmd_demo, "extract-wiki -> train-tokenizer -> build --shards 2 -> verify -> inspect on the "
            "embedded Wikipedia sample", "python -m data_tools demo -o demo_out/data")
    p.add_argument("-o", "--output", default="demo_out/data", help="directory for the demo's files")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--kind", choices=["wordpiece", "sentencepiece"], default="wordpiece")
    p.add_argument("--vocab-size", type=int, default=8000)
    return top


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run the command."""
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
