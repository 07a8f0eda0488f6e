"""Plain text: a file holds documents separated by blank lines (BERT's create_pretraining_data convention);
a directory holds one document per ``.txt`` file (searched recursively, sorted by path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from data_tools.errors import UserError
from data_tools.sources import (
    DECOMPRESS_ERRORS,
    BadInputPolicy,
    Document,
    decompress_error,
    document_from_bytes,
    inside_folder,
    open_binary,
)


def read_text(path: Path, policy: BadInputPolicy | None = None) -> Iterator[Document]:
    """Yield the documents of a text file or a directory of ``.txt`` files.

    Raises:
        UserError: non-UTF-8 bytes (naming file and line) unless ``policy.skip``; unreadable input.
    """
    policy = policy or BadInputPolicy()
    if path.is_dir():
        for f in inside_folder(path, sorted(path.rglob("*.txt")), policy):
            data = _read_bytes(f, policy)
            doc = None if data is None else document_from_bytes(data, str(f), str(f.relative_to(path)), policy)
            if doc is not None:
                yield doc
        return
    yield from _blocks(path, policy)


def _read_bytes(path: Path, policy: BadInputPolicy) -> bytes | None:
    try:
        with open_binary(path) as fh:
            return policy.read_capped(fh, str(path))
    except DECOMPRESS_ERRORS as exc:
        if isinstance(exc, UserError):
            raise
        raise decompress_error(path, exc) from None


def _blocks(path: Path, policy: BadInputPolicy) -> Iterator[Document]:
    lines: list[str] = []
    start, bad = 1, False
    with open_binary(path) as fh:
        try:
            for lineno, raw in policy.lines(fh, str(path)):
                if raw is None:  # over --max-doc-bytes (reported): drop the document it belongs to
                    bad = True
                    continue
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    policy.bad(f"{path}:{lineno}: not UTF-8 (invalid byte 0x{raw[exc.start]:02x})")
                    bad = True  # drop the whole document this line belongs to
                    continue
                if line.strip():
                    if not lines:
                        start = lineno
                    lines.append(line)
                elif lines or bad:
                    if lines and not bad:
                        yield Document(id=f"{path}:{start}", text="\n".join(lines))
                    lines, bad = [], False
        except UserError:
            raise
        except DECOMPRESS_ERRORS as exc:
            raise decompress_error(path, exc) from None
    if lines and not bad:
        yield Document(id=f"{path}:{start}", text="\n".join(lines))
