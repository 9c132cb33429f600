"""Find and redact personally identifiable information (PII) in text with regular expressions.

What counts as PII here: the kinds of *personal data* (GDPR Art. 4(1): "any information relating
to an identified or identifiable natural person") that have a fixed written form and so can be
found by a pattern:

* ``email``: e-mail addresses (``ada@example.org``);
* ``phone``: telephone numbers, international (``+44 20 7946 0958``), North American
  (``(555) 123-4567``, ``1-800-555-0199``) and European national ones with a trunk ``0``
  (``020 7946 0958``, ``06 12 34 56 78``);
* ``ipv4`` / ``ipv6``: IP addresses (the CJEU ruled in *Breyer* (C-582/14, 2016) that even a
  dynamic IP address can be personal data);
* ``card``: payment-card numbers (13-19 digits that pass the Luhn checksum and start with a
  payment network's prefix).

Why a pretraining pipeline cares: language models memorise rare strings from their training
data and can be made to say them. Carlini et al. (2021), "Extracting Training Data from Large
Language Models", recovered e-mail addresses, phone numbers and IRC handles of real people from
GPT-2; Lukas et al. (2023), "Analyzing Leakage of Personally Identifiable Information in Language
Models", measured how much PII extraction, reconstruction and inference attacks recover, and how
much scrubbing and differential privacy reduce it. Counting PII (``groundwork data stats``) tells
you what a corpus holds; redacting it before tokenization (``groundwork data prepare
--redact-pii``) means the model never sees it.

What regular expressions cannot do: names, postal addresses, dates of birth, health facts and
anything identifying *in context* ("the tallest teacher at the village school") have no fixed
form; finding them needs a named-entity recogniser (chapter 10) and still misses some. The
patterns here also decide some ambiguous cases by rule, each listed in :func:`find_pii`'s
docstring and checked by :data:`LABELLED_SAMPLE`. Chapter 22, "Law and ethics".
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from groundwork.errors import UnknownNameError, did_you_mean

KINDS: tuple[str, ...] = ("email", "card", "ipv6", "ipv4", "phone")
"""The kinds of PII detected, in priority order (the first wins a tie between equal spans)."""


@dataclass(frozen=True)
class PIIMatch:
    """One piece of PII found in a text.

    Attributes:
        kind: One of :data:`KINDS`.
        start: Offset of its first character.
        end: Offset one past its last character (``text == source[start:end]``).
        text: The matched text.
    """

    kind: str
    start: int
    end: int
    text: str


# --8<-- [start:luhn]
def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) checksum that every payment-card number satisfies.

    From the right, double every second digit, subtract 9 from doubles above 9, and sum: the
    number is valid if the sum is a multiple of 10. ``4111111111111111``: the eight doubled
    digits (seven 1s and the leading 4) give ``7 * 2 + 8 = 22``, the other eight 1s give 8, and
    ``22 + 8 = 30`` is a multiple of 10, so it is valid; change the last digit and it
    is not. Separators (spaces, dashes) are ignored.

    Example:
        >>> luhn_valid("4111 1111 1111 1111"), luhn_valid("4111 1111 1111 1112")
        (True, False)
    """
    numbers = [int(c) for c in digits if c.isdigit()]
    if len(numbers) < 2:
        return False
    total = 0
    for i, d in enumerate(reversed(numbers)):
        if i % 2 == 1:  # every second digit from the right is doubled
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# --8<-- [end:luhn]

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*"  # local part
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}"  # domain with a TLD
    r"(?![\w-])"
)

