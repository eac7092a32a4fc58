"""The Prometheus metrics of a worker, declared once in ``SPEC``.

``SPEC`` is the single list of names, types and labels: the metric objects below are built
from it, the exporter's scrape-time gauges take their help text from it, and
``tests/unit/test_deploy_manifests.py`` checks the Grafana dashboard's queries against it, so the
dashboard and the exporter cannot drift apart.

Values are recorded in whichever process runs the work (a prefork child, a pool thread, the
embedded worker); ``workers/exporter.py`` sums the processes. Labels carry stage names, failure
classes, check names, model names, tenants and batch ids only, never request text: a model that
is not configured (``CONVEYOR_LLM_MODEL``, ``CONVEYOR_LLM_FALLBACK_MODELS``) is labelled ``other``,
since ``params.model`` comes from the request, and a tenant that is not an identifier ``unknown``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram

log = logging.getLogger("conveyor.metrics")

Kind = Literal["counter", "histogram", "gauge"]


@dataclass(frozen=True)
class MetricSpec:
    kind: Kind
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()


_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_WAIT = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0)
_RATELIMIT = (0.001, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

#: every metric a worker exports: name -> type, labels, meaning (README "Metrics" is this table).
SPEC: dict[str, MetricSpec] = {
    "conveyor_stage_duration_seconds": MetricSpec(
        "histogram", ("stage",), "Wall time of a stage run (middleware included), whatever its outcome.", _SECONDS),
    "conveyor_queue_wait_seconds": MetricSpec(
        "histogram", ("stage",), "From the message's publish (or its countdown's end) to the start of the stage run.",
        _WAIT),
    "conveyor_jobs_total": MetricSpec(
        "counter", ("stage", "outcome"),
        "Stage runs by outcome: succeeded, retried, requeued, skipped, dead_lettered, error."),
    "conveyor_dead_letters_total": MetricSpec(
        "counter", ("stage", "failure_class"), "Dead letters written, by the stage and the consumer."),
    "conveyor_retries_total": MetricSpec("counter", ("stage",), "Stage retries scheduled (Celery retry)."),
    "conveyor_llm_calls_total": MetricSpec(
        "counter", ("model", "status"), "LLM calls: ok, a failure class per failed HTTP attempt, or cache_hit."),
    "conveyor_llm_tokens_total": MetricSpec(
        "counter", ("model", "kind"), "Billed LLM tokens, kind prompt or completion."),
    "conveyor_cost_usd_total": MetricSpec(
        "counter", ("model", "tenant"), "Billed LLM cost in USD (a call to a model with no known price adds none)."),
    "conveyor_ratelimit_wait_seconds": MetricSpec(
        "histogram", (), "Time a call waited for its slot in the shared LLM rate limit.", _RATELIMIT),
    "conveyor_guard_verdicts_total": MetricSpec(
        "counter", ("check", "verdict"), "Guard validator results: pass, repaired, redacted, blocked."),
    "conveyor_queue_depth": MetricSpec("gauge", ("queue",), "Messages waiting in each stage queue (sampled)."),
    "conveyor_batch_items": MetricSpec(
        "gauge", ("batch_id", "state"), "Items of recent or unfinished batches: succeeded, failed, pending (sampled)."),
}

#: computed at scrape time by the exporter (workers/exporter.py), never recorded by a process.
SAMPLED = frozenset({"conveyor_queue_depth", "conveyor_batch_items"})

#: the recorded metrics, apart from any other library's (one process: serve it; prefork: files).
REGISTRY = CollectorRegistry()


def _counter(name: str) -> Counter:
    spec = SPEC[name]
    return Counter(name, spec.help, spec.labels, registry=REGISTRY)


def _histogram(name: str) -> Histogram:
    spec = SPEC[name]
    return Histogram(name, spec.help, spec.labels, buckets=spec.buckets, registry=REGISTRY)


STAGE_DURATION = _histogram("conveyor_stage_duration_seconds")
QUEUE_WAIT = _histogram("conveyor_queue_wait_seconds")
JOBS = _counter("conveyor_jobs_total")
DEAD_LETTERS = _counter("conveyor_dead_letters_total")
RETRIES = _counter("conveyor_retries_total")
LLM_CALLS = _counter("conveyor_llm_calls_total")
LLM_TOKENS = _counter("conveyor_llm_tokens_total")
COST_USD = _counter("conveyor_cost_usd_total")
RATELIMIT_WAIT = _histogram("conveyor_ratelimit_wait_seconds")
GUARD_VERDICTS = _counter("conveyor_guard_verdicts_total")


def exported_metrics() -> dict[str, tuple[Kind, set[str]]]:
    """name -> (type, labels) of every exported series family (what a dashboard may query)."""
    return {name: (spec.kind, set(spec.labels)) for name, spec in SPEC.items()}


# --- stage runs (the Metrics middleware) ---------------------------------------------------------
def stage_run(stage: str, outcome: str, seconds: float, queue_wait_s: float | None) -> None:
    STAGE_DURATION.labels(stage).observe(seconds)
    JOBS.labels(stage, outcome).inc()
    if outcome == "retried":
        RETRIES.labels(stage).inc()
    if queue_wait_s is not None:
        QUEUE_WAIT.labels(stage).observe(queue_wait_s)


def dead_letter(stage: str, failure_class: str) -> None:
    DEAD_LETTERS.labels(stage, failure_class).inc()


def guard_checks(checks: Iterable[tuple[str, str]]) -> None:
    for check, verdict in checks:
        GUARD_VERDICTS.labels(check, verdict).inc()


#: the header every message a Conveyor process publishes carries (epoch seconds), for the queue wait.
PUBLISHED_AT = "conveyor_published_at"


def stamp_published_at(headers: dict[str, Any] | None, now: float) -> None:
    """Celery's ``before_task_publish``: a retry or re-queue is a new publish, so it is always set."""
    if isinstance(headers, dict):
        headers[PUBLISHED_AT] = now


