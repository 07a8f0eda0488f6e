"""MediaWiki XML dumps (``pages-articles.xml[.bz2]``): stream pages with ElementTree's ``iterparse``,
wikitext to prose with mwparserfromhell.

Streaming: each finished page is cleared from the root element, so memory stays flat however large the
dump. The XML is fed as bytes, so expat honours a non-UTF-8 ``encoding=`` declaration. (mwxml did this
before; its per-element Python objects cost more than expat's parse itself, and it refuses an export
without ``<siteinfo>``.)
"""

from __future__ import annotations

import contextlib
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import mwparserfromhell
from mwparserfromhell.nodes import (
    Argument,
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Template,
    Text,
    Wikilink,
)

from data_tools.errors import UserError
from data_tools.sources import DECOMPRESS_ERRORS, BadInputPolicy, Document, decompress_error, open_binary

# Tags whose content is not prose.
DROP_TAGS = frozenset(
    ["ref", "references", "gallery", "table", "math", "chem", "score", "timeline", "imagemap", "syntaxhighlight", "source", "pre", "code", "graph", "mapframe", "maplink", "templatedata", "templatestyles", "hiero", "inputbox", "categorytree", "noinclude"]
)
# Tags that end a line of prose (list items, paragraphs, line breaks).
BREAK_TAGS = frozenset(["li", "dd", "dt", "p", "br", "div", "tr", "blockquote"])
# Namespaces whose links are media or metadata, not text: canonical names plus what the dump's siteinfo
# calls them in its own language (File=6, Category=14, Media=-2).
DROP_NAMESPACES = frozenset({"file", "image", "media", "category"})
DROP_NAMESPACE_IDS = frozenset({-2, 6, 14})
# Interlanguage/interwiki prefixes such as "de:", "zh-min-nan:", "simple:".
_LANG_PREFIX = re.compile(r"^[a-z]{2,3}(-[a-z]{2,8})*$|^simple$")
DISAMBIGUATION_TEMPLATES = frozenset(
    {"disambiguation", "disambig", "dab", "disamb", "hndis", "geodis", "numberdis", "set index article",
     "letter disambiguation", "mathdab", "shipindex", "roaddis", "begriffsklärung", "homonymie", "desambiguación"}
)
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
# [^\S\n]: whitespace within a line (these run over the whole text; lines must stay apart).
_EMPTY_PARENS = re.compile(r"\([^\S\n]*[,;:]?[^\S\n]*\)|\[[^\S\n]*\]")
_SPACE_BEFORE_PUNCT = re.compile(r"[^\S\n]+([,.;:!?)])")
_SPACES = re.compile(r"[ \t\u00a0]+")


@dataclass(frozen=True)
class Page:
    """A main-namespace article as found in the dump (wikitext not yet cleaned)."""

    id: int
    title: str
    wikitext: str
    drop_prefixes: frozenset[str] = DROP_NAMESPACES

    @property
    def text(self) -> str:
        """The uncleaned wikitext (so a page passes where a Document's ``text`` is only counted)."""
        return self.wikitext


# Canonical namespace names (MediaWiki's defaults), used when an export has no <siteinfo> and its pages no
# <ns>: a title "Template:X" is then in namespace 10, as MediaWiki itself would read it.
DEFAULT_NAMESPACES = {
    "media": -2, "special": -1, "talk": 1, "user": 2, "user talk": 3, "wikipedia": 4, "wikipedia talk": 5,
    "file": 6, "image": 6, "file talk": 7, "mediawiki": 8, "mediawiki talk": 9, "template": 10,
    "template talk": 11, "help": 12, "help talk": 13, "category": 14, "category talk": 15, "portal": 100,
    "draft": 118, "module": 828,
}


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    for c in elem:
        if _local(c.tag) == name:
            return c
    return None


def _site_namespaces(siteinfo: ET.Element) -> dict[str, int]:
    """``{lower-case name: id}`` from ``<siteinfo><namespaces>`` (the dump's own language)."""
    names = {}
    spaces = _child(siteinfo, "namespaces")
    for ns in spaces if spaces is not None else ():
        key = ns.get("key")
        if ns.text and key is not None and key.lstrip("-").isdigit():
            names[ns.text.strip().lower()] = int(key)
    return names


def _namespace(page: ET.Element, title: str, names: dict[str, int]) -> int:
    ns = _child(page, "ns")
    if ns is not None and (ns.text or "").strip().lstrip("-").isdigit():
        return int(ns.text)
    prefix, sep, _ = title.partition(":")
    return names.get(prefix.strip().lower(), 0) if sep else 0


