"""One translation of HTTP failures into the error tree, for every OpenAI-compatible client.

The LLM client (generation/llm/openai_compat.py) and the embeddings client
(retrieval/embeddings.py) used to translate by hand and disagreed (408, ``retry-after-ms``);
now both call this module, shaped like httpx's ``map_httpcore_exceptions`` and its table
(httpx/_transports/default.py): one table, one place that reads ``Retry-After``.

Status codes (``error_for_response``):

    2xx                                -> no error
    408                                -> StageTimeout (retryable: the server gave up waiting)
    409                                -> ProviderUnavailable (a conflict that clears on retry)
    429                                -> RateLimited(retry_after from retry-after-ms / Retry-After)
    429 with code insufficient_quota   -> ProviderRejected (no retry refills a quota)
    other 4xx                          -> ProviderRejected
    5xx                                -> ProviderUnavailable
    1xx, 3xx (redirects not followed)  -> ProviderUnavailable

Transport exceptions (``translate_transport_errors``):

    httpx.TimeoutException             -> StageTimeout
    httpx.UnsupportedProtocol, InvalidURL -> InternalError (a configuration bug)
    any other httpx.HTTPError          -> ProviderUnavailable (refused, reset, protocol error)

A client may refine on top (the LLM client turns a context-window 4xx into ContextOverflow);
it does not re-decide the classes above. Upstream text is quoted with the API key scrubbed
and cut to 300 characters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from pipeline.errors import (
    ConveyorError,
    InternalError,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    StageTimeout,
)

QUOTED_MAX = 300

#: status -> error class; a status not listed falls to its range (see ``error_class``).
STATUS_ERRORS: Mapping[int, type[ConveyorError]] = {
    408: StageTimeout,
    409: ProviderUnavailable,
    429: RateLimited,
}


def error_class(status: int, code: str | None = None) -> type[ConveyorError] | None:
    """The error class for an HTTP status (and the OpenAI error ``code``); None for 2xx."""
    if 200 <= status < 300:
        return None
    if status == 429 and code == "insufficient_quota":
        return ProviderRejected
    if status in STATUS_ERRORS:
        return STATUS_ERRORS[status]
    if 400 <= status < 500:
        return ProviderRejected
    return ProviderUnavailable


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, else ``Retry-After`` (seconds or an HTTP-date).

    ``retry-after-ms`` wins because it is the precise one (OpenAI sends both). Unreadable or
    non-finite values count as absent; a date in the past is 0.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = _seconds(lowered.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    value = lowered.get("retry-after")
    seconds = _seconds(value)
    if seconds is not None or not value:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return max(0.0, number) if math.isfinite(number) else None


def quote(text: str, secret: str | None) -> str:
    """Upstream text fit for a message or a log: the secret scrubbed, cut to QUOTED_MAX."""
    if secret:
        text = text.replace(secret, "***")
    return text[:QUOTED_MAX]


def error_info(response: httpx.Response) -> tuple[str | None, str]:
    """(code, message) from an OpenAI-style error body; tolerant of plain-text bodies."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, response.text[:QUOTED_MAX]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return (str(code) if code else None), str(error.get("message") or "")
    if isinstance(error, str):
        return None, error
    return None, str(body)[:QUOTED_MAX]


def error_for_response(response: httpx.Response, where: str, secret: str | None = None) -> ConveyorError | None:
    """The ConveyorError an HTTP response stands for, or None when it succeeded (2xx).

    ``details`` carry ``status`` and the upstream ``code``; a RateLimited carries
    ``retry_after``. ``where`` names the client and model for the message.
    """
    status = response.status_code
    code, message = error_info(response)
    cls = error_class(status, code)
    if cls is None:
        return None
    quoted = quote(message, secret)
    details: dict[str, object] = {"status": status, "code": code}
    if cls is RateLimited:
        retry_after = parse_retry_after(response.headers)
        return RateLimited(
            f"{where}: HTTP 429 rate limited (retry after {retry_after}s) {quoted}".rstrip(),
            retry_after=retry_after,
            details=details,
        )
    if status == 429:  # insufficient_quota
        return cls(f"{where}: HTTP 429 quota exhausted {quoted}".rstrip(), details=details)
    return cls(f"{where}: HTTP {status} {response.reason_phrase} {quoted}".rstrip(), details=details)


@contextmanager
def translate_transport_errors(where: str, timeout_s: float, secret: str | None = None) -> Iterator[None]:
    """Turn httpx exceptions raised inside the block into the error tree (``raise ... from``)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise StageTimeout(
            f"{where} timed out after {timeout_s:g}s ({type(exc).__name__})",
            details={"timeout_s": timeout_s},
        ) from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise InternalError(f"{where}: invalid URL ({type(exc).__name__}: {quote(str(exc), secret)})") from exc
    except httpx.HTTPError as exc:
        raise ProviderUnavailable(
            f"{where}: connection failed ({type(exc).__name__}: {quote(str(exc), secret)})"
        ) from exc
