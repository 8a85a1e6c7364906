"""The privacy guard: find personal data in a request before anything leaves the device.

Pure and synchronous.  Each detector pairs a pattern with a validity check, so that
ordinary numbers stay ordinary: a card number must pass Luhn *and* carry a card
network's prefix, an IBAN must pass ISO 7064 mod-97 with its country's length, an SSN
must use an assignable area and group, and a phone number needs a ``+`` country code or
a phone-shaped grouping.  Dates, order numbers and room numbers fail those checks.

``redact`` replaces each finding with a placeholder such as ``[EMAIL_1]``; a
:class:`Restorer` puts the originals back into the cloud's streamed answer, even when a
placeholder arrives split across chunks.  Findings carry kinds and spans, never log them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from speculate.core.chat import Message

KIND_LABELS = {
    "email": "e-mail address",
    "phone": "phone number",
    "card": "payment card number",
    "iban": "IBAN",
    "ssn": "US social security number",
    "pattern": "configured pattern",
    "keyword": "configured keyword",
}

# IBAN lengths of the SEPA countries and the other common ones (ISO 13616 registry).
IBAN_LENGTHS = {
    "AD": 24,
    "AE": 23,
    "AT": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BR": 29,
    "CH": 21,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "EE": 20,
    "ES": 24,
    "FI": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IS": 26,
    "IT": 27,
    "KW": 30,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "MC": 27,
    "MT": 31,
    "NL": 18,
    "NO": 15,
    "PL": 28,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "SA": 24,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "TR": 26,
    "UA": 29,
    "VA": 22,
}

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}\b")
_SSN = re.compile(r"(?<![\d-])(\d{3})-(\d{2})-(\d{4})(?![\d-])")
_SSN_BARE = re.compile(r"(?i)\b(?:ssn|social security(?: number)?)\D{0,12}(\d{9})\b")
# International (+CC …) or North American shapes; a bare digit run is never a phone.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"
    r"|\d{3}[.-]\d{3}[.-]\d{4})(?![\w-])"
)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    start: int
    end: int


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card_network(digits: str) -> str | None:
    """The network a number's prefix and length belong to, or None."""
    n = len(digits)
    two, four, six = int(digits[:2]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= two <= 55 or 222100 <= six <= 272099) and n == 16:
        return "mastercard"
    if two in (34, 37) and n == 15:
        return "amex"
    if (four == 6011 or two == 65 or 644 <= int(digits[:3]) <= 649) and 16 <= n <= 19:
        return "discover"
    if 3528 <= four <= 3589 and 16 <= n <= 19:
        return "jcb"
    if (two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305) and 14 <= n <= 19:
        return "diners"
    return None


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _phone_valid(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    return 7 <= len(digits) <= 15


@dataclass(slots=True)
class PrivacyGuard:
    """Which personal data a text holds; configured patterns and keywords on top."""

    patterns: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    _extra: list[re.Pattern[str]] = field(init=False, default_factory=list)
    _keyword: re.Pattern[str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._extra = [re.compile(pattern) for pattern in self.patterns]
        words = [re.escape(word) for word in self.keywords if word.strip()]
        self._keyword = re.compile(r"(?i)\b(?:" + "|".join(words) + r")\b") if words else None

    def masked(self, text: str) -> str:
        """The text with each finding replaced by its kind (``[EMAIL]``, ``[CARD]``)."""
        for finding in reversed(self.scan(text)):
            text = f"{text[: finding.start]}[{finding.kind.upper()}]{text[finding.end :]}"
        return text

    def scan(self, text: str) -> list[Finding]:
        """Non-overlapping findings, in text order (the stronger kind wins an overlap)."""
        found: list[Finding] = []
        for kind, spans in self._detectors():
            for start, end in spans(text):
                if not any(start < f.end and f.start < end for f in found):
                    found.append(Finding(kind, start, end))
        return sorted(found, key=lambda finding: finding.start)

    def _detectors(self) -> Iterable[tuple[str, Callable[[str], Iterable[tuple[int, int]]]]]:
        yield "email", lambda text: (m.span() for m in _EMAIL.finditer(text))
        yield "iban", lambda text: (m.span() for m in _IBAN.finditer(text) if iban_valid(m[0]))
        yield "card", _cards
        yield "ssn", _ssns
        yield "phone", lambda text: (m.span() for m in _PHONE.finditer(text) if _phone_valid(m[0]))
        for pattern in self._extra:
            yield "pattern", _spans_of(pattern)
        if self._keyword is not None:
            keyword = self._keyword
            yield "keyword", lambda text: (m.span() for m in keyword.finditer(text))

    def kinds_in(self, messages: list[Message]) -> list[str]:
        """The kinds of personal data in the user's side of a conversation, sorted."""
        kinds = {
            f.kind for m in messages if m["role"] != "assistant" for f in self.scan(m["content"])
        }
        return sorted(kinds)


def _spans_of(pattern: re.Pattern[str]) -> Callable[[str], Iterable[tuple[int, int]]]:
    return lambda text: (m.span() for m in pattern.finditer(text) if m[0])


def _cards(text: str) -> Iterable[tuple[int, int]]:
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match[0])
        if card_network(digits) and luhn_valid(digits):
            yield match.span()


def _ssns(text: str) -> Iterable[tuple[int, int]]:
    for match in _SSN.finditer(text):
        if ssn_valid(match[1], match[2], match[3]):
            yield match.span()
    for match in _SSN_BARE.finditer(text):
        digits = match[1]
        if ssn_valid(digits[:3], digits[3:5], digits[5:]):
            yield match.span(1)


def describe(kinds: Iterable[str]) -> str:
    return ", ".join(KIND_LABELS.get(kind, kind) for kind in kinds)


@dataclass(slots=True)
class Redaction:
    """Placeholders sent to the cloud and the originals they stand for."""

    messages: list[Message]
    originals: dict[str, str] = field(default_factory=dict)  # placeholder -> original
    kinds: list[str] = field(default_factory=list)


def redact(guard: PrivacyGuard, messages: list[Message]) -> Redaction:
    """Replace personal data in every message (the same value gets the same placeholder)."""
    placeholder_of: dict[str, str] = {}
    counters: dict[str, int] = {}
    kinds: set[str] = set()
    redacted: list[Message] = []
    for message in messages:
        text = message["content"]
        pieces: list[str] = []
        position = 0
        for finding in guard.scan(text):
            value = text[finding.start : finding.end]
            if value not in placeholder_of:
                counters[finding.kind] = counters.get(finding.kind, 0) + 1
                placeholder_of[value] = f"[{finding.kind.upper()}_{counters[finding.kind]}]"
            kinds.add(finding.kind)
            pieces += [text[position : finding.start], placeholder_of[value]]
            position = finding.end
        pieces.append(text[position:])
        redacted.append({**message, "content": "".join(pieces)})
    originals = {placeholder: value for value, placeholder in placeholder_of.items()}
    return Redaction(redacted, originals, sorted(kinds))


_PLACEHOLDER = re.compile(r"\[[A-Z]+_\d+\]")


def restore(text: str, originals: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: originals.get(m[0], m[0]), text)


class Restorer:
    """Puts originals back into streamed text whose placeholders may arrive in pieces."""

    def __init__(self, originals: dict[str, str]) -> None:
        self.originals = originals
        self._longest = max((len(p) for p in originals), default=0)
        self._held = ""

    def feed(self, chunk: str) -> str:
        text = self._held + chunk
        self._held = ""
        cut = text.rfind("[")
        if cut != -1 and "]" not in text[cut:] and len(text) - cut < self._longest:
            text, self._held = text[:cut], text[cut:]  # maybe the start of a placeholder
        return restore(text, self.originals)

    def finish(self) -> str:
        held, self._held = self._held, ""
        return restore(held, self.originals)