def _read_page(page: ET.Element, names: dict[str, int]) -> tuple[int, str, int, bool, str | None]:
    """``(id, title, namespace, redirect, newest revision's text)`` of a ``<page>`` element."""
    title = (_child(page, "title").text or "") if _child(page, "title") is not None else ""
    pid_el = _child(page, "id")
    pid = int(pid_el.text) if pid_el is not None and (pid_el.text or "").strip().isdigit() else 0
    text = None
    for c in page:  # pages-articles has one revision; history dumps: keep the newest (the last)
        if _local(c.tag) == "revision":
            t = _child(c, "text")
            text = t.text if t is not None else None
    return pid, title, _namespace(page, title, names), _child(page, "redirect") is not None, text


def iter_articles(
    path: Path, policy: BadInputPolicy | None = None, stats: dict | None = None, fh: IO[bytes] | None = None
) -> Iterator[Page]:
    """Yield main-namespace, non-redirect, non-disambiguation pages of a dump, in dump order.

    The XML is read with ElementTree's C ``iterparse``; each finished page is cleared from the tree, so
    memory stays flat however large the dump. An export without ``<siteinfo>`` (Special:Export subsets) is
    read with MediaWiki's default namespaces.

    Args:
        path: ``.xml`` or ``.xml.bz2`` (also ``.gz``/``.xz``); only named in errors when ``fh`` is given.
        policy: unused for structure errors (a broken XML stream cannot be resumed), kept for symmetry.
        stats: if given, counts ``pages``, ``redirects``, ``other_namespace``, ``disambiguation`` are added.
        fh: read this binary stream instead of opening ``path`` (a multistream byte range).

    Raises:
        UserError: truncated/corrupt compression or malformed XML, naming the file, line and last page.
    """
    stats = stats if stats is not None else {}
    for key in ("pages", "redirects", "other_namespace", "disambiguation"):
        stats.setdefault(key, 0)
    last = "the first page"
    with contextlib.ExitStack() as stack:
        if fh is None:
            fh = stack.enter_context(open_binary(path))
        try:
            events = ET.iterparse(fh, events=("start", "end"))
            _, root = next(events)
            if _local(root.tag) != "mediawiki":
                raise UserError(f"{path}: not a MediaWiki XML export (root element <{_local(root.tag)}>, "
                                "expected <mediawiki>)")
            names, drop = dict(DEFAULT_NAMESPACES), DROP_NAMESPACES
            depth = 0
            for event, elem in events:
                if event == "start":
                    depth += 1
                    continue
                depth -= 1
                if depth != 0:  # only the children of <mediawiki> matter: <siteinfo> and <page>
                    continue
                tag = _local(elem.tag)
                if tag == "siteinfo":
                    names = _site_namespaces(elem) or names
                    drop = frozenset(DROP_NAMESPACES | {n for n, i in names.items() if i in DROP_NAMESPACE_IDS})
                elif tag == "page":
                    stats["pages"] += 1
                    pid, title, ns, redirect, text = _read_page(elem, names)
                    last = f"page {pid} {title!r}"
                    if ns != 0:
                        stats["other_namespace"] += 1
                    elif redirect or (text or "").lstrip()[:9].upper() == "#REDIRECT":
                        stats["redirects"] += 1
                    elif not text or _is_disambiguation(title, text):
                        stats["disambiguation"] += bool(text)
                    else:
                        yield Page(id=pid, title=title, wikitext=text, drop_prefixes=drop)
                root.clear()  # finished pages would otherwise stay in the tree: memory would grow
        except UserError:
            raise
        except StopIteration:
            raise UserError(f"{path}: empty XML (no <mediawiki> root element)") from None
        except ET.ParseError as exc:
            line, col = getattr(exc, "position", (0, 0))
            msg = str(exc).split(":")[0]
            raise UserError(f"{path}: malformed XML at line {line}, column {col} after {last} ({msg})") from None
        except DECOMPRESS_ERRORS as exc:
            err = decompress_error(path, exc)
            raise UserError(f"{err} (after {last})") from None


def _is_disambiguation(title: str, wikitext: str) -> bool:
    if title.endswith("(disambiguation)"):
        return True
    for m in re.finditer(r"\{\{\s*([^|}]+)", wikitext[-3000:]):
        if m.group(1).strip().lower().replace("_", " ") in DISAMBIGUATION_TEMPLATES:
            return True
    return False


