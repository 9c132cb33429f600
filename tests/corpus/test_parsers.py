"""Tests for groundwork.corpus.parsers and groundwork.corpus.rdata, on small hand-made files."""

import bz2
import json
import struct
from pathlib import Path

import pytest

from groundwork import corpus
from groundwork.corpus import parsers, rdata
from groundwork.errors import DataError, FetchError, InputEncodingError


def fake_fetched(home: Path, name: str, files: dict[str, bytes]) -> Path:
    """Lay out ``home/data/<name>`` as if fetched (a manifest with the registry's sha256)."""
    directory = home / "data" / name
    for rel, data in files.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(data)
    manifest = {"source": name, "sha256": corpus.get_source(name).sha256, "files": {}}
    (directory / "MANIFEST.json").write_text(json.dumps(manifest))
    return directory


def test_strip_wiki_markup() -> None:
    markup = (
        "{{Infobox|name={{nested}}}}'''Ada''' was a [[mathematician]] and [[writer|author]]."
        "<ref>Some ref</ref> See [https://example.org the site].\n"
        "== Early life ==\n[[File:Ada.jpg|thumb|A [[portrait]]]]\n* She met Babbage.\n"
        "{| class=wikitable\n| a || b\n|}\n[[Category:Mathematicians]]<!-- hidden -->&amp; more"
    )
    assert parsers.strip_wiki_markup(markup) == (
        "Ada was a mathematician and author. See the site.\n"
        "Early life\n\nShe met Babbage.\n\n& more"
    )


def test_wiki_articles_skip_redirects_and_other_namespaces(tmp_path: Path) -> None:
    ns = "http://www.mediawiki.org/xml/export-0.10/"
    xml = f"""<mediawiki xmlns="{ns}">
      <page><title>Alpha</title><ns>0</ns>
        <revision><text>'''Alpha''' is first.</text></revision></page>
      <page><title>Beta</title><ns>0</ns><redirect title="Alpha"/>
        <revision><text>#REDIRECT [[Alpha]]</text></revision></page>
      <page><title>Talk:Alpha</title><ns>1</ns><revision><text>chat</text></revision></page>
    </mediawiki>"""
    path = tmp_path / "enwiki-test.xml.bz2"
    path.write_bytes(bz2.compress(xml.encode()))
    docs = parsers.wiki_articles(path)
    assert [(d.id, d.text) for d in docs] == [("wiki/Alpha", "Alpha is first.")]


def test_gutenberg_works_titles(tmp_path: Path) -> None:
    (tmp_path / "metadata.txt").write_text("[play_gut]\ntitle = The Play\nnotes = a (url=x)\n")
    (tmp_path / "play_gut.txt").write_text("ACT I\r\n\r\n\r\n\r\n\r\nEnd  \n")
    docs = parsers.gutenberg_works(tmp_path)
    assert [(d.id, d.text, d.meta["title"]) for d in docs] == [
        ("play_gut", "ACT I\n\n\nEnd", "The Play")
    ]


def test_gutenberg_works_rejects_invalid_utf8(tmp_path: Path) -> None:
    (tmp_path / "bad_gut.txt").write_bytes(b"fine\n\x80broken")
    with pytest.raises(InputEncodingError, match=r"bad_gut\.txt.*offset 5"):
        parsers.gutenberg_works(tmp_path)


def test_fortunes_split_on_percent_lines(tmp_path: Path) -> None:
    (tmp_path / "fortunes").mkdir()
    (tmp_path / "fortunes" / "wisdom").write_text("First one.\n%\nSecond\n  -- someone\n%\n")
    (tmp_path / "fortunes" / "wisdom.dat").write_bytes(b"\x00\x01")
    docs = parsers.fortunes(tmp_path)
    assert [(d.id, d.text) for d in docs] == [
        ("wisdom/0000", "First one."),
        ("wisdom/0001", "Second\n  -- someone"),
    ]


