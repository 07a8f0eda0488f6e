"""What the benchmarks' measured parts share: memory read from ``/proc/self/status``, the raw tokenizer's inputs.

Each part runs in a fresh interpreter (``--part``), so the peak RSS it reports is its own. Scripts run as
``python benchmarks/<name>.py``, so this module imports as ``parts``.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path


def vm_kib(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``, …) in KiB; None where there is none."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in lines if line.startswith(field + ":")), None)


def peak_rss_mb() -> float:
    """This process's peak resident set size, MiB."""
    # VmHWM, not ru_maxrss: after fork+exec ru_maxrss still counts the parent's pages copied by the fork.
    peak = vm_kib("VmHWM")
    return (peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def raw_tokenizer_inputs(docs: str | Path, tok_dir: str | Path):
    """The raw-tokenizer baseline's inputs: every document's text from the JSONL ``docs``, in memory, and the
    trained tokenizer, so that the timed part is the encode call alone (no reading)."""
    import tokenizers

    with Path(docs).open(encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh]
    return texts, tokenizers.Tokenizer.from_file(str(Path(tok_dir) / "tokenizer.json"))