# The pre-pass: what carries no prose is cut with C-speed regular expressions before mwparserfromhell sees
# the page. Profiling extract-wiki showed 60% of its time in mwparserfromhell's Python tree builder, mostly
# building Template and Tag nodes that _render then throws away. The pre-pass only removes what _render
# would drop anyway (innermost templates first, then the tags in DROP_TAGS, comments and tables), so what it
# misses (a template holding a lone brace, say) still reaches the parser and is dropped there.
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_INNER_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_SELF_CLOSED = re.compile(r"<(?:ref|references)\b[^<>]*/>", re.I)
_DROP_TAG_BLOCK = re.compile(
    r"<(" + "|".join(sorted(DROP_TAGS, key=len, reverse=True)) + r")\b[^<>]*(?<!/)>.*?</\1\s*>", re.S | re.I
)
# An innermost table: opens at a line start and closes at the next line-start "|}" with no table opening
# in between.
_INNER_TABLE = re.compile(r"\n[ \t]*\{\|(?:(?!\n[ \t]*\{\|).)*?\n[ \t]*\|\}", re.S)


def _repeat(pattern: re.Pattern, text: str, repl: str = "") -> str:
    while True:
        text, n = pattern.subn(repl, text)
        if not n:
            return text


def prepass(wikitext: str) -> str:
    """``wikitext`` without comments, templates, references, tables and the other DROP_TAGS blocks."""
    text = _COMMENT.sub("", wikitext)
    text = _repeat(_INNER_TEMPLATE, text)
    text = _SELF_CLOSED.sub("", text)
    text = _DROP_TAG_BLOCK.sub("", text)
    if "{|" in text:
        text = _repeat(_INNER_TABLE, "\n" + text, "\n")[1:]
    return text


def clean_wikitext(wikitext: str, drop_prefixes: frozenset[str] = DROP_NAMESPACES, headings: bool = False) -> str:
    """Turn wikitext into plain prose: templates, references, tables, files, categories, comments and
    markup removed; link text kept; one paragraph per line.

    Args:
        wikitext: the page source.
        drop_prefixes: lower-case namespace names whose links are dropped (files, categories).
        headings: keep section headings as their own lines.

    Returns:
        the text, paragraphs separated by ``\\n``.
    """
    code = mwparserfromhell.parse(prepass(wikitext), skip_style_tags=True)
    out: list[str] = []
    _render(code.nodes, out, drop_prefixes, headings)
    text = _MAGIC_WORD.sub("", "".join(out))
    # One pass of each over the whole text (the patterns stay within lines), not one per line: per-line
    # regex calls were a tenth of extract-wiki's time.
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", _EMPTY_PARENS.sub("", text)))
    lines = []
    for line in text.split("\n"):
        line = line.strip().lstrip("*#:; ").replace("'''", "").replace("''", "")
        if line and any(c.isalnum() for c in line):
            lines.append(line)
    return "\n".join(lines)


def _render(nodes, out: list[str], drop: frozenset[str], headings: bool) -> None:  # noqa: C901 - a dispatch
    for node in nodes:
        if isinstance(node, Text):
            out.append(str(node.value))
        elif isinstance(node, Wikilink):
            title = str(node.title).strip()
            prefix = title.split(":", 1)[0].strip().lower() if ":" in title else ""
            if prefix and not title.startswith(":") and (prefix in drop or _LANG_PREFIX.match(prefix)):
                continue
            _render((node.text or node.title).nodes, out, drop, headings)
        elif isinstance(node, ExternalLink):
            if node.title is not None:
                _render(node.title.nodes, out, drop, headings)
        elif isinstance(node, Tag):
            tag = str(node.tag).strip().lower()
            if tag in DROP_TAGS:
                continue
            if tag in BREAK_TAGS:
                out.append("\n")
            if node.contents is not None:
                _render(node.contents.nodes, out, drop, headings)
            if tag in BREAK_TAGS:
                out.append("\n")
        elif isinstance(node, Heading):
            out.append("\n")
            if headings:
                _render(node.title.nodes, out, drop, headings)
                out.append("\n")
        elif isinstance(node, HTMLEntity):
            out.append(node.normalize())
        elif isinstance(node, (Template, Comment, Argument)):
            continue
        # anything else (parser functions are Templates; wiki tables are Tags) carries no prose


def page_document(page: Page, headings: bool = False) -> Document:
    """Clean a page into a :class:`Document` (id = page id). A page the parser cannot handle comes back
    empty (and is then dropped as too short), with a warning naming it: one odd page must not stop a dump."""
    try:
        text = clean_wikitext(page.wikitext, page.drop_prefixes, headings)
    except (mwparserfromhell.parser.ParserError, RecursionError, ValueError) as exc:
        print(f"warning: page {page.id} {page.title!r}: wikitext not parsed ({type(exc).__name__}); dropped",
              file=sys.stderr)
        text = ""
    return Document(id=str(page.id), text=text, title=page.title)


def read_wiki(path: Path, policy: BadInputPolicy | None = None, headings: bool = False) -> Iterator[Document]:
    """Documents of a dump, cleaned in this process (``extract-wiki --workers`` parallelises the cleaning)."""
    for page in iter_articles(path, policy):
        doc = page_document(page, headings)
        if doc.text:
            yield doc