def test_sms_spam_examples_offline(tmp_path: Path) -> None:
    data = "ham\tSee you at caf\xe9\r\nspam\tWIN a prize now\n".encode("latin-1")
    fake_fetched(tmp_path, "sms-spam", {"spam_collection.csv": data})
    examples = corpus.load_examples("sms-spam", home=tmp_path)
    assert [(e["text"], e["label"]) for e in examples] == [
        ("See you at café", "ham"),
        ("WIN a prize now", "spam"),
    ]
    train = corpus.load_examples("sms-spam", split="train", home=tmp_path)
    test = corpus.load_examples("sms-spam", split="test", home=tmp_path)
    assert len(train) + len(test) == 2 and train and test


def test_sms_spam_malformed_line(tmp_path: Path) -> None:
    (tmp_path / "spam_collection.csv").write_bytes(b"ham\tok\nnot a labelled line\n")
    with pytest.raises(DataError, match="line 2"):
        parsers.sms_spam(tmp_path)


def test_dreaddit_keeps_its_split(tmp_path: Path) -> None:
    fake_fetched(
        tmp_path,
        "dreaddit",
        {
            "dreaddit_training.csv": b'text,label\n"I am, so stressed",1\ncalm day,0\n',
            "dreaddit_testing.csv": b"text,label\nfine,0\n",
        },
    )
    test = corpus.load_examples("dreaddit", split="test", home=tmp_path)
    assert [(e["text"], e["label"]) for e in test] == [("fine", 0)]
    train = corpus.load_examples("dreaddit", split="train", home=tmp_path)
    assert [(e["text"], e["label"]) for e in train] == [("I am, so stressed", 1), ("calm day", 0)]


def test_text_source_from_fake_cache(tmp_path: Path) -> None:
    fake_fetched(
        tmp_path,
        "milton",
        {
            f"poem{i}_gut.txt": f"Poem {i}: ".encode() + b"of man's first disobedience " * i
            for i in range(1, 6)
        },
    )
    docs = corpus.load_documents("milton", home=tmp_path, dedup=False)
    assert sorted(d.id for d in docs) == [f"poem{i}_gut" for i in range(1, 6)]
    assert all(d.source == "milton" for d in docs)


def test_kjv_needs_the_bible_program(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FetchError, match="bible-kjv"):
        parsers.kjv(tmp_path)


# --- R serialization ----------------------------------------------------------------------------


def xdr_int(*values: int) -> bytes:
    return struct.pack(f">{len(values)}i", *values)


def rchar(s: str | None) -> bytes:
    if s is None:
        return xdr_int(9, -1)
    data = s.encode()
    return xdr_int(9 | (1 << 15), len(data)) + data  # CHARSXP, UTF-8 flag


def test_unserialize_character_vector_with_na() -> None:
    header = b"X\n" + xdr_int(3, 0x040000, 0x030500) + xdr_int(5) + b"UTF-8"
    body = xdr_int(16, 3) + rchar("It is a truth") + rchar(None) + rchar("universally")
    assert rdata.unserialize(header + body) == ["It is a truth", None, "universally"]


def test_unserialize_named_list_and_ints() -> None:
    header = b"X\n" + xdr_int(2, 0x030000, 0x020300)
    names_attr = xdr_int(2 | (1 << 10)) + xdr_int(1) + rchar("names")
    names_attr += xdr_int(16, 2) + rchar("a") + rchar("b") + xdr_int(254)
    body = xdr_int(19 | (1 << 9), 2) + xdr_int(13, 2, 1, 2) + xdr_int(13, 1, -(2**31))
    value = rdata.unserialize(header + body + names_attr)
    assert value == [[1, 2], [None]]
    assert value.attrs["names"] == ["a", "b"]


def test_unserialize_rejects_other_formats() -> None:
    with pytest.raises(DataError):
        rdata.unserialize(b"A\n....")
