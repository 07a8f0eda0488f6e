"""Parse a JSON document; a syntax error becomes a one-line ``UserError`` naming the file and line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_tools.errors import UserError


def parse_json(text: str, path: str | os.PathLike, *, expected: str | None = None, column: bool = False,
               object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """``json.loads(text)``, or ``UserError("PATH:LINE: invalid JSON (reason)")`` on a syntax error.

    Args:
        text: the document.
        path: the file it came from (named in the message).
        expected: what the file should hold, appended as ``; expected <expected>``.
        column: name the column too (``PATH:LINE:COL: ...``).
        object_pairs_hook: passed to ``json.loads`` (e.g. a duplicate-key check, which raises its own error).
    Returns:
        The parsed value (any JSON type; callers check the shape they need).
    """
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as exc:
        where = f"{path}:{exc.lineno}:{exc.colno}" if column else f"{path}:{exc.lineno}"
        hint = f"; expected {expected}" if expected else ""
        raise UserError(f"{where}: invalid JSON ({exc.msg}){hint}") from None


def read_json(path: str | os.PathLike, **kwargs: Any) -> Any:
    """:func:`parse_json` of the UTF-8 file ``path`` (read errors propagate unchanged; ``kwargs`` as there)."""
    path = Path(path)
    return parse_json(path.read_text(encoding="utf-8"), path, **kwargs)