# 13-19 digits: unbroken, in groups of four (4-4-4-4, 4-4-4-1..4, 4-4-4-4-3), or American
# Express / Diners style (4-6-5, 4-6-4). The same separator throughout.
_CARD = re.compile(
    r"(?<![\w+.,-])"
    r"(?:\d{13,19}"
    r"|\d{4}(?P<s>[ -])\d{4}(?P=s)\d{4}(?P=s)\d{1,4}(?:(?P=s)\d{3})?"
    r"|\d{4}(?P<t>[ -])\d{6}(?P=t)\d{4,5})"
    r"(?![\w]|[.,-]\d)"
)
# Payment networks: Visa 4, Mastercard 51-55 and 2221-2720, Amex 34/37, Diners 30/36/38,
# JCB 35, Discover/UnionPay/Maestro 6. Excludes ISBN-13s (978/979) and most other ids.
_CARD_PREFIX = re.compile(r"(?:4|5[1-5]|2[2-7]|3[0456789]|6)")

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\w|\.\d)")
_VERSION_BEFORE = re.compile(r"(?i)(?:\bv|\bversion\s+|\bver\.?\s*|\brelease\s+)$")

_H = r"[0-9A-Fa-f]{1,4}"
_IPV6 = re.compile(
    r"(?<![\w:])(?:"
    rf"(?:{_H}:){{7}}{_H}"  # full: 8 groups
    rf"|(?:{_H}:){{1,7}}:(?!{_H})"  # 1::
    rf"|(?:{_H}:){{1,6}}:{_H}"  # 1::8
    rf"|(?:{_H}:){{1,5}}(?::{_H}){{1,2}}"
    rf"|(?:{_H}:){{1,4}}(?::{_H}){{1,3}}"
    rf"|(?:{_H}:){{1,3}}(?::{_H}){{1,4}}"
    rf"|(?:{_H}:){{1,2}}(?::{_H}){{1,5}}"
    rf"|{_H}:(?::{_H}){{1,6}}"
    rf"|:(?::{_H}){{1,7}}"  # ::1, ::ffff:a:b
    r")(?![\w:])"
)

_PHONE = re.compile(
    r"(?:"
    # international: +country code, an optional (0), optional (area), groups of 2+ digits
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(0\))?(?:[ .-]?\(\d{1,4}\))?[ .-]?\d{1,12}(?:[ .-]\d{2,12}){0,5}"
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567, 1-800-555-0199
    r"|(?<![\w+./-])(?:1[ .-])?"
    r"(?:\([2-9]\d\d\)[ ]?\d{3}[ .-]|[2-9]\d\d(?P<u>[ .-])\d{3}(?P=u))\d{4}"
    # European national, with the trunk prefix 0: 020 7946 0958, 06 12 34 56 78, 030-1234567
    r"|(?<![\w+./-])0\d{1,4}(?:[ -]\d{2,8}){1,4}"
    r")(?!\w|[.:/-]\d)"
)
_DATE_GROUPS = re.compile(
    r"^(?:\d{1,2}[ -]\d{1,2}[ -](?:19|20)\d\d|(?:19|20)\d\d[ -]\d{1,2}[ -]\d{1,2})$"
)


def _phone_ok(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    if text.startswith("+"):
        return 7 <= digits - text.count("(0)") <= 15  # E.164: at most 15 digits
    if _DATE_GROUPS.match(text):
        return False  # 01-15-2024 is a date
    if text.startswith("0"):
        return 9 <= digits <= 12  # national numbers with the trunk 0; 0930-1100 is not one
    return digits in (10, 11)  # North American: 10 digits, 11 with the leading 1


def _candidates(text: str, kind: str) -> Iterable[tuple[int, int]]:
    if kind == "email":
        if "@" in text:
            yield from (m.span() for m in _EMAIL.finditer(text))
    elif kind == "card":
        for m in _CARD.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and luhn_valid(digits):
                yield m.span()
    elif kind == "ipv4":
        for m in _IPV4.finditer(text):
            if not _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start()):
                yield m.span()
    elif kind == "ipv6":
        if "::" in text or text.count(":") >= 7:
            for m in _IPV6.finditer(text):
                if any(c.isdigit() for c in m.group()):  # a::b, dead::beef: code, not addresses
                    yield m.span()
    elif kind == "phone":
        for m in _PHONE.finditer(text):
            if _phone_ok(m.group()):
                yield m.span()
    else:
        raise UnknownNameError(f"unknown PII kind {kind!r}; {did_you_mean(kind, KINDS)}")


