"""Document sources: real and synthetic wiki dumps, OpenWebText archives, JSONL and text, and their errors."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tarfile

import pytest

from data_tools.errors import UserError
from data_tools.sources import BadInputPolicy, read_documents
from data_tools.sources.owt import read_owt
from data_tools.sources.wiki import clean_wikitext, iter_articles, read_wiki

SITEINFO = """<siteinfo><sitename>Wikipedia</sitename><dbname>dewiki</dbname><namespaces>
<namespace key="-2" case="first-letter">Medium</namespace><namespace key="0" case="first-letter" />
<namespace key="6" case="first-letter">Datei</namespace><namespace key="10" case="first-letter">Vorlage</namespace>
<namespace key="14" case="first-letter">Kategorie</namespace></namespaces></siteinfo>"""


def page(pid, title, text, ns=0, redirect=None):
    red = f'<redirect title="{redirect}" />' if redirect else ""
    return (f"<page><title>{title}</title><ns>{ns}</ns><id>{pid}</id>{red}<revision><id>{pid}0</id>"
            f"<text xml:space=\"preserve\">{text}</text></revision></page>")


def dump(*pages, encoding="utf-8"):
    head = f'<?xml version="1.0" encoding="{encoding}"?>\n' if encoding != "utf-8" else ""
    body = (f'{head}<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="de">'
            f"{SITEINFO}{''.join(pages)}</mediawiki>")
    return body.encode(encoding)


ARTICLE = (
    "{{Infobox Stadt|Name=Köln|Einwohner=1000000}}'''Köln''' ist eine [[Stadt]] am [[Rhein|Fluss Rhein]]."
    "&lt;ref&gt;Quelle {{cite web|url=x}}&lt;/ref&gt; Sie hat &amp;nbsp;viele Einwohner.\n"
    "== Geschichte ==\nDie Stadt wurde [[Römisches Reich|von Römern]] gegründet.&lt;!-- Kommentar --&gt;\n"
    "{| class=\"wikitable\"\n|-\n| Tabelle || Zelle\n|}\n"
    "[[Datei:Koeln.jpg|miniatur|Ein Bild]]\n* Ein Punkt der Liste\n"
    "[https://example.org Externer Link] ist hier.\n[[Kategorie:Stadt]]\n[[en:Cologne]]"
)


def test_clean_wikitext_keeps_prose_only():
    text = clean_wikitext(
        ARTICLE.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"),
        frozenset({"file", "image", "category", "datei", "kategorie"}),
    )
    assert text.splitlines() == [
        "Köln ist eine Stadt am Fluss Rhein. Sie hat viele Einwohner.",
        "Die Stadt wurde von Römern gegründet.",
        "Ein Punkt der Liste",
        "Externer Link ist hier.",
    ]
    with_headings = clean_wikitext("Intro text.\n== History ==\nMore text.", headings=True)
    assert with_headings.splitlines() == ["Intro text.", "History", "More text."]


def test_synthetic_dump_filters_pages_and_uses_siteinfo_namespaces(tmp_path):
    path = tmp_path / "dewiki.xml.bz2"
    path.write_bytes(bz2.compress(dump(
        page(1, "Köln", ARTICLE),
        page(2, "Koeln", "#WEITERLEITUNG [[Köln]]", redirect="Köln"),
        page(3, "Vorlage:Box", "{{{1}}}", ns=10),
        page(4, "Bank (Begriffsklärung)", "'''Bank''' steht für:\n* [[Bank (Möbel)]]\n{{Begriffsklärung}}"),
        page(5, "Leer", ""),
    )))
    stats: dict = {}
    pages = list(iter_articles(path, stats=stats))
    assert [p.title for p in pages] == ["Köln"]
    assert stats == {"pages": 5, "redirects": 1, "other_namespace": 1, "disambiguation": 1}
    docs = list(read_wiki(path))
    assert "Bild" not in docs[0].text and "Kategorie" not in docs[0].text and "Cologne" not in docs[0].text
    assert docs[0].id == "1" and docs[0].title == "Köln"


def test_non_utf8_xml_declaration(tmp_path):
    path = tmp_path / "latin1.xml"
    path.write_bytes(dump(page(7, "Ærø", "Die Insel '''Ærø''' liegt in Dänemark."), encoding="ISO-8859-1"))
    assert [d.text for d in read_wiki(path)] == ["Die Insel Ærø liegt in Dänemark."]


def test_real_dump(wiki_extract):
    """extract-wiki on the embedded real dump: redirects, other namespaces and disambiguation pages dropped,
    no markup left, non-ASCII text kept."""
    path, result = wiki_extract
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert result.pages == 206 and result.redirects >= 90 and result.other_namespace == 1
    assert len(docs) == result.documents == 206 - result.redirects - 1 - result.disambiguation - result.too_short
    assert docs[0]["title"] == "Anarchism" and docs[0]["text"].startswith("Anarchism is a political philosophy")
    for d in docs:
        for junk in ("{{", "}}", "[[", "]]", "<ref", "{|", "|}", "Category:", "File:", "thumb|"):
            assert junk not in d["text"], (d["title"], junk)
    assert any(not d["text"].isascii() for d in docs)


@pytest.mark.parametrize(
    "data, message",
    [
        (lambda good: good[: len(good) // 2], "truncated"),
        (lambda good: b"BZh9" + b"\x00" * 200, "corrupt compressed data|read error|truncated"),
    ],
)
def test_broken_bz2(tmp_path, data, message):
    good = bz2.compress(dump(*(page(i, f"P{i}", f"Text number {i}. " * 50) for i in range(1, 40))))
    path = tmp_path / "broken.xml.bz2"
    path.write_bytes(data(good))
    with pytest.raises(UserError, match=message) as err:
        list(read_wiki(path))
    assert str(path) in str(err.value)


def test_malformed_xml_names_line_and_page(tmp_path):
    path = tmp_path / "bad.xml"
    xml = dump(page(1, "Good", "Fine text."), page(2, "Bad", "x")).decode().replace("<id>2</id>", "<id>2</idd>")
    xml = xml.replace("<page>", "\n<page>")
    path.write_text(xml)
    line = xml[: xml.index("</idd>")].count("\n") + 1
    with pytest.raises(UserError, match=rf"bad.xml: malformed XML at line {line}, column \d+ after page 1 'Good'"):
        list(read_wiki(path))
    path.write_text("<html><body>not a dump</body></html>")
    with pytest.raises(UserError, match="not a MediaWiki XML export"):
        list(read_wiki(path))


def write_jsonl(path, lines):
    path.write_bytes(b"".join(line if isinstance(line, bytes) else line.encode() for line in lines))
    return path


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": "ok"\n', r"bad.jsonl:2: malformed JSON"),
        ('{"body": "no text key"}\n', r"bad.jsonl:2: missing key 'text' \(keys: body\)"),
        ("[1, 2]\n", r"bad.jsonl:2: expected a JSON object"),
        ('{"text": 5}\n', r"bad.jsonl:2: key 'text' holds int"),
        (b'{"text": "caf\xe9"}\n', r"bad.jsonl:2: not UTF-8 \(invalid byte 0xe9"),
    ],
)
def test_bad_jsonl_lines(tmp_path, line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", ['{"text": "first"}\n', line, '{"text": "third"}\n'])
    with pytest.raises(UserError, match=message):
        list(read_documents(path))
    policy = BadInputPolicy(skip=True)
    assert [d.text for d in read_documents(path, policy=policy)] == ["first", "third"]
    assert policy.skipped == 1 and "1 bad document" in policy.summary()


def test_jsonl_key_compression_and_empty(tmp_path):
    recs = "".join(json.dumps({"id": i, "content": f"doc {i}"}) + "\n" for i in range(3))
    for name, data in (("a.jsonl.gz", gzip.compress(recs.encode())), ("a.jsonl.xz", lzma.compress(recs.encode()))):
        (tmp_path / name).write_bytes(data)
        docs = list(read_documents(tmp_path / name, json_key="content"))
        assert [d.text for d in docs] == ["doc 0", "doc 1", "doc 2"] and docs[1].id == "1"
    (tmp_path / "t.jsonl.gz").write_bytes(gzip.compress(recs.encode() * 50)[:-30])
    with pytest.raises(UserError, match="t.jsonl.gz: truncated"):
        list(read_documents(tmp_path / "t.jsonl.gz", json_key="content"))
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(UserError, match="empty.jsonl: no documents found"):
        list(read_documents(tmp_path / "empty.jsonl"))
    with pytest.raises(UserError, match="input not found"):
        list(read_documents(tmp_path / "missing.jsonl"))


def test_text_file_and_folder(tmp_path):
    (tmp_path / "a.txt").write_text("First doc line one.\nLine two.\n\n\nSecond doc.\n")
    assert [d.text for d in read_documents(tmp_path / "a.txt")] == ["First doc line one.\nLine two.", "Second doc."]
    folder = tmp_path / "dir"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("Doc B.")
    (folder / "sub" / "a.txt").write_text("Doc A.")
    (folder / "bad.txt").write_bytes(b"ok\n\xff\n")
    with pytest.raises(UserError, match=r"bad.txt:2: not UTF-8"):
        list(read_documents(folder))
    policy = BadInputPolicy(skip=True)
    assert [d.text for d in read_documents(folder, policy=policy)] == ["Doc B.", "Doc A."] and policy.skipped == 1


def _member(tar, name, data=b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = len(data), kind, link
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def owt_archive(path, subsets):
    """Write the OpenWebText layout: a tar.xz of urlsf_subset*.xz, each an xz tar of .txt documents."""
    with tarfile.open(path, "w:xz") as outer:
        for k, docs in enumerate(subsets):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:xz") as inner:
                for j, text in enumerate(docs):
                    _member(inner, f"{k:04d}_{j}.txt", text.encode())
            _member(outer, f"openwebtext/urlsf_subset{k:02d}.xz", buf.getvalue())
    return path


def test_owt_layout_and_dedup(tmp_path):
    path = owt_archive(tmp_path / "openwebtext.tar.xz", [["Doc one.", "Doc two."], ["Doc three.", "Doc one."]])
    docs = list(read_owt(path))
    assert [d.text for d in docs] == ["Doc one.", "Doc two.", "Doc three.", "Doc one."]
    assert docs[2].id.endswith("openwebtext/urlsf_subset01.xz/0001_0.txt")
    assert [d.text for d in read_owt(path, dedup=True)] == ["Doc one.", "Doc two.", "Doc three."]
    assert [d.text for d in read_documents(path)] == [d.text for d in docs]
    # the outer tar unpacked: a folder of .xz subsets
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert [d.text for d in read_owt(tmp_path / "unpacked")] == [d.text for d in docs]


@pytest.mark.parametrize(
    "name, kind, link, message",
    [
        ("../../etc/evil.txt", tarfile.REGTYPE, "", "refusing unsafe member '../../etc/evil.txt'"),
        ("/abs/evil.txt", tarfile.REGTYPE, "", "refusing"),
        ("link.txt", tarfile.SYMTYPE, "/etc/passwd", "refusing link member 'link.txt'"),
        ("hard.txt", tarfile.LNKTYPE, "ok.txt", "refusing link member 'hard.txt'"),
    ],
)
def test_owt_refuses_escaping_members(tmp_path, name, kind, link, message):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        _member(tar, "ok.txt", b"A fine document.")
        _member(tar, name, b"payload" if kind == tarfile.REGTYPE else b"", kind, link)
    with pytest.raises(UserError, match=message):
        list(read_owt(path))
    policy = BadInputPolicy(skip=True)
    assert [d.text for d in read_owt(path, policy)] == ["A fine document."] and policy.skipped == 1
    assert not (tmp_path.parent / "etc" / "evil.txt").exists()


def test_owt_truncated_and_non_utf8(tmp_path):
    path = owt_archive(tmp_path / "owt.tar.xz", [[f"Document {i} " * 200 for i in range(20)]])
    cut = tmp_path / "cut.tar.xz"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="cut.tar.xz"):
        list(read_owt(cut))
    bad = owt_archive(tmp_path / "bad.tar.xz", [["Good text."]])
    with tarfile.open(bad, "w:xz") as outer:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:xz") as inner:
            _member(inner, "x.txt", b"caf\xe9")
        _member(outer, "urlsf_subset00.xz", buf.getvalue())
    with pytest.raises(UserError, match=r"urlsf_subset00.xz/x.txt:1: not UTF-8"):
        list(read_owt(bad))


def test_extract_owt_writes_jsonl(tmp_path):
    from data_tools.extract import extract_owt

    path = owt_archive(tmp_path / "owt.tar.xz", [["Doc one.", "Doc two."], ["Doc one.", "Doc three, longer."]])
    result = extract_owt(path, tmp_path / "out" / "owt.jsonl", dedup=True, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "out" / "owt.jsonl").read_text().splitlines()]
    assert [d["text"] for d in lines] == ["Doc one.", "Doc two.", "Doc three, longer."]
    assert result.documents == 3 and "3 documents" in result.summary()
    with pytest.raises(UserError, match="no documents extracted"):
        extract_owt(path, tmp_path / "short.jsonl", min_chars=1000, progress=False)
    assert not (tmp_path / "short.jsonl").exists()


def test_input_kind_from_names_and_content(tmp_path, wiki_dump):
    from data_tools.sources import input_kind

    assert input_kind(wiki_dump) == "wiki"  # enwiki-…-articles1.xml-p…-shortened.bz2: ".xml" mid-name
    (tmp_path / "export.bz2").write_bytes(bz2.compress(dump(page(1, "A", "Text."))))
    (tmp_path / "notes.txt").write_text("Just text.\n\nMore text.")
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(b'{"text": "x"}\n'))
    kinds = {p.name: input_kind(p) for p in tmp_path.iterdir()}
    assert kinds == {"export.bz2": "wiki", "notes.txt": "text", "d.jsonl.gz": "jsonl"}
    assert [d.text for d in read_documents(tmp_path / "export.bz2")] == ["Text."]
