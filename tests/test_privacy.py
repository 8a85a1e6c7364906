"""The privacy guard: every kind of personal data found, ordinary numbers left alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from speculate.policy.privacy import PrivacyGuard, Restorer, luhn_valid, redact, restore

GUARD = PrivacyGuard()

POSITIVE = [
    ("email", "write to jane.doe+news@example.co.uk please"),
    ("email", "my address is Ö_user@mail-server.de"),
    ("phone", "call me at +1 415 555 2671 tonight"),
    ("phone", "my number: (415) 555-2671"),
    ("phone", "ring 415-555-2671 after six"),
    ("phone", "Tel +44 20 7946 0958"),
    ("phone", "+33 6 12 34 56 78 is my mobile"),
    ("card", "card 4111 1111 1111 1111 exp 12/27"),
    ("card", "my amex is 3782-822463-10005"),
    ("card", "use 5555555555554444 for it"),
    ("iban", "pay to DE89 3704 0044 0532 0130 00 today"),
    ("iban", "IBAN GB82WEST12345698765432"),
    ("iban", "FR1420041010050500013M02606"),
    ("ssn", "my SSN is 123-45-6789"),
    ("ssn", "social security number 123456789"),
]

NEGATIVE = [
    "the meeting is on 2024-01-15 at 10:30",
    "order number 1234567890123456 has shipped",  # 16 digits, no card prefix
    "order #4111111111111112 was cancelled",  # Visa prefix, fails Luhn
    "room 1204, building 7, floor 12",
    "the population grew from 8,336,817 to 8,804,190",
    "call extension 4411",
    "version 3.11.4 of Python",
    "what is 1234 * 5678?",
    "ISBN 978-3-16-148410-0",
    "tracking 1Z999AA10123456784",
    "DE89 is a postcode prefix, not an IBAN",
    "SSN-like 000-12-3456 is never assigned",
    "a date 12/27/2024 and a time 23:59:59",
    "the answer is 415 5552 671 units",
    "email me at the usual place",
]


@pytest.mark.parametrize(("kind", "text"), POSITIVE)
def test_finds_personal_data(kind: str, text: str) -> None:
    kinds = [finding.kind for finding in GUARD.scan(text)]
    assert kinds == [kind], (text, kinds)


@pytest.mark.parametrize("text", NEGATIVE)
def test_ordinary_numbers_are_not_personal_data(text: str) -> None:
    assert GUARD.scan(text) == [], text


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert luhn_valid("79927398713")


def test_configured_patterns_and_keywords() -> None:
    guard = PrivacyGuard(patterns=[r"\bEMP-\d{5}\b"], keywords=["Project Nightingale"])
    text = "employee EMP-12345 works on project nightingale"
    assert [f.kind for f in guard.scan(text)] == ["pattern", "keyword"]
    assert guard.scan("EMP-1234 and Nightingales") == []


def test_kinds_ignore_the_assistants_own_words() -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "contact support@example.com"},
        {"role": "user", "content": "ok, my card is 4111 1111 1111 1111"},
    ]
    assert GUARD.kinds_in(messages) == ["card"]


def test_redact_and_restore() -> None:
    messages = [
        {
            "role": "user",
            "content": "Mail jane@example.com and jane@example.com, call +1 415 555 2671",
        }
    ]
    redaction = redact(GUARD, messages)
    sent = redaction.messages[0]["content"]
    assert sent == "Mail [EMAIL_1] and [EMAIL_1], call [PHONE_1]"
    assert "jane@" not in sent
    assert "555" not in sent
    assert redaction.kinds == ["email", "phone"]
    answer = "I wrote to [EMAIL_1] and will call [PHONE_1]; [EMAIL_9] is unknown."
    assert restore(answer, redaction.originals) == (
        "I wrote to jane@example.com and will call +1 415 555 2671; [EMAIL_9] is unknown."
    )


@given(st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=40))
def test_restorer_handles_placeholders_split_anywhere(cuts: list[int]) -> None:
    originals = {"[EMAIL_1]": "jane@example.com", "[PHONE_12]": "+1 415 555 2671"}
    answer = "Hi [EMAIL_1], [not one] [PHONE_12] ends [EMAIL_1][PHONE_12] [X"
    chunks, position = [], 0
    for cut in cuts:
        chunks.append(answer[position : position + cut])
        position += cut
    chunks.append(answer[position:])
    restorer = Restorer(originals)
    streamed = "".join(restorer.feed(chunk) for chunk in chunks) + restorer.finish()
    assert streamed == restore(answer, originals)