# --8<-- [start:find_pii]
def find_pii(text: str, kinds: Sequence[str] | None = None) -> list[PIIMatch]:
    """Find PII in ``text``: non-overlapping matches, sorted by position.

    Each kind's pattern runs over the whole text; where matches of different kinds overlap,
    the longer one wins, and between equal spans the kind earlier in :data:`KINDS` (so a
    Luhn-valid card number beats a phone number).

    Rules for the ambiguous cases (each has a sentence in :data:`LABELLED_SAMPLE`):

    * an e-mail address needs a dotted domain: ``user@localhost`` is not one (a local account
      name, not an address anyone outside the machine can write to), nor is ``@handle``;
    * a dotted quad preceded by ``v``, ``version``, ``ver.`` or ``release`` is a version number,
      not an IPv4 address; ``2.0.1`` and ``1.2.3.4.5`` never are (three and five parts);
    * a run of digits without separators is a phone number only after ``+``; dates
      (``01-15-2024``, ``2024-01-15``, ``12.03.2024``) and short runs (``0930-1100``) are not;
    * a card number must pass the Luhn check *and* start with a payment network's prefix
      (2-6), which rules out ISBN-13s and most order numbers;
    * ``12:30:45`` is a time, not IPv6 (which needs eight groups or ``::``), and an IPv6 address
      must hold a decimal digit: ``a::b`` and ``dead::beef`` read as code (C++, Rust, Ruby).

    Args:
        text: Any text.
        kinds: The kinds to look for (default: all of :data:`KINDS`).

    Returns:
        The matches, sorted by ``start``.

    Example:
        >>> [(m.kind, m.text) for m in find_pii("Mail ada@example.org or call +44 20 7946 0958.")]
        [('email', 'ada@example.org'), ('phone', '+44 20 7946 0958')]
    """
    wanted = KINDS if kinds is None else tuple(kinds)
    found = [(start, end, kind) for kind in wanted for start, end in _candidates(text, kind)]
    # Longest first, then by priority: greedily keep what does not overlap a kept match.
    found.sort(key=lambda m: (m[0] - m[1], KINDS.index(m[2]), m[0]))
    kept: list[tuple[int, int, str]] = []
    for start, end, kind in found:
        if all(end <= s or start >= e for s, e, _ in kept):
            kept.append((start, end, kind))
    return [PIIMatch(kind, s, e, text[s:e]) for s, e, kind in sorted(kept)]


# --8<-- [end:find_pii]


def redact(text: str, kinds: Sequence[str] | None = None, *, placeholder: str = "[{KIND}]") -> str:
    """Replace each piece of PII with a placeholder naming its kind.

    Args:
        text: Any text.
        kinds: The kinds to redact (default: all).
        placeholder: A format string; ``{KIND}`` is the upper-case kind, ``{kind}`` the kind.

    Example:
        >>> redact("Write to ada@example.org from 192.168.1.20.")
        'Write to [EMAIL] from [IPV4].'
    """
    pieces: list[str] = []
    pos = 0
    for m in find_pii(text, kinds):
        pieces += [text[pos : m.start], placeholder.format(KIND=m.kind.upper(), kind=m.kind)]
        pos = m.end
    return "".join(pieces) + text[pos:]


def count_pii(texts: Iterable[str], kinds: Sequence[str] | None = None) -> dict[str, int]:
    """Count PII per kind over many texts (every kind is present, zeros included).

    Example:
        >>> count_pii(["a@b.org, c@d.org", "call 555-123-4567"])
        {'email': 2, 'card': 0, 'ipv6': 0, 'ipv4': 0, 'phone': 1}
    """
    counts = dict.fromkeys(KINDS if kinds is None else kinds, 0)
    for text in texts:
        for m in find_pii(text, kinds):
            counts[m.kind] += 1
    return counts


