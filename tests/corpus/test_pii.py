"""Tests for groundwork.corpus.pii: regex PII detection, the Luhn check, redaction, evaluation."""

import doctest

import pytest

from groundwork.corpus import pii
from groundwork.corpus.pii import (
    KINDS,
    LABELLED_SAMPLE,
    PIIMatch,
    count_pii,
    evaluate_detector,
    find_pii,
    luhn_valid,
    redact,
)
from groundwork.errors import UnknownNameError


def found(text: str) -> list[tuple[str, str]]:
    return [(m.kind, m.text) for m in find_pii(text)]


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("4111 1111 1111 1111", True),  # Visa test number
        ("4111 1111 1111 1112", False),  # last digit changed
        ("5555555555554444", True),  # Mastercard
        ("378282246310005", True),  # American Express
        ("6011111111111117", True),  # Discover
        ("79927398713", True),  # the textbook example
        ("79927398710", False),
        ("0", False),  # too short to carry a check digit
    ],
)
def test_luhn_on_known_numbers(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


def test_luhn_by_hand() -> None:
    # 4539 1488 0343 6467: doubling every second digit from the right gives digits summing to 80.
    assert luhn_valid("4539148803436467")
    assert not luhn_valid("4539148803436468")


def test_email() -> None:
    assert found("Write to ada.lovelace@example.org.") == [("email", "ada.lovelace@example.org")]
    assert found("x+tag@mail.example.co.uk") == [("email", "x+tag@mail.example.co.uk")]
    assert found("user@localhost and @handle and a@b") == []


def test_phone_formats() -> None:
    for number in (
        "+44 20 7946 0958",
        "+1 (555) 123-4567",
        "+44 (0)20 7946 0958",
        "+4915112345678",
        "(555) 123-4567",
        "555.123.4567",
        "1-800-555-0199",
        "020 7946 0958",
        "06 12 34 56 78",
    ):
        assert found(f"Call {number} now.") == [("phone", number)], number


@pytest.mark.parametrize(
    "text",
    [
        "on 01-15-2024",
        "on 2024-01-15",
        "on 15/01/2024",
        "on 12.03.2024",
        "1,234,567 people",
        "$12.99",
        "open 0930-1100",
        "ISBN 978-0-306-40615-7",
        "ISBN 0-306-40615-2",
        "ISBN 9780306406157",
        "short 555-0123",
    ],
)
def test_not_phone_numbers_or_anything(text: str) -> None:
    assert find_pii(text) == []


def test_ipv4_and_version_numbers() -> None:
    assert found("from 192.168.1.20:8080.") == [("ipv4", "192.168.1.20")]
    assert found("0.0.0.0 and 255.255.255.255") == [
        ("ipv4", "0.0.0.0"),
        ("ipv4", "255.255.255.255"),
    ]
    for text in ("v1.2.3", "2.0.1", "version 1.2.3.4", "v10.0.0.1", "256.1.1.1", "1.2.3.4.5"):
        assert find_pii(text) == [], text


def test_ipv6_full_and_compressed_but_not_times_or_code() -> None:
    full = "2001:0db8:85a3:0000:0000:8a2e:0370:7334"
    assert found(f"at {full}.") == [("ipv6", full)]
    assert found("2001:db8::1, ::1, fe80::") == [
        ("ipv6", "2001:db8::1"),
        ("ipv6", "::1"),
        ("ipv6", "fe80::"),
    ]
    for text in ("12:30:45", "std::vector", "a::b", "dead::beef", "3:4:5"):
        assert find_pii(text) == [], text


def test_cards_need_luhn_and_a_network_prefix() -> None:
    assert found("4111 1111 1111 1111") == [("card", "4111 1111 1111 1111")]
    assert found("4111-1111-1111-1111") == [("card", "4111-1111-1111-1111")]
    assert found("Amex 3782 822463 10005") == [("card", "3782 822463 10005")]
    assert find_pii("4111 1111 1111 1112") == []  # fails Luhn
    assert find_pii("4111 1111-1111 1111") == []  # mixed separators
    # Passes Luhn but starts with 9 (no payment network): an id, not a card.
    assert luhn_valid("9111111111111110") and find_pii("9111111111111110") == []


def test_matches_are_sorted_spans_and_kinds_filter() -> None:
    text = "ada@example.org, 192.0.2.7, 4111111111111111"
    matches = find_pii(text)
    assert matches == [
        PIIMatch("email", 0, 15, "ada@example.org"),
        PIIMatch("ipv4", 17, 26, "192.0.2.7"),
        PIIMatch("card", 28, 44, "4111111111111111"),
    ]
    assert all(text[m.start : m.end] == m.text for m in matches)
    assert [m.kind for m in find_pii(text, kinds=["card"])] == ["card"]
    with pytest.raises(UnknownNameError):
        find_pii(text, kinds=["name"])


def test_overlap_keeps_the_longer_match() -> None:
    # The phone pattern alone sees "+1 555 123 4567"; nothing shorter inside it survives.
    assert found("+1 555 123 4567") == [("phone", "+1 555 123 4567")]
    assert [m.kind for m in find_pii("555-123-4567", kinds=["phone", "card"])] == ["phone"]


def test_redact() -> None:
    text = "Mail ada@example.org or +44 20 7946 0958 from 192.0.2.7; card 4111 1111 1111 1111."
    assert redact(text) == "Mail [EMAIL] or [PHONE] from [IPV4]; card [CARD]."
    assert redact(text, ["email"]) == text.replace("ada@example.org", "[EMAIL]")
    assert redact("::1", placeholder="<{kind}>") == "<ipv6>"
    assert redact("nothing here") == "nothing here"


def test_count_pii() -> None:
    counts = count_pii(["a@b.org c@d.org", "192.0.2.1", "plain"])
    assert counts == {"email": 2, "card": 0, "ipv6": 0, "ipv4": 1, "phone": 0}
    assert list(counts) == list(KINDS)


def test_labelled_sample_is_consistent() -> None:
    assert len(LABELLED_SAMPLE) >= 55
    for text, labels in LABELLED_SAMPLE:
        assert all(kind in KINDS and piece in text for kind, piece in labels), text


def test_perfect_precision_and_recall_on_the_labelled_sample() -> None:
    scores = evaluate_detector()
    for kind in KINDS:
        assert scores[kind]["support"] >= 5, kind
        assert scores[kind]["precision"] == 1.0, kind
        assert scores[kind]["recall"] == 1.0, kind


def test_evaluate_counts_misses_and_false_alarms() -> None:
    sample = [
        ("a@b.org and user@localhost", (("email", "a@b.org"), ("email", "user@localhost"))),
        ("no pii in 10.0.0.1", ()),
    ]
    scores = evaluate_detector(sample)
    assert scores["email"] == {"precision": 1.0, "recall": 0.5, "support": 2}
    assert scores["ipv4"] == {"precision": 0.0, "recall": 1.0, "support": 0}


def test_docstring_examples() -> None:
    assert doctest.testmod(pii).failed == 0
