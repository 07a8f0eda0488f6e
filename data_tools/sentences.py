"""Offline sentence splitting for BERT-style sentence pairs.

We use BlingFire (Microsoft, MIT): its sentence-breaking FSM ships inside the wheel (nothing downloads, unlike
NLTK's punkt that Megatron's preprocess_data.py fetches at run time), it handles many scripts (CJK full stops
included) and runs at tens of MB/s in C++, so splitting costs little next to tokenizing. pysbd and
sentence-splitter were the alternatives: offline too, but pure-Python regex pipelines 50-100x slower.

Two repairs on top: breaks are forced at line ends (BlingFire joins single newlines, but a line break in extracted
wiki text or OWT ends a paragraph or list item), and a break right after a title such as "Mrs." is undone,
BlingFire's one frequent mistake on English news and encyclopedia text.
"""

from __future__ import annotations

import blingfire

# Titles that precede a name and never end a sentence in practice ("Jr."/"etc." do end sentences: not here).
TITLES = frozenset(["Mr", "Mrs", "Ms", "Dr", "Prof", "St", "Gen", "Col", "Lt", "Sgt", "Capt", "Rev", "Hon", "Gov", "Sen", "Rep", "Mt"])


def _ends_with_title(sentence: str) -> bool:
    if not sentence.endswith("."):
        return False
    last = sentence[-6:].rsplit(None, 1)[-1][:-1]  # titles are at most 4 letters, so 6 chars suffice
    return last in TITLES and (len(sentence) == len(last) + 1 or sentence[-len(last) - 2].isspace())


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences (whitespace-trimmed, non-empty), in order.

    Args:
        text: a document; newlines separate paragraphs.

    Returns:
        the sentences; their concatenation holds every non-space character of ``text`` in order.
    """
    if not text or text.isspace():
        return []
    # One BlingFire call per document (a call per line costs twice as much). BlingFire joins "\n" into the
    # sentence but keeps "\r" verbatim, so line ends are passed as "\r" and re-imposed here.
    out: list[str] = []
    pending = ""
    cursor = 0
    for sent in blingfire.text_to_sentences(text.replace("\n", "\r")).split("\n"):
        if not pending and "\r" not in sent and not _ends_with_title(sent):  # the common case, fast
            sent = sent.strip()
            if sent:
                out.append(sent)
            continue
        parts = sent.split("\r")
        for j, part in enumerate(parts):
            ends_line = j < len(parts) - 1
            part = part.strip()
            if part:
                raw = part
                part = f"{pending} {part}" if pending else part
                pending = ""
                if _ends_with_title(part) and not ends_line:
                    # BlingFire drops a "\r" where it also breaks the sentence: look at the original text.
                    loc = text.find(raw, cursor)
                    cursor = loc + len(raw) if loc >= 0 else cursor
                    ends_line = loc >= 0 and text[cursor:].lstrip(" \t").startswith(("\n", "\r"))
                if _ends_with_title(part) and not ends_line:
                    pending = part
                else:
                    out.append(part)
            elif ends_line and pending:
                out.append(pending)
                pending = ""
    if pending:
        out.append(pending)
    return out
