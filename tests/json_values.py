"""Checks on values parsed from a run's JSON output, shared by the end-to-end tests (importable from any test:
``tests/`` is on ``sys.path`` through its ``conftest.py``)."""

from __future__ import annotations

import math


def all_finite(obj) -> bool:
    """Every float in ``obj`` (nested dicts and lists) is finite: no NaN or inf reached a log or result."""
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(all_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(all_finite(v) for v in obj)
    return True
