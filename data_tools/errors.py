"""The one exception type for a user's mistake.

A ``UserError`` message is a single line that names the file (and line/page/key) at fault and what was
expected. Every package's ``__main__`` catches it, prints ``error: <message>`` to stderr and exits 2;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A mistake in the user's input or arguments, reported as one line without a traceback."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))


@contextmanager
def reading(path: object, what: str, expected: str) -> Iterator[None]:
    """Opening and reading ``path`` inside this block: a missing file, a directory or an unreadable file
    becomes one ``UserError`` line naming ``path`` (``what``: "index file", ``expected``: "a file")."""
    try:
        yield
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected {expected}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None


def run_cli(main: Callable[[], T]) -> T:
    """Run a CLI ``main``; turn ``UserError`` (and Ctrl-C) into one line on stderr and a non-zero exit."""
    try:
        return main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:
        # `python -m data_tools inspect … | head`: the reader left; exit quietly like other Unix tools.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None
    except OSError as exc:
        import errno

        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # A writer that does not name its file itself: still one line, never a traceback for a full disk.
        where = f" while writing {exc.filename}" if exc.filename else ""
        print(f"error: no space left on device{where} ({exc.strerror}); free space and rerun", file=sys.stderr)
        raise SystemExit(2) from None
