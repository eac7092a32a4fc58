"""PII detection, checksums, redaction, the logging filter and the Sentry scrubber."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.guard.pii import (
    FILTERED,
    PiiMatch,
    PiiRedactingFilter,
    find_pii,
    iban_valid,
    luhn_valid,
    redact,
    scrub_event,
)
from tests.logcapture import capture_logger

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def kinds(text: str) -> list[tuple[str, str]]:
    return [(m.type, m.value) for m in find_pii(text)]


# ---------------------------------------------------------------- e-mail
@pytest.mark.parametrize(
    "email", ["jane.doe@example.com", "first+tag@sub.example.org", "jane.o'neil@example.co.uk", "a@b.io"]
)
def test_emails_are_found(email: str) -> None:
    assert kinds(f"Write to {email}, please.") == [("EMAIL", email)]


def test_not_an_email() -> None:
    assert find_pii("user@localhost and @handle and a @ b.com") == []


# ---------------------------------------------------------------- cards
@pytest.mark.parametrize(
    "card",
    [
        "4111 1111 1111 1111",
        "4242-4242-4242-4242",
        "5555555555554444",
        "378282246310005",
        "6011-1111-1111-1117",
        "3530 1113 3330 0000",
    ],
)
def test_luhn_valid_cards_are_found(card: str) -> None:
    assert kinds(f"Paid with {card} yesterday.") == [("CARD", card)]


@pytest.mark.parametrize(
    "number", ["4111 1111 1111 1112", "5555555555554445", "0000 0000 0000 0000", "4111-1111 1111-1111"]
)
def test_invalid_or_inconsistent_cards_are_not_found(number: str) -> None:
    assert [m for m in find_pii(f"Ref {number}.") if m.type == "CARD"] == []


def test_luhn() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert not luhn_valid("4111a")


# ---------------------------------------------------------------- IBAN
@pytest.mark.parametrize(
    "iban",
    [
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "DE89 3704 0044 0532 0130 00",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91ABNA0417164300",
    ],
)
def test_valid_ibans_are_found(iban: str) -> None:
    assert kinds(f"Transfer to {iban} by Friday") == [("IBAN", iban)]


@pytest.mark.parametrize(
    "iban", ["GB82 WEST 1234 5698 7654 33", "DE89 3704 0044 0532 0130 01", "GB82WEST1234569876543"]
)
def test_bad_checksum_or_length_ibans_are_not_found(iban: str) -> None:
    assert [m for m in find_pii(f"Transfer to {iban} by Friday") if m.type == "IBAN"] == []


def test_iban_checksum() -> None:
    assert iban_valid("gb82 west 1234 5698 7654 32")
    assert not iban_valid("GB00WEST12345698765432")


def test_iban_stops_at_the_country_length() -> None:
    text = "IBAN GB82WEST12345698765432 EUR account"
    (match,) = find_pii(text)
    assert (match.type, match.value) == ("IBAN", "GB82WEST12345698765432")


# ---------------------------------------------------------------- national ids
def test_valid_ssns_are_found() -> None:
    assert kinds("SSN 536-90-4399 and 123-45-6789") == [("SSN", "536-90-4399"), ("SSN", "123-45-6789")]


@pytest.mark.parametrize("ssn", ["000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000"])
def test_never_issued_ssn_ranges_are_excluded(ssn: str) -> None:
    assert [m for m in find_pii(f"id {ssn}") if m.type == "SSN"] == []


def test_undashed_ssn_needs_context() -> None:
    assert kinds("Social Security Number: 536904399") == [("SSN", "536904399")]
    assert [m for m in find_pii("Order 536904399") if m.type == "SSN"] == []


@pytest.mark.parametrize("nino", ["AB123456C", "AB 12 34 56 C", "QQ 12 34 56 C"])
def test_uk_ni_numbers_are_found(nino: str) -> None:
    assert kinds(f"NI number {nino}.") == [("NINO", nino)]


@pytest.mark.parametrize("nino", ["BG123456A", "DA123456A", "AB123456E", "GB 12 34 56 A"])
def test_invalid_ni_numbers_are_not_found(nino: str) -> None:
    assert [m for m in find_pii(f"ref {nino}.") if m.type == "NINO"] == []


# ---------------------------------------------------------------- phones
@pytest.mark.parametrize(
    "phone",
    [
        "+44 20 7946 0958",
        "+1 (415) 555-2671",
        "+1-202-555-0143",
        "+33 1 23 45 67 89",
        "+49 30 901820",
        "(212) 555-0147",
        "212-555-0147",
        "212.555.0147",
        "1-800-555-0199",
        "020 7946 0958",
    ],
)
def test_phone_numbers_are_found(phone: str) -> None:
    assert kinds(f"Call {phone} today.") == [("PHONE", phone)]


@pytest.mark.parametrize(
    "text",
    [
        "See Section 12.3.4 and Sections 4.1-4.6.",
        "Effective 2024-01-15, 01/15/2024 or 15.01.2024.",
        "Fees of $1,234,567.89 or USD 250,000 or € 1.234.567,89.",
        "During 1999-2004 and in 2019 2020 2021 2022.",
        "Uptime of 99.9% measured 12:30-14:45.",
        "ISBN 978-3-16-148410-0, version 10.2.3, host 192.168.100.200.",
        "Order No. 555-123-4567 and invoice 2024-000123.",
        "Within 30 (thirty) days under § 2.1.3(a).",
    ],
)
def test_numbers_that_are_not_phones(text: str) -> None:
    assert find_pii(text) == []


def test_bare_ten_digit_phone_needs_context() -> None:
    assert kinds("tel: 2025550143") == [("PHONE", "2025550143")]
    assert find_pii("Reference 2025550143") == []


def test_trailing_year_is_not_swallowed() -> None:
    assert kinds("Call +44 20 7946 0958 2024 edition") == [("PHONE", "+44 20 7946 0958")]


# ---------------------------------------------------------------- find / redact
def test_matches_are_sorted_non_overlapping_and_exact() -> None:
    text = "Mail a@b.io, card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32, phone +44 20 7946 0958."
    matches = find_pii(text)
    assert [m.type for m in matches] == ["EMAIL", "CARD", "IBAN", "PHONE"]
    assert all(isinstance(m, PiiMatch) and text[m.start : m.end] == m.value for m in matches)
    assert all(a.end <= b.start for a, b in zip(matches, matches[1:], strict=False))


def test_redact_replaces_each_match_with_its_type() -> None:
    text = "Contact jane@example.com or +44 20 7946 0958; SSN 536-90-4399."
    assert redact(text) == "Contact [REDACTED:EMAIL] or [REDACTED:PHONE]; SSN [REDACTED:SSN]."


def test_redact_only_selected_types() -> None:
    text = "jane@example.com / +44 20 7946 0958"
    assert redact(text, types=["email"]) == "[REDACTED:EMAIL] / +44 20 7946 0958"
    assert redact(text, types="PHONE") == "jane@example.com / [REDACTED:PHONE]"


def test_redact_rejects_unknown_types() -> None:
    with pytest.raises(ValueError, match="unknown PII type"):
        redact("x", types=["PASSPORT"])


def test_redact_is_idempotent_and_leaves_clean_text_alone() -> None:
    text = "Fees are due within 30 days of invoice 2024-000123."
    assert redact(text) == text
    once = redact("a@b.io")
    assert redact(once) == once == "[REDACTED:EMAIL]"


@pytest.mark.skipif(
    not (SHARED / "corpus" / "contracts").is_dir(), reason=f"shared contracts not found at {SHARED}"
)
def test_contracts_contain_no_false_pii() -> None:
    hits = {
        path.name: kinds(path.read_text(encoding="utf-8"))
        for path in sorted((SHARED / "corpus" / "contracts").glob("*.md"))
    }
    assert {name: found for name, found in hits.items() if found} == {}


# ---------------------------------------------------------------- logging filter
@pytest.fixture
def captured_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    with capture_logger("conveyor.tests.pii", logging.Formatter("%(message)s|%(customer)s")) as captured:
        yield captured


def test_logging_filter_redacts_message_args_and_extra(
    captured_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured_logger
    logger.info(
        "paid by %s with %s",
        "jane@example.com",
        "4111 1111 1111 1111",
        extra={"customer": "+44 20 7946 0958"},
    )
    line = stream.getvalue().strip()
    assert line == "paid by [REDACTED:EMAIL] with [REDACTED:CARD]|[REDACTED:PHONE]"


def test_logging_filter_redacts_tracebacks(captured_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured_logger
    try:
        raise ValueError("no account for jane@example.com")
    except ValueError:
        logger.exception("lookup failed", extra={"customer": "-"})
    output = stream.getvalue()
    assert "jane@example.com" not in output
    assert "ValueError: no account for [REDACTED:EMAIL]" in output


def test_logging_filter_survives_bad_format_args() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "value %d for %s", ("a@b.io",), None)
    assert PiiRedactingFilter().filter(record) is True
    assert "a@b.io" not in record.getMessage()
    assert "[REDACTED:EMAIL]" in record.getMessage()


# ---------------------------------------------------------------- sentry scrubber
def test_scrub_event_redacts_strings_and_drops_auth() -> None:
    event = {
        "event_id": "4f1c2d",
        "message": "failed for jane@example.com",
        "logentry": {"message": "user %s", "params": ["+44 20 7946 0958"]},
        "exception": {"values": [{"type": "ValueError", "value": "card 4111 1111 1111 1111 declined"}]},
        "breadcrumbs": {"values": [{"message": "lookup a@b.io", "data": {"iban": "GB82WEST12345698765432"}}]},
        "extra": {"note": "SSN 536-90-4399", "count": 3, "api_key": "sk-live-123"},
        "request": {
            "url": "https://api.example/jobs",
            "cookies": {"session": "abc"},
            "headers": {"Authorization": "Bearer x", "Api-Key": "k", "Cookie": "c=1", "Accept": "json"},
        },
    }
    scrubbed = scrub_event(event, {})
    assert scrubbed["message"] == "failed for [REDACTED:EMAIL]"
    assert scrubbed["logentry"]["params"] == ["[REDACTED:PHONE]"]
    assert scrubbed["exception"]["values"][0]["value"] == "card [REDACTED:CARD] declined"
    crumb = scrubbed["breadcrumbs"]["values"][0]
    assert crumb == {"message": "lookup [REDACTED:EMAIL]", "data": {"iban": "[REDACTED:IBAN]"}}
    assert scrubbed["extra"] == {"note": "SSN [REDACTED:SSN]", "count": 3, "api_key": FILTERED}
    assert "cookies" not in scrubbed["request"]
    assert scrubbed["request"]["headers"] == {"Accept": "json"}
    assert scrubbed["event_id"] == "4f1c2d"
    assert event["message"] == "failed for jane@example.com", "the caller's event is not mutated"


def test_scrub_event_handles_header_pairs_and_missing_sections() -> None:
    event = {"request": {"headers": [["authorization", "x"], ["X-Api-Key", "y"], ["Accept", "json"]]}}
    assert scrub_event(event, None)["request"]["headers"] == [["Accept", "json"]]
    assert scrub_event({}, None) == {}
