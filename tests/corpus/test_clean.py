"""Tests for groundwork.corpus.clean: normalisation and strict UTF-8 reading."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from groundwork.corpus import normalize_text, read_text_file
from groundwork.errors import DataError, InputEncodingError


def test_normalize_nfc_line_endings_trailing_space_blank_lines() -> None:
    raw = "Cafe\u0301  \r\nline two\t\rthree\n\n\n\n\n\nend\n\n"
    assert normalize_text(raw) == "Café\nline two\nthree\n\n\nend"


def test_normalize_keeps_two_blank_lines_and_inner_spaces() -> None:
    text = "a  b\n\n\nc"
    assert normalize_text(text) == text


def test_normalize_is_idempotent() -> None:
    raw = "  x \r\n\r\n\r\n\r\n y\u0065\u0301 \n"
    once = normalize_text(raw)
    assert normalize_text(once) == once


def test_normalize_empty() -> None:
    assert normalize_text("\n \n\t\n") == ""


def test_read_text_file_strips_bom_and_normalises(tmp_path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfhello \r\nworld\r\n")
    assert read_text_file(path) == "hello\nworld"


def test_read_text_file_invalid_utf8_names_file_and_offset(tmp_path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes(b"ok text, then caf\xe9 au lait")
    with pytest.raises(InputEncodingError, match=r"latin\.txt.*offset 17"):
        read_text_file(path)


def test_read_text_file_declared_latin1(tmp_path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9")
    assert read_text_file(path, encoding="latin-1") == "café"


def test_read_text_file_missing(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_text_file(tmp_path / "nope.txt")
    with pytest.raises(DataError):
        read_text_file(tmp_path)  # a directory


def test_input_encoding_error_is_a_unicode_error(tmp_path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"\xff")
    with pytest.raises(UnicodeError):
        read_text_file(path)


@given(st.text(alphabet=st.sampled_from(list("ab é\u0301\r\n\t\x0b\u00a0")), max_size=60))
def test_normalize_idempotent_property(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert "\r" not in once and "\n\n\n\n" not in once
    assert not once.startswith("\n") and not once.endswith("\n")
