"""MediaWiki XML dumps (``pages-articles.xml[.bz2]``): stream pages with mwxml, wikitext to prose with
mwparserfromhell.

Streaming: mwxml walks ``iterparse`` events and clears each page; we also drop finished pages from the
root element (mwxml keeps them as empty children), so memory stays flat however large the dump. The XML
is fed as bytes, so expat honours a non-UTF-8 ``encoding=`` declaration.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mwparserfromhell
import mwxml
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
_EMPTY_PARENS = re.compile(r"\(\s*[,;:]?\s*\)|\[\s*\]")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?)])")
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


def _drop_prefixes(dump: mwxml.Dump) -> frozenset[str]:
    names = set(DROP_NAMESPACES)
    for ns in dump.site_info.namespaces or ():
        if ns.id in DROP_NAMESPACE_IDS and ns.name:
            names.add(ns.name.lower())
    return frozenset(names)


def iter_articles(
    path: Path, policy: BadInputPolicy | None = None, stats: dict | None = None
) -> Iterator[Page]:
    """Yield main-namespace, non-redirect, non-disambiguation pages of a dump, in dump order.

    Args:
        path: ``.xml`` or ``.xml.bz2`` (also ``.gz``/``.xz``).
        policy: unused for structure errors (a broken XML stream cannot be resumed), kept for symmetry.
        stats: if given, counts ``pages``, ``redirects``, ``other_namespace``, ``disambiguation`` are added.

    Raises:
        UserError: truncated/corrupt compression or malformed XML, naming the file, line and last page.
    """
    stats = stats if stats is not None else {}
    for key in ("pages", "redirects", "other_namespace", "disambiguation"):
        stats.setdefault(key, 0)
    last = "the first page"
    with open_binary(path) as fh:
        try:
            root = mwxml.element_iterator.ElementIterator.from_file(fh)
            if root.tag != "mediawiki":
                raise UserError(f"{path}: not a MediaWiki XML export (root element <{root.tag}>, expected <mediawiki>)")
            dump = mwxml.Dump.from_element(root)
            drop = _drop_prefixes(dump)
            for page in dump.pages:
                stats["pages"] += 1
                text = None
                for revision in page:  # pages-articles has one; history dumps: keep the newest
                    text = revision.text
                last = f"page {page.id} {page.title!r}"
                root.element.clear()  # finished pages stay as empty children otherwise: memory would grow
                if page.namespace != 0:
                    stats["other_namespace"] += 1
                elif page.redirect is not None or (text or "").lstrip()[:9].upper() == "#REDIRECT":
                    stats["redirects"] += 1
                elif not text or _is_disambiguation(page.title, text):
                    stats["disambiguation"] += bool(text)
                else:
                    yield Page(id=page.id, title=page.title, wikitext=text, drop_prefixes=drop)
        except UserError:
            raise
        except ET.ParseError as exc:
            line, col = getattr(exc, "position", (0, 0))
            msg = str(exc).split(":")[0]
            raise UserError(f"{path}: malformed XML at line {line}, column {col} after {last} ({msg})") from None
        except mwxml.errors.MalformedXML as exc:
            raise UserError(f"{path}: malformed MediaWiki XML after {last} ({exc})") from None
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
    code = mwparserfromhell.parse(wikitext, skip_style_tags=True)
    out: list[str] = []
    _render(code.nodes, out, drop_prefixes, headings)
    text = _MAGIC_WORD.sub("", "".join(out))
    lines = []
    for line in text.split("\n"):
        line = _SPACES.sub(" ", _EMPTY_PARENS.sub("", line))
        line = _SPACE_BEFORE_PUNCT.sub(r"\1", line).strip()
        line = line.lstrip("*#:; ").replace("'''", "").replace("''", "")
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