def queue_wait_s(request: Any, now: float) -> float | None:
    """Seconds the message waited: from its publish, or from its ``eta`` when it had a countdown.

    None for a message without the header (a producer in another language). Clocks of two hosts
    differ a little; a negative wait is 0."""
    published = getattr(request, PUBLISHED_AT, None)
    if isinstance(published, bool) or not isinstance(published, int | float):
        return None
    since = float(published)
    eta = getattr(request, "eta", None)
    if isinstance(eta, str):
        try:
            when = datetime.fromisoformat(eta)
        except ValueError:
            when = None
        if when is not None:
            since = max(since, (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())
    return max(0.0, now - since)


# --- the LLM provider layer (a pipeline CallObserver) ----------------------------------------------
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class LLMMetrics:
    """Counts calls, tokens, cost and rate-limit waits; bounded, text-free labels (see the module doc)."""

    def __init__(self, known_models: Iterable[str]) -> None:
        self.known_models = frozenset(known_models)

    def model_label(self, model: str) -> str:
        return model if model in self.known_models else "other"

    def llm_call(self, *, model: str, status: str, tenant: str, prompt_tokens: int, completion_tokens: int,
                 cost_usd: float | None) -> None:
        label = self.model_label(model)
        LLM_CALLS.labels(label, status).inc()
        LLM_TOKENS.labels(label, "prompt").inc(max(0, prompt_tokens))
        LLM_TOKENS.labels(label, "completion").inc(max(0, completion_tokens))
        if cost_usd is not None:  # None: the model has no known price (the record says so); not counted as 0
            COST_USD.labels(label, tenant if _IDENTIFIER.match(tenant) else "unknown").inc(max(0.0, cost_usd))

    def ratelimit_wait(self, seconds: float) -> None:
        RATELIMIT_WAIT.observe(max(0.0, seconds))
