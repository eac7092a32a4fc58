"""CONVEYOR_LOG_FORMAT=json (workers/logformat.py) and the tracing module's off switch and id-only spans
(workers/tracing.py). Real worker processes: tests/integration/test_logs_and_traces.py."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.guard.pii import PiiRedactingFilter
from pipeline.settings import SettingsError, load_settings
from tests.conftest import REPO
from tests.logcapture import capture_logger
from workers import logcontext, tracing
from workers.logformat import JsonFormatter


@pytest.fixture
def json_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    logcontext.install()
    with capture_logger("conveyor.tests.json", JsonFormatter()) as captured:
        yield captured


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]  # each line alone is valid JSON


def test_a_line_holds_the_record_and_the_stage_ids_when_known(json_logger: tuple[logging.Logger, io.StringIO]
                                                              ) -> None:
    logger, stream = json_logger
    logger.info("outside %d", 1)
    with logcontext.log_context(job_id="job-1", stage="guard", batch_id="b-7", tenant="acme"):
        logger.warning("inside")
    with logcontext.log_context(job_id="job-2", stage="intent", batch_id=None):
        logger.info("no batch, no tenant")
    outside, inside, partial = lines(stream)
    assert set(outside) == {"ts", "level", "logger", "process", "message"}
    assert (outside["level"], outside["logger"], outside["message"]) == ("INFO", "conveyor.tests.json", "outside 1")
    assert outside["ts"].endswith("Z") and "T" in outside["ts"]
    assert {k: inside[k] for k in ("level", "message", "job_id", "stage", "batch_id", "tenant")} == {
        "level": "WARNING", "message": "inside", "job_id": "job-1", "stage": "guard", "batch_id": "b-7",
        "tenant": "acme"}
    assert (partial["job_id"], partial["stage"]) == ("job-2", "intent")
    assert "batch_id" not in partial and "tenant" not in partial


def test_redaction_applies_and_every_record_stays_one_valid_line(json_logger: tuple[logging.Logger, io.StringIO]
                                                                 ) -> None:
    logger, stream = json_logger
    logger.info('mail "%s", key %s\nnext line\u2028after a separator\x85', "jane@example.com",
                "sk-abcdefghijklmnopqrstuvwx1234")
    try:
        raise ValueError("no account for jane@example.com")
    except ValueError:
        logger.exception("lookup failed")
    text = stream.getvalue()
    assert "jane@example.com" not in text and "sk-abcdefghijklmnopqrstuvwx1234" not in text
    assert len(text.splitlines()) == 2  # str.splitlines also breaks on U+2028 and U+0085: escaped
    message, failure = lines(stream)
    assert message["message"].startswith('mail "[REDACTED:EMAIL]", key [REDACTED:SECRET]\nnext line\u2028')
    assert failure["message"] == "lookup failed"
    assert "ValueError: no account for [REDACTED:EMAIL]" in failure["exception"]


def test_celery_logging_setup_gives_its_handlers_the_json_formatter(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import signals

    monkeypatch.setattr(signals, "settings_for", lambda app: load_settings(log_format="json"))
    root = logging.getLogger()
    kept = [(h, h.formatter) for h in root.handlers]
    task_logger = logging.getLogger("conveyor.tests.celery_task")
    handler = logging.StreamHandler(io.StringIO())
    task_logger.addHandler(handler)
    try:
        signals._on_logging_setup(logger=task_logger)
        assert isinstance(handler.formatter, JsonFormatter)
        assert any(isinstance(f, PiiRedactingFilter) for f in handler.filters)
    finally:
        task_logger.removeHandler(handler)
        for h, formatter in kept:
            h.setFormatter(formatter)


def test_the_cli_logs_json_lines_to_stderr() -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVEYOR_")}
    code = ("import logging, warnings; from workers.cli import _settings; _settings(); "
            "logging.getLogger('conveyor.cli').warning('sent to jane@example.com'); warnings.warn('careful')")
    done = subprocess.run([sys.executable, "-c", code], env={**env, "CONVEYOR_LOG_FORMAT": "json"}, cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    first, second = (json.loads(line) for line in done.stderr.splitlines())
    assert (first["logger"], first["message"]) == ("conveyor.cli", "sent to [REDACTED:EMAIL]")
    assert second["logger"] == "py.warnings" and "careful" in second["message"]


def test_the_settings_default_to_text_logs_and_no_tracing() -> None:
    settings = load_settings()
    assert settings.log_format == "text" and not tracing.enabled(settings)
    with pytest.raises(SettingsError, match="CONVEYOR_LOG_FORMAT"):
        load_settings(log_format="xml")
    with pytest.raises(SettingsError, match="CONVEYOR_OTEL_ENDPOINT"):
        load_settings(otel_endpoint="otel-collector:4318")
    assert tracing.traces_url("http://c:4318/") == tracing.traces_url("http://c:4318/v1/traces") == (
        "http://c:4318/v1/traces")


def test_tracing_off_sets_nothing_up_even_with_the_extra_installed() -> None:
    code = ("import sys; from pipeline.settings import load_settings; from workers import tracing; "
            "assert tracing.setup_tracing(load_settings(), ['llm']) is False; "
            "tracing.annotate(job_id='j', stage='generate', batch_id=None); "
            "from workers.app import create_app; create_app(load_settings()); "
            "from celery import signals; "
            "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.instrumentation', "
            "'opentelemetry.sdk.trace', 'opentelemetry.exporter'))), "
            "[r for r in signals.task_prerun.receivers if 'opentelemetry' in repr(r)])")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVEYOR_")}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=True)
    # (redis-py imports parts of the OpenTelemetry API and metrics SDK for its own observability)
    assert done.stdout.strip() == "[] []"


# --- what a span may carry -------------------------------------------------------------------------
otel_sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="the tracing extra (in .[dev]) is not installed")


class Collect:
    def __init__(self) -> None:
        self.spans: list[Any] = []

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None: ...

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def test_spans_leave_with_ids_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import use_span

    collected = Collect()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(tracing.IdOnlySpans(collected)))  # type: ignore[arg-type]
    monkeypatch.setattr(tracing, "_enabled", True)
    span = provider.get_tracer("test").start_span("run/conveyor.generate")
    with use_span(span, end_on_exit=True):
        tracing.annotate(job_id="job-1", stage="generate", batch_id="b-1")
        tracing.annotate(job_id="jane@example.com summarize this", stage="generate", batch_id=None)
        span.set_attributes({"celery.task_name": "conveyor.generate", "celery.args": "['Summarize this contract']",
                             "celery.retry.reason": "quote: Summarize this contract", "messaging.message.id": "m-1",
                             "http.status_code": 200, "gen_ai.prompt": "Summarize this contract"})
        try:
            raise ValueError("Summarize this contract")
        except ValueError as exc:
            span.record_exception(exc)
            span.set_status(otel_sdk.Status(otel_sdk.StatusCode.ERROR, "Summarize this contract"))
    (exported,) = collected.spans
    assert dict(exported.attributes) == {"conveyor.job_id": "job-1", "conveyor.stage": "generate",
                                         "conveyor.batch_id": "b-1", "celery.task_name": "conveyor.generate",
                                         "messaging.message.id": "m-1", "http.status_code": 200}
    assert [(e.name, dict(e.attributes or {})) for e in exported.events] == [
        ("exception", {"exception.type": "ValueError"})]
    assert exported.status.status_code == otel_sdk.StatusCode.ERROR and not exported.status.description
    assert "Summarize" not in exported.to_json()
    assert exported.context == span.get_span_context() and exported.name == "run/conveyor.generate"


def test_the_span_file_is_one_json_span_a_line(tmp_path: Any) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    path = tmp_path / "spans" / "out.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(tracing.JsonlSpanExporter(path)))  # type: ignore[arg-type]
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("parent"), tracer.start_as_current_span("child"):
        pass
    provider.shutdown()
    child, parent = (json.loads(line) for line in path.read_text().splitlines())
    assert (child["name"], parent["name"]) == ("child", "parent")
    assert child["context"]["trace_id"] == parent["context"]["trace_id"]
    assert child["parent_id"] == parent["context"]["span_id"]
