"""Sentry events leave the process scrubbed of PII and secrets.

End to end with the real sentry-sdk: ``workers.signals.init_sentry`` points the SDK at a tiny
standard-library HTTP server on 127.0.0.1 that records every envelope the SDK POSTs. Nothing in
the SDK is patched, so what the server receives is exactly what a Sentry server would.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sentry_sdk

from pipeline.guard.pii import redact_secrets, scrub_event
from pipeline.settings import load_settings
from workers.signals import init_sentry

EMAIL = "jane.doe@example.com"
CRUMB_EMAIL = "billing.contact@example.org"
CARD = "4111 1111 1111 1111"
API_KEY = "sk-proj-4eC39HqLyjWDarjtT1zdp7dc8Xw2"
BEARER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
#: every value that must never reach Sentry, in any form the SDK could send it.
FORBIDDEN = (EMAIL, CRUMB_EMAIL, CARD, CARD.replace(" ", ""), API_KEY, BEARER)


# ---------------------------------------------------------------- the fake Sentry server
@dataclass
class Envelope:
    headers: dict[str, Any]
    items: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)

    def payloads(self, item_type: str) -> list[dict[str, Any]]:
        return [json.loads(body) for header, body in self.items if header.get("type") == item_type]


def parse_envelope(raw: bytes) -> Envelope:
    """Sentry envelope format: a header line, then (item header line, payload) pairs.

    A payload is ``length`` bytes when the item header says so, else the rest of the line.
    """
    first, _, rest = raw.partition(b"\n")
    envelope = Envelope(headers=json.loads(first))
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        if not line.strip():
            continue
        header = json.loads(line)
        if "length" in header:
            length = int(header["length"])
            payload, rest = rest[:length], rest[length:]
            assert len(payload) == length, f"truncated {header.get('type')} item"
            rest = rest.removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        envelope.items.append((header, payload))
    return envelope


def decode_body(raw: bytes, encoding: str | None) -> bytes:
    encoding = (encoding or "identity").lower()
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    if encoding == "br":  # sentry-sdk prefers brotli when the Brotli package is installed
        import brotli

        return bytes(brotli.decompress(raw))
    if encoding != "identity":
        raise ValueError(f"unexpected Content-Encoding {encoding!r}")
    return raw


class SentryCollector(ThreadingHTTPServer):
    """Records the decompressed body of every POST; ``server_close`` joins the handler threads."""

    daemon_threads = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CollectorHandler)
        self.bodies: list[bytes] = []  # decompressed request bodies, as received
        self.paths: list[str] = []
        self.encodings: list[str] = []
        self.errors: list[str] = []  # a request the collector could not read fails the test, not a thread
        self._lock = threading.Lock()

    def record(self, path: str, encoding: str, body: bytes) -> None:
        with self._lock:
            self.paths.append(path)
            self.encodings.append(encoding)
            self.bodies.append(body)

    def record_error(self, error: str) -> None:
        with self._lock:
            self.errors.append(error)

    @property
    def envelopes(self) -> list[Envelope]:
        with self._lock:
            return [parse_envelope(body) for body in self.bodies]

    def events(self) -> list[dict[str, Any]]:
        return [event for envelope in self.envelopes for event in envelope.payloads("event")]


class _CollectorHandler(BaseHTTPRequestHandler):
    server: SentryCollector

    def do_POST(self) -> None:  # http.server names it so
        encoding = self.headers.get("Content-Encoding") or "identity"
        try:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.server.record(self.path, encoding, decode_body(raw, encoding))
        except Exception as exc:  # reported through the test's assertions
            self.server.record_error(f"{self.path}: {exc!r}")
            self.send_error(400)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:  # silence the stderr access log
        return None


@pytest.fixture
def collector() -> Iterator[SentryCollector]:
    server = SentryCollector()
    thread = threading.Thread(target=server.serve_forever, name="fake-sentry", kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


@pytest.fixture
def sentry(collector: SentryCollector, monkeypatch: pytest.MonkeyPatch) -> Iterator[SentryCollector]:
    """Sentry initialised by the production code path, pointed at the collector; torn down after."""
    # a fixed release: the SDK otherwise shells out to git to guess one; SENTRY_DSN etc. must not leak in
    monkeypatch.setenv("SENTRY_RELEASE", "conveyor@test")
    for name in ("SENTRY_DSN", "SENTRY_ENVIRONMENT", "SENTRY_DEBUG", "SENTRY_SPOTLIGHT"):
        monkeypatch.delenv(name, raising=False)
    before = set(threading.enumerate())
    host, port = collector.server_address[:2]
    settings = load_settings(sentry_dsn=f"http://public@{host}:{port}/1", sentry_environment="test")
    try:
        assert init_sentry(settings) is True
        with sentry_sdk.isolation_scope():  # breadcrumbs of this test stay in this test
            yield collector
    finally:
        sentry_sdk.get_client().close(timeout=2)
        sentry_sdk.get_global_scope().set_client(None)  # back to the non-recording client
        assert not sentry_sdk.get_client().is_active()
        # the transport's worker thread exits once it reads the terminator close() queued: wait for
        # it (and any collector handler thread). The SDK's health monitor, if some version started it,
        # is a daemon sleeping in 10 s steps with no way to wake it; it is not waited for.
        started = [t for t in set(threading.enumerate()) - before if t.name != "sentry.monitor"]
        for thread in started:
            thread.join(timeout=5)
        assert not [t.name for t in started if t.is_alive()], "Sentry left threads running"


def _fail_with_secrets() -> None:
    customer_email = EMAIL  # a local variable: Sentry ships frame locals with the stack trace
    card_number = CARD
    raise ValueError(
        f"charge failed for {customer_email} with card {card_number}; provider key {API_KEY}; "
        f"header Authorization: Bearer {BEARER}"
    )


def _leaks(body: bytes) -> list[str]:
    text = body.decode("utf-8", errors="replace")
    return [value for value in FORBIDDEN if value in text]


# ---------------------------------------------------------------- tests
def test_sentry_events_are_scrubbed_before_they_leave_the_process(sentry: SentryCollector) -> None:
    log = logging.getLogger("conveyor.test.sentry")
    log.warning("looking up customer %s", CRUMB_EMAIL)  # WARNING: a breadcrumb, not an event
    sentry_sdk.add_breadcrumb(category="billing", message=f"charging {EMAIL}", data={"contact": EMAIL})

    try:
        _fail_with_secrets()
    except ValueError:
        event_id = sentry_sdk.capture_exception()
    log.error("payment for %s failed using key %s", EMAIL, API_KEY)  # ERROR: its own event, with logentry
    sentry_sdk.flush(timeout=10)

    assert event_id is not None
    assert not sentry.errors
    events = sentry.events()
    assert len(events) == 2, f"expected the exception and the log event, got {[e.get('event_id') for e in events]}"
    assert all(path == "/api/1/envelope/" for path in sentry.paths)

    by_id = {event["event_id"]: event for event in events}
    exc_event = by_id[event_id]
    (log_event,) = (event for event in events if event["event_id"] != event_id)

    # nothing forbidden anywhere in anything the server received (envelope headers and all items)
    leaks = {index: _leaks(body) for index, body in enumerate(sentry.bodies)}
    assert not any(leaks.values()), f"PII or secrets reached Sentry: {leaks}"

    # ...and the places they were are still there, redacted rather than dropped
    (exception,) = exc_event["exception"]["values"]
    assert exception["type"] == "ValueError"
    assert "[REDACTED:EMAIL]" in exception["value"]
    assert "[REDACTED:CARD]" in exception["value"]
    assert "[REDACTED:SECRET]" in exception["value"]
    assert "Bearer [REDACTED:SECRET]" in exception["value"]
    frames = exception["stacktrace"]["frames"]
    raising = next(frame for frame in frames if frame["function"] == "_fail_with_secrets")
    assert "[REDACTED:EMAIL]" in raising["vars"]["customer_email"]
    assert "[REDACTED:CARD]" in raising["vars"]["card_number"]

    crumbs = exc_event["breadcrumbs"]["values"]
    logged = next(crumb for crumb in crumbs if crumb.get("category") == "conveyor.test.sentry")
    assert logged["message"] == "looking up customer [REDACTED:EMAIL]"
    manual = next(crumb for crumb in crumbs if crumb.get("category") == "billing")
    assert manual["message"] == "charging [REDACTED:EMAIL]"
    assert manual["data"] == {"contact": "[REDACTED:EMAIL]"}

    entry = log_event["logentry"]
    assert entry["formatted"] == "payment for [REDACTED:EMAIL] failed using key [REDACTED:SECRET]"
    # a worker's log filter may already have folded the args into the message (then params are empty)
    assert entry["params"] in ([], ["[REDACTED:EMAIL]", "[REDACTED:SECRET]"])
    assert log_event["logger"] == "conveyor.test.sentry"
    assert log_event["environment"] == "test" and log_event["release"] == "conveyor@test"


# ---------------------------------------------------------------- the scrubber's secret shapes
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"key {API_KEY} rejected", "key [REDACTED:SECRET] rejected"),
        ("stripe sk_live_51HxYzAbCdEf0123456789 failed", "stripe [REDACTED:SECRET] failed"),
        ("anthropic sk-ant-api03-AbCdEf0123456789xyz", "anthropic [REDACTED:SECRET]"),
        ("aws AKIAIOSFODNN7EXAMPLE denied", "aws [REDACTED:SECRET] denied"),
        ("gh ghp_0123456789abcdefghijABCDEFGHIJ0123 ok", "gh [REDACTED:SECRET] ok"),
        ("slack xoxb-1234567890-abcdefghij", "slack [REDACTED:SECRET]"),
        (f"token={BEARER}", "token=[REDACTED:SECRET]"),
        ("Authorization: Bearer abc123def456ghi789", "Authorization: Bearer [REDACTED:SECRET]"),
        ("authorization: bearer 9f8e7d6c5b4a", "authorization: bearer [REDACTED:SECRET]"),
        ("redis://:hunter2pass@redis:6379/0 refused", "redis://:[REDACTED:SECRET]@redis:6379/0 refused"),
        ("amqp://guest:s3cr3t@rabbit//", "amqp://guest:[REDACTED:SECRET]@rabbit//"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY----- loaded",
            "[REDACTED:SECRET] loaded",
        ),
        # not secrets: contract prose and ordinary identifiers pass untouched
        ("the bearer of this instrument", "the bearer of this instrument"),
        ("Bearer bonds are void", "Bearer bonds are void"),
        ("risk-assessment-2024-contract-v2", "risk-assessment-2024-contract-v2"),
        ("sk-short1 and task-0123456789abcdefgh", "sk-short1 and task-0123456789abcdefgh"),
        (
            "see https://example.com/path@v2 and redis://redis:6379/0",
            "see https://example.com/path@v2 and redis://redis:6379/0",
        ),
    ],
)
def test_scrub_event_redacts_secret_shaped_values(raw: str, expected: str) -> None:
    assert redact_secrets(raw) == expected
    event = {"message": raw, "exception": {"values": [{"type": "E", "value": raw}]}}
    scrubbed = scrub_event(event, None)
    assert scrubbed["message"] == expected
    assert scrubbed["exception"]["values"][0]["value"] == expected


def test_scrub_event_redacts_secrets_and_pii_in_one_string() -> None:
    event = {
        "logentry": {
            "message": "payment for %s failed using key %s",
            "params": [EMAIL, API_KEY],
            "formatted": f"payment for {EMAIL} failed using key {API_KEY} on card {CARD}",
        },
        "tags": {"customer": EMAIL},
        "contexts": {"celery": {"broker": "redis://:hunter2pass@redis:6379/0"}},
    }
    scrubbed = scrub_event(event, None)
    assert scrubbed["logentry"] == {
        "message": "payment for %s failed using key %s",
        "params": ["[REDACTED:EMAIL]", "[REDACTED:SECRET]"],
        "formatted": "payment for [REDACTED:EMAIL] failed using key [REDACTED:SECRET] on card [REDACTED:CARD]",
    }
    assert scrubbed["tags"] == {"customer": "[REDACTED:EMAIL]"}
    assert scrubbed["contexts"]["celery"]["broker"] == "redis://:[REDACTED:SECRET]@redis:6379/0"
