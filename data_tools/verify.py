"""``verify``: check every structural invariant of a corpus (and its build-time checksums)."""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np

from data_tools.errors import UserError
from data_tools.indexed import IndexedCorpus, bin_path, idx_path, meta_path, read_meta, resolve_prefixes

_BLOCK = 1 << 22


def _scan_bin(c: IndexedCorpus) -> tuple[str, int]:
    """SHA-256 of the ``.bin`` and its largest token id, in one pass of bounded memory."""
    h = hashlib.sha256()
    top = -1
    itemsize = c.dtype.itemsize
    with open(bin_path(c.prefix), "rb") as fh:
        while block := fh.read(_BLOCK - _BLOCK % itemsize):
            h.update(block)
            arr = np.frombuffer(block[: len(block) - len(block) % itemsize], dtype=c.dtype)
            if arr.size:
                top = max(top, int(arr.max()))
    return h.hexdigest(), top


def verify_prefix(prefix: str, checksums: bool = True) -> dict:
    """Check one corpus; return its counts. Raises UserError naming the file and the broken invariant."""
    c = IndexedCorpus(prefix, validate=True)  # header, version, dtype, sizes, pointers, document index
    end = c.num_tokens * c.dtype.itemsize
    if c.bin_size != end:
        raise UserError(f"{bin_path(prefix)}: {c.bin_size} bytes but the index accounts for {end} (trailing data)")
    if c.dtype.kind not in "iu":
        raise UserError(f"{idx_path(prefix)}: dtype {c.dtype.name} cannot hold token ids")
    report = {"prefix": prefix, "dtype": c.dtype.name, "documents": c.num_documents, "sequences": len(c),
              "tokens": c.num_tokens, "empty_sequences": int((c.sequence_lengths == 0).sum()),
              "empty_documents": int((np.diff(c.document_indices) == 0).sum()), "checksums": "absent"}
    meta = c.meta
    if meta is None:
        return report
    mpath = meta_path(prefix)
    sums = meta.get("checksums") or {}
    if not isinstance(sums, dict):
        raise UserError(f"{mpath}: checksums: expected an object, got {sums!r}")
    facts = (("format", "MMIDIDX"), ("dtype", c.dtype.name), ("documents", c.num_documents), ("sequences", len(c)),
             ("sentences", len(c)), ("tokens", c.num_tokens), ("checksums.bin_bytes", c.bin_size),
             ("checksums.idx_bytes", os.path.getsize(idx_path(prefix))))
    for key, actual in facts:
        node, leaf = (sums, key.split(".")[1]) if key.startswith("checksums.") else (meta, key)
        if leaf in node and node[leaf] != actual:
            raise UserError(f"{mpath}: says {key}={node[leaf]!r} but the corpus has {actual!r} (stale or foreign .meta.json)")
    vocab = (meta.get("tokenizer") or {}).get("vocab_size")
    if checksums or vocab or "max_token_id" in meta:
        digest, top = _scan_bin(c)
        if "max_token_id" in meta and meta["max_token_id"] != top:
            raise UserError(f"{mpath}: says max_token_id={meta['max_token_id']!r} but the largest id in "
                            f"{bin_path(prefix)} is {top} (stale or foreign .meta.json)")
        if vocab and top >= vocab:
            raise UserError(f"{bin_path(prefix)}: token id {top} >= the tokenizer's vocab_size {vocab} ({mpath})")
        if checksums and sums:
            if sums.get("bin_sha256") not in (None, digest):
                raise UserError(f"{bin_path(prefix)}: checksum mismatch with {mpath} (file changed or corrupt)")
            with open(idx_path(prefix), "rb") as fh:
                if sums.get("idx_sha256") not in (None, hashlib.sha256(fh.read()).hexdigest()):
                    raise UserError(f"{idx_path(prefix)}: checksum mismatch with {mpath} (file changed or corrupt)")
            report["checksums"] = "ok"
    report["tokenizer"] = (meta.get("tokenizer") or {}).get("fingerprint")
    return report


def verify(prefix: str | os.PathLike, checksums: bool = True) -> list[dict]:
    """Verify a corpus or every shard of it; shards must agree on dtype and tokenizer.

    Returns:
        one report per shard (counts, ``checksums``: ok/absent).

    Raises:
        UserError: the first broken invariant, naming the file.
    """
    prefixes = resolve_prefixes(prefix)
    reports = [verify_prefix(p, checksums) for p in prefixes]
    for key in ("dtype", "tokenizer"):
        values = {r.get(key) for r in reports} - {None}
        if len(values) > 1:
            raise UserError(f"{prefix}: shards disagree on {key} ({', '.join(sorted(map(str, values)))})")
    if prefixes != [os.fspath(prefix)]:  # a sharded prefix: each shard's sidecar says which one it is, of how many
        for p in prefixes:
            meta = read_meta(p) or {}
            number = int(re.search(r"_(\d{5})$", p).group(1))
            if meta.get("shard", number) != number:
                raise UserError(f"{meta_path(p)}: says shard={meta['shard']!r} but the file is shard {number} (renamed?)")
            if meta.get("num_shards", len(prefixes)) != len(prefixes):
                raise UserError(f"{meta_path(p)}: says num_shards={meta['num_shards']!r} but {prefix} has "
                                f"{len(prefixes)} shard(s) (one is missing, or left over from another build)")
    return reports
