"""The line every benchmark prints first: when, on which machine, under what load, with which versions.

Benchmarks are compared across runs only through their ratios; this line says whether two runs are
comparable at all. Scripts run as ``python benchmarks/<name>.py``, so this module imports as ``machine``.
"""

from __future__ import annotations

import datetime
import os
import platform
from importlib.metadata import PackageNotFoundError, version


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def describe(packages: tuple[str, ...], threads: int | None = None) -> str:
    """``key=value`` pairs: date, host, cpu, cores, load, python, torch threads and each package's version."""
    parts = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": f"'{cpu_name()}'",
        "cores": os.cpu_count(),
        "load_avg": f"{os.getloadavg()[0]:.2f}",
        "python": platform.python_version(),
    }
    if threads is not None:
        parts["threads"] = threads
    parts.update({p: _version(p) for p in packages})
    return " ".join(f"{k}={v}" for k, v in parts.items())
