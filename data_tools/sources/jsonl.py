"""JSON lines: one object per line, the text under ``--json-key`` (Megatron's preprocess_data.py input)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from data_tools.errors import UserError
from data_tools.sources import DECOMPRESS_ERRORS, BadInputPolicy, Document, decompress_error, open_binary


def _lines_in_range(path: Path, start: int, end: int) -> Iterator[bytes]:
    """The lines of an uncompressed file that start in bytes ``[start, end)``: a line belongs to the range
    holding its first byte, so adjacent ranges read every line exactly once."""
    with open_binary(path) as fh:
        pos = start
        if start > 0:
            fh.seek(start - 1)
            pos = start - 1 + len(fh.readline())  # the rest of the line that started before us
        while pos < end:
            line = fh.readline()
            if not line:
                return
            pos += len(line)
            yield line


def read_jsonl(path: Path, json_key: str = "text", policy: BadInputPolicy | None = None, start: int = 0,
               end: int = -1) -> Iterator[Document]:
    """Yield one document per non-blank line of ``path`` (``.gz``/``.bz2``/``.xz`` decompressed).

    Args:
        start, end: only the lines starting in bytes ``[start, end)`` of an uncompressed file (``end`` -1:
            the whole file). Errors then name ``file@byte`` instead of ``file:line`` past the first range.

    Raises:
        UserError: ``file:line`` and what was wrong (bad JSON, not an object, missing or non-string key,
            non-UTF-8 bytes), unless ``policy.skip``; a truncated/corrupt compressed file always.
    """
    policy = policy or BadInputPolicy()
    lineno, byte = 0, start
    ranged = end >= 0
    with open_binary(path) if not ranged else contextlib.nullcontext(_lines_in_range(path, start, end)) as fh:
        try:
            # Unranged: lines read with the --max-doc-bytes cap (bounded memory on a bomb); a byte range's lines
            # come from _lines_in_range and are checked against the cap after reading.
            lines = policy.lines(fh, str(path)) if not ranged else enumerate(fh, 1)
            for lineno, raw in lines:  # noqa: B007 - lineno is used after the loop for errors
                where = f"{path}@{byte}" if ranged and start > 0 else f"{path}:{lineno}"
                if raw is None:  # over --max-doc-bytes, reported
                    continue
                byte += len(raw)
                if ranged and len(raw) > policy.max_doc_bytes:
                    policy.too_big(where)
                    continue
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    policy.bad(f"{where}: not UTF-8 (invalid byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    policy.bad(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})")
                    continue
                if not isinstance(obj, dict):
                    policy.bad(f"{where}: expected a JSON object with key {json_key!r}, got {type(obj).__name__}")
                    continue
                if json_key not in obj:
                    keys = ", ".join(list(obj)[:8])
                    policy.bad(f"{where}: missing key {json_key!r} (keys: {keys}); choose one with --json-key")
                    continue
                text = obj[json_key]
                if not isinstance(text, str):
                    policy.bad(f"{where}: key {json_key!r} holds {type(text).__name__}, expected a string")
                    continue
                doc_id = obj.get("id", where)
                yield Document(id=str(doc_id), text=text, title=str(obj.get("title", "")))
        except UserError:
            raise
        except DECOMPRESS_ERRORS as exc:
            raise decompress_error(path, exc) from None
