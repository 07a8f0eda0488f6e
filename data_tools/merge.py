"""``merge``: concatenate corpora (or shards) into one, Megatron's ``tools/merge_datasets.py`` equivalent."""

from __future__ import annotations

import os

from data_tools.errors import UserError
from data_tools.indexed import IndexedCorpus, IndexedCorpusWriter, resolve_prefixes


def merge(inputs: list[str | os.PathLike], output: str | os.PathLike, force: bool = False) -> IndexedCorpus:
    """Concatenate the documents of ``inputs`` (each a prefix or a sharded prefix), in order, into ``output``.

    Args:
        inputs: corpus prefixes.
        output: output prefix.
        force: merge even if the sidecars name different tokenizers.

    Returns:
        the merged corpus.

    Raises:
        UserError: differing dtypes or tokenizers, output among the inputs.
    """
    prefixes = [p for prefix in inputs for p in resolve_prefixes(prefix)]
    output = os.fspath(output)
    if output in prefixes:
        raise UserError(f"-o {output}: the output is one of the inputs; choose a new prefix")
    corpora = [IndexedCorpus(p) for p in prefixes]
    dtypes = {c.dtype.name for c in corpora}
    if len(dtypes) > 1:
        raise UserError(f"cannot merge corpora of different dtypes ({', '.join(sorted(dtypes))}): {', '.join(prefixes)}")
    tokenizers = {(c.meta or {}).get("tokenizer", {}).get("fingerprint") for c in corpora} - {None}
    if len(tokenizers) > 1 and not force:
        raise UserError(
            f"inputs were built with different tokenizers (fingerprints {', '.join(sorted(tokenizers))}); "
            "merging them mixes vocabularies (use --force if they are compatible)"
        )
    first_meta = next((c.meta for c in corpora if c.meta), None)
    meta = None
    if first_meta is not None:
        meta = {k: first_meta[k] for k in ("format", "tokenizer", "splitter", "sequence") if k in first_meta}
        meta["merged_from"] = prefixes
    with IndexedCorpusWriter(output, corpora[0].dtype, meta=meta) as w:
        for c in corpora:
            w.append_corpus(c)
    return IndexedCorpus(output)
