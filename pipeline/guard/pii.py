"""PII detection and redaction: e-mail, phone, payment card, IBAN, US SSN, UK NI number.

Also the two places PII leaks without anyone asking: log records (``PiiRedactingFilter``)
and Sentry events (``scrub_event`` as ``before_send``).

Checksums (Luhn, IBAN mod-97) and issuing rules (SSN ranges, NINO prefixes) decide
before a pattern counts, so contract text full of section numbers, dates, amounts and
reference numbers is not shredded. Matches never overlap: the more specific type wins.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

EMAIL, PHONE, CARD, IBAN, SSN, NINO = "EMAIL", "PHONE", "CARD", "IBAN", "SSN", "NINO"
#: all types, in the order that wins an overlap.
PII_TYPES: tuple[str, ...] = (EMAIL, IBAN, CARD, SSN, NINO, PHONE)


@dataclass(frozen=True)
class PiiMatch:
    """One PII occurrence: ``text[start:end] == value``."""

    type: str
    start: int
    end: int
    value: str


# ---------------------------------------------------------------- e-mail
_EMAIL = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9](?:[A-Za-z0-9._%+'!#$&*=?^`{|}~/-]{0,62}[A-Za-z0-9_%+-])?@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)

# ---------------------------------------------------------------- payment cards
_CARD = re.compile(r"(?<![\w.,/-])[2-6]\d{3}(?:[ -]?\d){9,15}(?![\w-]|[.,]\d)")


def luhn_valid(digits: str) -> bool:
    """Luhn checksum over a string of digits."""
    if not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card_ok(value: str) -> bool:
    digits = re.sub(r"\D", "", value)
    separators = set(re.findall(r"[ -]", value))
    return 13 <= len(digits) <= 19 and len(separators) <= 1 and len(set(digits)) > 1 and luhn_valid(digits)


# ---------------------------------------------------------------- IBAN
#: ISO 13616 lengths by country; an IBAN is cut to exactly this length.
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2})(\d{2})(?=[ ]?[A-Z0-9])")


def iban_valid(iban: str) -> bool:
    """ISO 7064 mod-97 check (and the country's length when the country is known)."""
    compact = re.sub(r"\s", "", iban).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact):
        return False
    expected = _IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _find_ibans(text: str) -> Iterable[tuple[int, int]]:
    for match in _IBAN_START.finditer(text):
        lengths = [_IBAN_LENGTHS[match.group(1)]] if match.group(1) in _IBAN_LENGTHS else range(34, 14, -1)
        for length in lengths:
            end = _consume_alnum(text, match.start(), length)
            if end is None:
                continue
            if end < len(text) and text[end].isalnum():
                continue
            if iban_valid(text[match.start() : end]):
                yield match.start(), end
                break


def _consume_alnum(text: str, start: int, count: int) -> int | None:
    """End index after ``count`` uppercase alphanumerics, allowing single spaces between them."""
    taken = 0
    index = start
    while index < len(text) and taken < count:
        char = text[index]
        if char.isdigit() or ("A" <= char <= "Z"):
            taken += 1
        elif not (char == " " and taken and index + 1 < len(text) and text[index + 1] != " "):
            return None
        index += 1
    return index if taken == count else None


# ---------------------------------------------------------------- national ids
_SSN = re.compile(r"(?<![\w-])(\d{3})-(\d{2})-(\d{4})(?![\w-])")
_SSN_CONTEXT = re.compile(
    r"\b(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?)\b\W{0,5}(\d{9})(?!\d)", re.IGNORECASE
)
#: numbers published in advertising and never issued to anyone.
_SSN_BLOCKLIST = frozenset({"078051120", "219099999"})
#: HMRC prefix rules; "QQ" is HMRC's specimen prefix, used in forms and examples, so it is redacted too.
_NINO = re.compile(
    r"(?<![A-Za-z0-9])(?:QQ|(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z])"
    r"[ ]?\d{2}[ ]?\d{2}[ ]?\d{2}[ ]?[A-D](?![A-Za-z0-9])"
)


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """SSA rules: no area 000, 666 or 900-999; no group 00; no serial 0000."""
    if area in {"000", "666"} or area.startswith("9") or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_BLOCKLIST


