"""Optional OpenTelemetry tracing: one job is one trace across its stage hops.

Off unless ``CONVEYOR_OTEL_ENDPOINT`` (OTLP/HTTP) or ``CONVEYOR_OTEL_FILE`` (a JSONL file of spans)
is set, and then only with the ``conveyor[tracing]`` extra installed; off, nothing is imported and
the only cost is one boolean test per stage run (``annotate``).

On, each worker process that runs tasks sets it up once, after any fork (``workers/signals.py``:
``worker_process_init`` in a prefork child, ``worker_init`` for the threads and solo pools): a
``TracerProvider`` named ``conveyor-<queues>``, ``CeleryInstrumentor`` and ``HTTPXClientInstrumentor``.
The Celery instrumentation puts the trace context in every message's headers at publish
(``traceparent``) and continues it when the task runs; the chain's next message is published from
inside the running task, so a job's five stages, each on its own queue and worker, are one trace:
``run/<stage task>`` -> ``apply_async/<next task>`` -> ``run/<next task>`` -> ... with the LLM's and
Qdrant's HTTP calls inside.

What leaves the process is ids only. ``annotate`` puts ``conveyor.job_id``, ``conveyor.stage`` and
``conveyor.batch_id`` on the task's span; ``IdOnlySpans`` wraps every exporter and keeps only
attributes on an allow-list (Celery's routing metadata, HTTP method/status/URL, Conveyor's ids),
drops exception messages and stack traces (a message may quote the request or the output: the dead
letter keeps it) and status descriptions. No task argument, result or request text is recorded.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.settings import Settings

log = logging.getLogger("conveyor.tracing")

#: True in a process whose tracing is set up: ``annotate`` does nothing otherwise.
_enabled = False
_set_up_pid: int | None = None
_provider: Any = None
_lock = threading.Lock()

#: the schema's Identifier: anything else (text put in a job id by mistake) is not put on a span.
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

#: span attributes that may leave the process: exact names ...
ALLOWED_ATTRIBUTES = frozenset({
    "celery.action", "celery.task_name", "celery.hostname", "celery.state", "celery.retries", "celery.eta",
    "celery.countdown", "celery.expires", "celery.priority", "celery.timelimit", "celery.queue",
    "celery.exchange", "celery.routing_key", "celery.delivery_info", "celery.serializer", "celery.compression",
    "celery.reply_to", "celery.terminated.signal",
    "conveyor.job_id", "conveyor.stage", "conveyor.batch_id",
    "error.type",
})
#: ... and prefixes (messaging ids and destinations; HTTP method, status, URL, peer)
ALLOWED_PREFIXES = ("messaging.", "http.", "url.", "server.", "network.", "net.", "user_agent.")


def enabled(settings: Settings) -> bool:
    return bool(settings.otel_endpoint or settings.otel_file)


def service_name(queues: Sequence[str] | None) -> str:
    return "conveyor-" + ("-".join(queues) if queues else "worker")


def annotate(*, job_id: str, stage: str, batch_id: str | None) -> None:
    """The stage run's ids on the current (the Celery task's) span; nothing when tracing is off."""
    if not _enabled:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.is_recording():
        return
    ids = {"conveyor.job_id": job_id, "conveyor.stage": stage, "conveyor.batch_id": batch_id}
    span.set_attributes({k: v for k, v in ids.items() if v and _IDENTIFIER.match(v)})


def setup_tracing(settings: Settings, queues: Sequence[str] | None) -> bool:
    """Set up tracing in this process, once (per pid); True when it is on."""
    global _enabled, _set_up_pid, _provider
    if not enabled(settings):
        return False
    with _lock:
        if _set_up_pid == os.getpid():
            return _enabled
        _set_up_pid = os.getpid()
        try:
            from opentelemetry import trace
            from opentelemetry.instrumentation.celery import CeleryInstrumentor
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        except ImportError as exc:
            log.warning("tracing is configured (CONVEYOR_OTEL_*) but not installed (%s): "
                        "pip install 'conveyor[tracing]'", exc.name)
            return False
        provider = TracerProvider(resource=Resource.create(
            {"service.name": service_name(queues), "process.pid": os.getpid()}))
        if settings.otel_file is not None:
            # synchronous: each span is on disk when it ends (tests and debugging read the file right after)
            provider.add_span_processor(SimpleSpanProcessor(_exporter(JsonlSpanExporter(settings.otel_file))))
        if settings.otel_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(_exporter(OTLPSpanExporter(
                endpoint=traces_url(settings.otel_endpoint)))))
        trace.set_tracer_provider(provider)
        CeleryInstrumentor().instrument(tracer_provider=provider)
        HTTPXClientInstrumentor().instrument(tracer_provider=provider)
        _provider, _enabled = provider, True
        log.info("tracing on: %s", ", ".join(
            ([f"file {settings.otel_file}"] if settings.otel_file else [])
            + ([f"OTLP {traces_url(settings.otel_endpoint)}"] if settings.otel_endpoint else [])))
        return True


def _exporter(inner: Any) -> Any:
    """``inner`` behind the id-only filter (typed ``Any``: a SpanExporter by its methods)."""
    return IdOnlySpans(inner)


def flush() -> None:
    """Export what is buffered (a prefork child about to exit; ``atexit`` may not run there)."""
    if _provider is not None and _set_up_pid == os.getpid():
        _provider.force_flush(5_000)


def traces_url(endpoint: str) -> str:
    """The collector's base URL (``http://host:4318``) or its traces path, as the traces path."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


class JsonlSpanExporter:
    """Each span as one line of JSON (the SDK's ``to_json``), appended to a file that several
    processes share: one ``write`` per line on an ``O_APPEND`` descriptor, so lines never interleave.
    (A ``SpanExporter`` by its methods: this module imports no OpenTelemetry until tracing is on.)"""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for span in spans:
            line = span.to_json(indent=None) + "\n"
            os.write(self._fd, line.encode("utf-8"))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class IdOnlySpans:
    """An exporter wrapper: spans leave with allow-listed attributes only (see the module docstring)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def export(self, spans: Sequence[Any]) -> Any:
        return self.inner.export([id_only(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


def allowed(key: str) -> bool:
    return key in ALLOWED_ATTRIBUTES or key.startswith(ALLOWED_PREFIXES)


def id_only(span: Any) -> Any:
    """A copy of a finished span with allow-listed attributes, exception events reduced to their type,
    other events to their name, and no status description."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace.status import Status

    events = [Event(e.name, {"exception.type": e.attributes["exception.type"]}
                    if e.name == "exception" and e.attributes and "exception.type" in e.attributes else None,
                    e.timestamp)
              for e in span.events]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes={k: v for k, v in (span.attributes or {}).items() if allowed(k)},
        events=events,
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
