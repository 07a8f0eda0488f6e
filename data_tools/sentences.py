"""Offline sentence splitting for BERT-style sentence pairs.

We use BlingFire (Microsoft, MIT): its sentence-breaking FSM ships inside the wheel (nothing downloads, unlike
NLTK's punkt that Megatron's preprocess_data.py fetches at run time), it handles many scripts (CJK full stops
included) and runs at tens of MB/s in C++, so splitting costs little next to tokenizing. pysbd and
sentence-splitter were the alternatives: offline too, but pure-Python regex pipelines 50-100x slower.

Two repairs on top: lines are split first (BlingFire joins single newlines, but a line break in extracted
wiki text or OWT ends a paragraph or list item), and a break right after a title such as "Mrs." is undone,
BlingFire's one frequent mistake on English news and encyclopedia text.
"""

from __future__ import annotations

import re

import blingfire

# Titles that precede a name and never end a sentence in practice ("Jr."/"etc." do end sentences: not here).
_TITLE_END = re.compile(r"(?:^|\s)(?:Mr|Mrs|Ms|Dr|Prof|St|Gen|Col|Lt|Sgt|Capt|Rev|Hon|Gov|Sen|Rep|Mt)\.$")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences (whitespace-trimmed, non-empty), in order.

    Args:
        text: a document; newlines separate paragraphs.

    Returns:
        the sentences; their concatenation holds every non-space character of ``text`` in order.
    """
    out: list[str] = []
    for line in text.split("\n"):
        if not line or line.isspace():
            continue
        pending = ""
        for sent in blingfire.text_to_sentences(line).split("\n"):
            sent = sent.strip()
            if not sent:
                continue
            sent = f"{pending} {sent}" if pending else sent
            if _TITLE_END.search(sent):
                pending = sent
                continue
            pending = ""
            out.append(sent)
        if pending:
            out.append(pending)
    return out