# ---------------------------------------------------------------- phones
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .\-]?(?:\(\d{1,4}\)|\d{1,5})){1,6}(?![\w-]|[.,]\d)")
_PHONE_US = re.compile(
    r"(?<![\w+.,/$€£-])(?:1[ .-]?)?(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])\d{3}[ .-]\d{4}"
    r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w-]|[.,]\d)"
)
_PHONE_NATIONAL = re.compile(r"(?<![\w+.,/$€£-])0\d{2,4}[ -]?\d{3,4}[ -]?\d{3,4}(?![\w-]|[.,]\d)")
_PHONE_CONTEXT = re.compile(
    r"\b(?:tel|telephone|phone|mobile|cell|fax|call|sms|text|whatsapp|contact)\b[^\d\n]{0,12}$", re.I
)
_PHONE_BARE = re.compile(r"(?<![\w+.,/$€£-])[2-9]\d{9}(?![\w-]|[.,]\d)")
_NOT_PHONE_BEFORE = re.compile(
    r"(?:\$|€|£|¥|\b(?:usd|eur|gbp|section|sections|clause|article|art\.|§|no\.|number|invoice|order|po|"
    r"version|v\.|isbn|id|ref|reference|account|acct|sort\s+code)\s*[#:]?\s*)$",
    re.I,
)


def _phone_ok(text: str, start: int, end: int, *, needs_context: bool = False) -> bool:
    digits = re.sub(r"\D", "", text[start:end].split("x")[0].split("ext")[0])
    if not 8 <= len(digits) <= 15 or len(set(digits)) < 3:
        return False
    before = text[max(0, start - 24) : start]
    if _NOT_PHONE_BEFORE.search(before):
        return False
    return not needs_context or bool(_PHONE_CONTEXT.search(before))


def _trim_trailing_groups(text: str, start: int, end: int) -> int:
    """Drop digit groups glued on after a number ("+44 20 7946 0958 2024") until it fits E.164."""
    while sum(char.isdigit() for char in text[start:end]) > 15:
        cut = max(text.rfind(sep, start, end) for sep in " .-")
        if cut <= start:
            break
        end = cut
    return end


# ---------------------------------------------------------------- public API
def find_pii(text: str, types: Iterable[str] | None = None) -> list[PiiMatch]:
    """All PII in ``text``, sorted by position, never overlapping (more specific type wins)."""
    wanted = _normalise_types(types)
    candidates: list[tuple[int, int, int, str]] = []  # (priority, start, end, type)

    def add(kind: str, start: int, end: int) -> None:
        candidates.append((PII_TYPES.index(kind), start, end, kind))

    for match in _EMAIL.finditer(text):
        add(EMAIL, match.start(), match.end())
    for start, end in _find_ibans(text):
        add(IBAN, start, end)
    for match in _CARD.finditer(text):
        if _card_ok(match.group(0)):
            add(CARD, match.start(), match.end())
    for match in _SSN.finditer(text):
        if ssn_valid(*match.groups()):
            add(SSN, match.start(), match.end())
    for match in _SSN_CONTEXT.finditer(text):
        digits = match.group(1)
        if ssn_valid(digits[:3], digits[3:5], digits[5:]):
            add(SSN, match.start(1), match.end(1))
    for match in _NINO.finditer(text):
        add(NINO, match.start(), match.end())
    for match in _PHONE_INTL.finditer(text):
        end = _trim_trailing_groups(text, match.start(), match.end())
        if _phone_ok(text, match.start(), end):
            add(PHONE, match.start(), end)
    for pattern in (_PHONE_US, _PHONE_NATIONAL):
        for match in pattern.finditer(text):
            if _phone_ok(text, match.start(), match.end()):
                add(PHONE, match.start(), match.end())
    for match in _PHONE_BARE.finditer(text):
        if _phone_ok(text, match.start(), match.end(), needs_context=True):
            add(PHONE, match.start(), match.end())

    chosen: list[tuple[int, int, str]] = []
    for _, start, end, kind in sorted(candidates, key=lambda c: (c[0], -(c[2] - c[1]), c[1])):
        if all(end <= s or start >= e for s, e, _ in chosen):
            chosen.append((start, end, kind))
    return [
        PiiMatch(type=kind, start=start, end=end, value=text[start:end])
        for start, end, kind in sorted(chosen)
        if wanted is None or kind in wanted
    ]


def redact(text: str, types: Iterable[str] | None = None) -> str:
    """Replace each PII match (optionally only of ``types``) with ``[REDACTED:<TYPE>]``."""
    if not text:
        return text
    parts: list[str] = []
    cursor = 0
    for match in find_pii(text, types):
        parts.append(text[cursor : match.start])
        parts.append(f"[REDACTED:{match.type}]")
        cursor = match.end
    parts.append(text[cursor:])
    return "".join(parts)


def _normalise_types(types: Iterable[str] | None) -> frozenset[str] | None:
    if types is None:
        return None
    if isinstance(types, str):
        types = [types]
    wanted = frozenset(t.upper() for t in types)
    unknown = wanted - set(PII_TYPES)
    if unknown:
        raise ValueError(f"unknown PII type(s) {sorted(unknown)}; known: {list(PII_TYPES)}")
    return wanted


