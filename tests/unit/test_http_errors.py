"""The one HTTP error map: its table, Retry-After parsing, and both clients agreeing on it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from pydantic import SecretStr

from pipeline.errors import (
    ConveyorError,
    InternalError,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    StageTimeout,
)
from pipeline.generation.llm.openai_compat import OpenAICompatProvider
from pipeline.http_errors import (
    QUOTED_MAX,
    error_class,
    error_for_response,
    parse_retry_after,
    translate_transport_errors,
)
from pipeline.retrieval.embeddings import OpenAIEmbedder
from tests.llm_fixtures import TEST_API_KEY, RecordingSleep, request

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (200, None, None),
        (204, None, None),
        (301, None, ProviderUnavailable),
        (400, None, ProviderRejected),
        (401, "invalid_api_key", ProviderRejected),
        (403, None, ProviderRejected),
        (404, None, ProviderRejected),
        (408, None, StageTimeout),
        (409, None, ProviderUnavailable),
        (413, None, ProviderRejected),
        (422, None, ProviderRejected),
        (429, None, RateLimited),
        (429, "rate_limit_exceeded", RateLimited),
        (429, "insufficient_quota", ProviderRejected),
        (500, None, ProviderUnavailable),
        (502, None, ProviderUnavailable),
        (503, None, ProviderUnavailable),
        (504, None, ProviderUnavailable),
    ],
)
def test_status_map(status: int, code: str | None, expected: type[ConveyorError] | None) -> None:
    assert error_class(status, code) is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": format_datetime(NOW + timedelta(seconds=30), usegmt=True)}, 30.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After-Ms": "250"}, 0.25),
        ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),  # the precise one wins
        ({"retry-after-ms": "soon", "Retry-After": "9"}, 9.0),  # unreadable ms: fall back
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "inf"}, None),
        ({"retry-after-ms": "inf"}, None),
    ],
)
def test_retry_after_parsing(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


def test_httpx_headers_are_read_case_insensitively() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After-MS": "40"})) == 0.04


def test_error_quotes_the_upstream_message_without_the_secret() -> None:
    body = {"error": {"message": f"bad key {TEST_API_KEY} " + "x" * 1000, "code": "invalid_api_key"}}
    error = error_for_response(httpx.Response(401, json=body), "svc:m", TEST_API_KEY)
    assert isinstance(error, ProviderRejected)
    assert error.message.startswith("svc:m: HTTP 401 Unauthorized bad key ***")
    assert TEST_API_KEY not in error.message and len(error.message) < QUOTED_MAX + 40
    assert error.details == {"status": 401, "code": "invalid_api_key"}


def test_rate_limited_carries_retry_after_and_says_so() -> None:
    error = error_for_response(httpx.Response(429, headers={"retry-after-ms": "1200"}, text="slow"), "svc:m")
    assert isinstance(error, RateLimited)
    assert error.retry_after == 1.2 and "retry after 1.2s" in error.message


def test_success_is_no_error() -> None:
    assert error_for_response(httpx.Response(200, json={}), "svc:m") is None


def _req() -> httpx.Request:
    return httpx.Request("POST", "http://upstream.test/v1/x")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ReadTimeout("slow", request=_req()), StageTimeout),
        (httpx.ConnectTimeout("slow", request=_req()), StageTimeout),
        (httpx.PoolTimeout("busy", request=_req()), StageTimeout),
        (httpx.ConnectError("refused", request=_req()), ProviderUnavailable),
        (httpx.RemoteProtocolError("peer closed", request=_req()), ProviderUnavailable),
        (httpx.ReadError("reset", request=_req()), ProviderUnavailable),
        (httpx.UnsupportedProtocol("ftp", request=_req()), InternalError),
        (httpx.InvalidURL("no host"), InternalError),
    ],
)
def test_transport_exceptions(exc: Exception, expected: type[ConveyorError]) -> None:
    with pytest.raises(expected) as info, translate_transport_errors("svc:m", 5.0):
        raise exc
    assert type(info.value) is expected and info.value.__cause__ is exc
    assert type(exc).__name__ in info.value.message


def test_foreign_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), translate_transport_errors("svc:m", 5.0):
        raise KeyError("not httpx")


# ---- both clients, same upstream answer, same error ------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


def _llm_error(handler: Handler) -> ConveyorError:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    provider = OpenAICompatProvider(
        "http://upstream.test/v1", SecretStr(TEST_API_KEY), "m", max_attempts=1, client=client, sleep=RecordingSleep()
    )
    with client, pytest.raises(ConveyorError) as info:
        provider.complete(request())
    return info.value


def _embeddings_error(handler: Handler) -> ConveyorError:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    embedder = OpenAIEmbedder("http://upstream.test/v1", SecretStr(TEST_API_KEY), "m", dim=4, client=client)
    with client, pytest.raises(ConveyorError) as info:
        embedder.embed(["x"])
    return info.value


def _answer(status: int, headers: dict[str, str] | None = None, code: str | None = None) -> Handler:
    body = {"error": {"message": f"upstream says no to {TEST_API_KEY}", "type": "error", "code": code}}
    return lambda r: httpx.Response(status, headers=headers, json=body)


def _raise(exc: type[httpx.TransportError]) -> Handler:
    def handler(r: httpx.Request) -> httpx.Response:
        raise exc("broken", request=r)

    return handler


@pytest.mark.parametrize(
    ("handler", "expected", "retry_after"),
    [
        (_answer(400), ProviderRejected, None),
        (_answer(401), ProviderRejected, None),
        (_answer(404), ProviderRejected, None),
        (_answer(408), StageTimeout, None),
        (_answer(409), ProviderUnavailable, None),
        (_answer(422), ProviderRejected, None),
        (_answer(429, {"Retry-After": "7"}), RateLimited, 7.0),
        (_answer(429, {"retry-after-ms": "250", "Retry-After": "1"}), RateLimited, 0.25),
        (_answer(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), RateLimited, 0.0),
        (_answer(429, {"Retry-After": "later"}), RateLimited, None),
        (_answer(429), RateLimited, None),
        (_answer(429, code="insufficient_quota"), ProviderRejected, None),
        (_answer(500), ProviderUnavailable, None),
        (_answer(503, {"Retry-After": "3"}), ProviderUnavailable, None),
        (_raise(httpx.ReadTimeout), StageTimeout, None),
        (_raise(httpx.ConnectError), ProviderUnavailable, None),
        (_raise(httpx.RemoteProtocolError), ProviderUnavailable, None),
        (_raise(httpx.UnsupportedProtocol), InternalError, None),
    ],
)
def test_llm_and_embeddings_clients_agree(
    handler: Handler, expected: type[ConveyorError], retry_after: float | None
) -> None:
    from_llm, from_embeddings = _llm_error(handler), _embeddings_error(handler)
    assert type(from_llm) is type(from_embeddings) is expected
    assert getattr(from_llm, "retry_after", None) == getattr(from_embeddings, "retry_after", None) == retry_after
    assert from_llm.details.get("status") == from_embeddings.details.get("status")
    for error in (from_llm, from_embeddings):
        assert TEST_API_KEY not in str(error) and TEST_API_KEY not in repr(error.details)