# A hand-written sample: each sentence with the exact PII it holds, as (kind, text) in order of
# appearance. All numbers and addresses are fictional or reserved for documentation (555-01xx,
# 192.0.2.0/24, 2001:db8::/32, example.org, the card networks' published test numbers).
LABELLED_SAMPLE: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    # e-mail
    ("Contact ada.lovelace@example.org for details.", (("email", "ada.lovelace@example.org"),)),
    (
        "Send it to j.smith+news@mail.example.co.uk.",
        (("email", "j.smith+news@mail.example.co.uk"),),
    ),
    ("<bob_99@sub-domain.example.com>", (("email", "bob_99@sub-domain.example.com"),)),
    ("Emails: a@b.io, c.d@e-f.org", (("email", "a@b.io"), ("email", "c.d@e-f.org"))),
    ("MAILTO:INFO@EXAMPLE.NET", (("email", "INFO@EXAMPLE.NET"),)),
    ("Log in as user@localhost on the box.", ()),
    ("Follow @groundwork on social media.", ()),
    ("The decorator @property and a@b are not addresses.", ()),
    # phone numbers
    ("Call +44 20 7946 0958 after nine.", (("phone", "+44 20 7946 0958"),)),
    ("Ring me on +1 (555) 123-4567.", (("phone", "+1 (555) 123-4567"),)),
    ("Our office: +49 30 12345678", (("phone", "+49 30 12345678"),)),
    (
        "Mobile +4915112345678 or landline 030-1234567.",
        (("phone", "+4915112345678"), ("phone", "030-1234567")),
    ),
    ("Tel. +44 (0)20 7946 0958", (("phone", "+44 (0)20 7946 0958"),)),
    ("Call (555) 123-4567 today.", (("phone", "(555) 123-4567"),)),
    ("Phone: 555-123-4567.", (("phone", "555-123-4567"),)),
    ("Fax 555.123.4567, please.", (("phone", "555.123.4567"),)),
    ("Toll free 1-800-555-0199.", (("phone", "1-800-555-0199"),)),
    ("In London dial 020 7946 0958.", (("phone", "020 7946 0958"),)),
    ("Appelez le 06 12 34 56 78.", (("phone", "06 12 34 56 78"),)),
    ("+33 6 12 34 56 78 is my French number.", (("phone", "+33 6 12 34 56 78"),)),
    ("Open 0930-1100 on Sundays.", ()),
    ("The meeting is on 01-15-2024.", ()),
    ("Population: 1,234,567 in 2021.", ()),
    ("Order number 20231115 shipped.", ()),
    ("It costs $12.99 or 1234.50 euros.", ()),
    ("Scores were 3-1, 2-2 and 10-0.", ()),
    # IPv4
    ("The server is at 192.168.1.20 today.", (("ipv4", "192.168.1.20"),)),
    ("Block 203.0.113.255 and 10.0.0.1.", (("ipv4", "203.0.113.255"), ("ipv4", "10.0.0.1"))),
    ("Ping 8.8.8.8!", (("ipv4", "8.8.8.8"),)),
    ("GET / from 192.0.2.1:8080", (("ipv4", "192.0.2.1"),)),
    ("Upgrade to version 1.2.3.4 now.", ()),
    ("Released v1.2.3 and v10.0.0.1 today.", ()),
    ("Python 2.0.1 was old.", ()),
    ("Not an address: 256.1.1.1 or 1.2.3.4.5 or 01.02.03.04.", ()),
    ("Section 3.2 and figure 12.03.2024.", ()),
    # IPv6
    (
        "Server 2001:0db8:85a3:0000:0000:8a2e:0370:7334 is up.",
        (("ipv6", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),),
    ),
    ("Use 2001:db8::1 for tests.", (("ipv6", "2001:db8::1"),)),
    ("Loopback ::1 and prefix fe80::.", (("ipv6", "::1"), ("ipv6", "fe80::"))),
    ("Address FE80::0202:B3FF:FE1E:8329 found.", (("ipv6", "FE80::0202:B3FF:FE1E:8329"),)),
    ("The train left at 12:30:45 sharp.", ()),
    ("In C++ write std::vector and a::b.", ()),
    ("Ratio 3:4:5 and time 10:30.", ()),
    # payment cards
    ("Card 4111 1111 1111 1111 expires soon.", (("card", "4111 1111 1111 1111"),)),
    ("Paid with 5555-5555-5555-4444.", (("card", "5555-5555-5555-4444"),)),
    ("Amex 3782 822463 10005 was declined.", (("card", "3782 822463 10005"),)),
    ("Number 4012888888881881 on file.", (("card", "4012888888881881"),)),
    ("Discover 6011111111111117.", (("card", "6011111111111117"),)),
    ("Try 4111 1111 1111 1112 instead.", ()),
    ("Invoice 1234567890123456 is overdue.", ()),
    ("ISBN 978-0-306-40615-7 and 9780306406157.", ()),
    ("ISBN 0-306-40615-2 is the old form.", ()),
    # dates and mixed sentences
    ("Born 2024-01-15, moved 15/01/2024, left 12.03.2024.", ()),
    ("Timestamp 2024-01-15T12:30:45Z.", ()),
    (
        "Ada (ada@example.org, +44 20 7946 0958) paid with 4111-1111-1111-1111 from 192.0.2.7.",
        (
            ("email", "ada@example.org"),
            ("phone", "+44 20 7946 0958"),
            ("card", "4111-1111-1111-1111"),
            ("ipv4", "192.0.2.7"),
        ),
    ),
    (
        "Log: 2001:db8::42 -> 198.51.100.14 (user bob@example.com).",
        (("ipv6", "2001:db8::42"), ("ipv4", "198.51.100.14"), ("email", "bob@example.com")),
    ),
    ("HAMLET. To be, or not to be, that is the question.", ()),
    ("Act 3, scene 1, lines 56-89.", ()),
    ("Call 555-0123 is too short to be a full number.", ()),
    ("Chapter 22 covers the GDPR and the EU AI Act (2024/1689).", ()),
)


