"""Fixtures shared by the pre-training tests; none is autouse: a module asks for what it needs
(``pytestmark = pytest.mark.usefixtures("single_process")``, a ``corpus`` argument)."""

from __future__ import annotations

import pytest
from engine_kit import single_process_env, tiny_corpus


@pytest.fixture(scope="module")
def single_process():
    """An in-process world-size-1 run's environment (``engine_kit.single_process_env``), once per module."""
    single_process_env()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny indexed corpus and its tokenizer, ``(prefix, tokenizer dir)``, built once per module."""
    return tiny_corpus(str(tmp_path_factory.mktemp("corpus")))
