"""Real data that ships inside installed PyPI wheels, found without importing (or running) their packages.

gensim's test suite ships a shortened English Wikipedia dump (206 pages, about half redirects; text
CC BY-SA, from Wikipedia's dumps of enwiki). We only read the file: gensim is installed with ``--no-deps``
and is never imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from data_tools.errors import UserError

WIKI_DUMP_NAME = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def package_dir(name: str) -> Path | None:
    """Return the directory of installed package ``name`` without importing it, or ``None``."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def installed_package_dir(name: str) -> Path:
    """:func:`package_dir`, or a ``UserError`` saying to install the package (it ships the data)."""
    root = package_dir(name)
    if root is None:
        raise UserError(f"package {name!r} is not installed; install it with pip (it ships the data)")
    return root


def wiki_dump_path() -> Path:
    """Return the path of gensim's embedded real Wikipedia XML dump (bz2).

    Raises:
        UserError: if gensim (installed with ``--no-deps`` by the Makefile) is missing.
    """
    root = package_dir("gensim")
    path = root / "test" / "test_data" / WIKI_DUMP_NAME if root else None
    if path is None or not path.is_file():
        raise UserError(
            f"embedded Wikipedia sample {WIKI_DUMP_NAME} not found: install it with "
            "`pip install --no-deps gensim==4.4.0` (done by `make venv`)"
        )
    return path