def _spans(text: str, labels: Iterable[tuple[str, str]]) -> set[tuple[str, int, int]]:
    """Turn ``(kind, text)`` labels into ``(kind, start, end)``, searching left to right."""
    spans, pos = set(), 0
    for kind, piece in labels:
        start = text.index(piece, pos)
        spans.add((kind, start, start + len(piece)))
        pos = start + len(piece)
    return spans


def evaluate_detector(
    sample: Sequence[tuple[str, Sequence[tuple[str, str]]]] = LABELLED_SAMPLE,
) -> dict[str, dict[str, float]]:
    """Span-level precision and recall of :func:`find_pii` on a labelled sample, per kind.

    A prediction counts only if kind, start and end all match a label exactly.

    Args:
        sample: ``(text, ((kind, pii_text), ...))`` pairs, labels in order of appearance.

    Returns:
        ``{kind: {"precision", "recall", "support"}}``; precision (recall) is 1.0 when there
        are no predictions (labels) of that kind.
    """
    tp = dict.fromkeys(KINDS, 0)
    predicted = dict.fromkeys(KINDS, 0)
    support = dict.fromkeys(KINDS, 0)
    for text, labels in sample:
        gold = _spans(text, labels)
        pred = {(m.kind, m.start, m.end) for m in find_pii(text)}
        for kind, _, _ in gold:
            support[kind] += 1
        for span in pred:
            predicted[span[0]] += 1
            tp[span[0]] += span in gold
    return {
        k: {
            "precision": tp[k] / predicted[k] if predicted[k] else 1.0,
            "recall": tp[k] / support[k] if support[k] else 1.0,
            "support": support[k],
        }
        for k in KINDS
    }