# ---------------------------------------------------------------- logging and Sentry
#: attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_RECORD_ATTRS = frozenset(vars(logging.LogRecord("n", 0, "p", 0, "m", None, None))) | {
    "message", "asctime", "taskName",
}  # fmt: skip


class PiiRedactingFilter(logging.Filter):
    """Redact PII and secret-shaped strings from a record's message, args, ``extra`` and traceback.

    Attach to handlers (``handler.addFilter(PiiRedactingFilter())``) so that every log line,
    whichever logger emitted it, is clean before it is formatted or shipped. Never drops a record.
    """

    def __init__(self, name: str = "", types: Iterable[str] | None = None) -> None:
        super().__init__(name)
        self._types = _normalise_types(types)

    def _clean(self, text: str) -> str:
        return redact_secrets(redact(text, self._types))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # mismatched %-args: keep everything, still redacted
            message = f"{record.msg} {record.args!r}"
        record.msg = self._clean(message)
        record.args = ()
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_RECORD_ATTRS and isinstance(value, str):
                setattr(record, key, self._clean(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self._clean(record.stack_info)
        return True


_DROPPED_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie", "set-cookie", "x-auth-token"}
)
_SECRET_KEY = re.compile(
    r"^(?:.*[-_])?(?:password|passwd|secret|api[-_]?key|apikey|access[-_]?token|auth[-_]?token|refresh[-_]?token"
    r"|token|authorization|cookie|session[-_]?id|credentials?|private[-_]?key)$",
    re.IGNORECASE,
)
FILTERED = "[Filtered]"
SECRET_MARK = "[REDACTED:SECRET]"

#: credentials by shape, wherever they sit in a string (an exception message, a log line, a frame
#: variable). Secrets are not PII, so ``redact`` leaves them alone; ``scrub_event`` does not.
_SECRET_SHAPES = re.compile(
    r"""
    \bsk[-_](?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{16,}        # OpenAI / Anthropic / Stripe secret keys
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b                       # AWS access key ids
    | \b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})  # GitHub tokens
    | \bxox[abposr]-[A-Za-z0-9-]{10,}                      # Slack tokens
    | \bAIza[0-9A-Za-z_-]{35}                             # Google API keys
    | \beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}  # JWTs
    | -----BEGIN[A-Z ]*PRIVATE\ KEY-----[\s\S]*?(?:-----END[A-Z ]*PRIVATE\ KEY-----|\Z)
    """,
    re.VERBOSE,
)
#: ``Bearer <token>`` (an Authorization header pasted into a message): the token goes, the scheme stays.
_BEARER = re.compile(r"(?i:\b(bearer)\s+)(?=[A-Za-z0-9._~+/-]*\d)[A-Za-z0-9._~+/-]{8,}=*")
#: ``scheme://user:password@host``: the password goes (broker and database URLs in error messages).
_URL_PASSWORD = re.compile(r"(?<=://)([^\s/:@]*):[^\s/@]+(?=@)")


def redact_secrets(text: str) -> str:
    """Replace API keys, tokens, private keys and URL passwords with ``[REDACTED:SECRET]``."""
    if not text:
        return text
    text = _SECRET_SHAPES.sub(SECRET_MARK, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {SECRET_MARK}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{SECRET_MARK}", text)


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sentry ``before_send``: drop cookies and auth headers, redact secrets and PII in every string.

    Returns a scrubbed copy; secret-named keys anywhere in the event become ``[Filtered]``, and
    secret-shaped values (API keys, bearer tokens, ...) become ``[REDACTED:SECRET]`` wherever they are:
    messages, ``logentry``, exception values, frame variables, breadcrumbs, extra, tags, contexts.
    """
    scrubbed: dict[str, Any] = {key: _scrub(value, key) for key, value in event.items()}
    request = scrubbed.get("request")
    if isinstance(request, dict):
        request.pop("cookies", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {k: v for k, v in headers.items() if str(k).lower() not in _DROPPED_HEADERS}
        elif isinstance(headers, list):
            request["headers"] = [
                pair
                for pair in headers
                if not (isinstance(pair, list | tuple) and pair and str(pair[0]).lower() in _DROPPED_HEADERS)
            ]
    return scrubbed


def _scrub(value: Any, key: str | None = None) -> Any:
    if isinstance(value, str):
        return FILTERED if key is not None and _SECRET_KEY.match(key) else redact(redact_secrets(value))
    if isinstance(value, dict):
        return {k: _scrub(v, k if isinstance(k, str) else None) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value
