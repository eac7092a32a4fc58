"""Worker metrics: the Metrics middleware's outcomes, the LLM provider's calls, tokens, cost and rate-limit
waits, the publish-time header, the scrape-time gauges, prefork children summed, and an exposition that
carries exactly the names, types and labels of ``workers.metrics.SPEC``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import fakeredis
import pytest
from celery.exceptions import Ignore, Retry
from click.testing import CliRunner
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from pipeline.errors import GuardrailBlocked, InvalidInput, Requeue
from pipeline.generation.llm.cache import MemoryResponseCache
from pipeline.generation.llm.pricing import Price, PriceTable
from pipeline.generation.llm.ratelimit import LocalRateLimiter
from pipeline.settings import load_settings
from pipeline.state import SqliteStateStore
from schemas import CheckResult, Completion, GuardReport, GuardResult, JobRequest
from schemas.batch import BatchInfo
from schemas.pipeline import GUARD, INTENT, RECORD
from scripts.fake_openai_server import FakeOpenAIServer
from tests.conftest import REPO
from tests.fakes import drain_queue
from tests.llm_fixtures import FakeClock, RecordingSleep, make_provider, request
from workers import metrics
from workers.app import create_app
from workers.chain import send_job
from workers.cli import main
from workers.exporter import SampledGauges, exporter_registry
from workers.middleware import Delivery, Metrics, default_middleware

REQUEST = JobRequest(text="What is the rent?", document_id="lease", tenant="acme", batch_id="b-1")


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


class Counts:
    """Sample values before a test's action, so a test reads its own deltas from the process-wide registry."""

    def __init__(self, *series: tuple[str, dict[str, str]]) -> None:
        self.series = series
        self.before = [value(name, **labels) for name, labels in series]

    def delta(self) -> list[float]:
        return [round(value(name, **labels) - b, 9) for (name, labels), b in zip(self.series, self.before, strict=True)]


def run(stage: Any, inner: Callable[[Delivery], BaseModel], request: Any = None) -> None:
    task = SimpleNamespace(request=request or SimpleNamespace(retries=0))
    delivery = Delivery(spec=stage, payload={}, task=cast(Any, task), components=cast(Any, None))
    Metrics()(delivery, inner)


def raising(exc: BaseException) -> Callable[[Delivery], BaseModel]:
    def handler(d: Delivery) -> BaseModel:
        raise exc

    return handler


def requeued(d: Delivery) -> BaseModel:
    try:
        raise Requeue(2.0, "no slot")
    except Requeue as signal:
        raise Ignore() from signal


def guard_result(*checks: tuple[str, str]) -> GuardResult:
    return GuardResult(
        request=REQUEST, intent="question", intent_confidence=1.0, intent_method="hint",
        completion=Completion(text="x", provider="extractive", model="extractive", prompt_version="v1"),
        guard=GuardReport(verdict="pass", checks=[CheckResult(name=n, verdict=v) for n, v in checks]), output={},
    )


# --- the middleware ---------------------------------------------------------------------------
@pytest.mark.parametrize(("inner", "outcome", "error"), [
    (lambda d: REQUEST, "succeeded", None),
    (raising(Retry()), "retried", Retry),
    (requeued, "requeued", Ignore),
    (raising(Ignore()), "skipped", Ignore),
    (raising(InvalidInput("bad")), "dead_lettered", InvalidInput),
    (raising(RuntimeError("store away")), "error", RuntimeError),
])
def test_each_run_counts_its_outcome_and_duration(inner: Any, outcome: str, error: type[BaseException] | None) -> None:
    counts = Counts(("conveyor_jobs_total", {"stage": "intent", "outcome": outcome}),
                    ("conveyor_stage_duration_seconds_count", {"stage": "intent"}),
                    ("conveyor_retries_total", {"stage": "intent"}),
                    ("conveyor_dead_letters_total", {"stage": "intent", "failure_class": "invalid_input"}))
    if error is None:
        run(INTENT, inner)
    else:
        with pytest.raises(error):
            run(INTENT, inner)
    assert counts.delta() == [1, 1, int(outcome == "retried"), int(outcome == "dead_lettered")]


def test_queue_wait_runs_from_the_publish_or_the_end_of_the_countdown() -> None:
    now = time.time()
    eta = datetime.fromtimestamp(now - 1.0, UTC).isoformat()
    counts = Counts(("conveyor_queue_wait_seconds_count", {"stage": "record"}),
                    ("conveyor_queue_wait_seconds_sum", {"stage": "record"}))
    run(RECORD, lambda d: REQUEST, SimpleNamespace(retries=0, eta=None, conveyor_published_at=now - 30.0))
    count, total = counts.delta()
    assert count == 1 and 30.0 <= total < 60.0
    assert metrics.queue_wait_s(SimpleNamespace(conveyor_published_at=now - 30.0, eta=eta), now) == pytest.approx(1.0)
    assert metrics.queue_wait_s(SimpleNamespace(conveyor_published_at=now + 5.0, eta=None), now) == 0.0  # clock skew
    assert metrics.queue_wait_s(SimpleNamespace(eta=None), now) is None  # a producer that does not stamp
    counts = Counts(("conveyor_queue_wait_seconds_count", {"stage": "record"}))
    run(RECORD, lambda d: REQUEST)
    assert counts.delta() == [0]


def test_guard_verdicts_are_counted_by_check_when_passed_and_when_blocked() -> None:
    counts = Counts(("conveyor_guard_verdicts_total", {"check": "structure", "verdict": "pass"}),
                    ("conveyor_guard_verdicts_total", {"check": "pii", "verdict": "redacted"}),
                    ("conveyor_guard_verdicts_total", {"check": "leak", "verdict": "blocked"}),
                    ("conveyor_dead_letters_total", {"stage": "guard", "failure_class": "guardrail_blocked"}))
    run(GUARD, lambda d: guard_result(("structure", "pass"), ("pii", "redacted")))
    blocked = GuardReport(verdict="blocked", checks=[CheckResult(name="structure", verdict="pass"),
                                                      CheckResult(name="leak", verdict="blocked")])
    with pytest.raises(GuardrailBlocked):
        run(GUARD, raising(GuardrailBlocked("blocked", details={"guard": blocked.model_dump()})))
    assert counts.delta() == [2, 1, 1, 1]


def test_the_default_chain_has_metrics_outside_the_dead_letter_layer(tmp_path: Path) -> None:
    names = [type(m).__name__ for m in default_middleware(load_settings(data_dir=tmp_path))]
    assert names.index("Metrics") < names.index("DeadLetter") < names.index("StageRetry")


# --- the LLM provider layer ---------------------------------------------------------------------
@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def test_llm_calls_tokens_and_cost_are_counted_per_call_model_and_tenant(server: FakeOpenAIServer) -> None:
    observer = metrics.LLMMetrics(["fake-model"])
    prices = PriceTable({"fake-model": Price(1.0, 2.0)})
    counts = Counts(("conveyor_llm_calls_total", {"model": "fake-model", "status": "ok"}),
                    ("conveyor_llm_calls_total", {"model": "fake-model", "status": "provider_unavailable"}),
                    ("conveyor_llm_calls_total", {"model": "fake-model", "status": "cache_hit"}),
                    ("conveyor_llm_tokens_total", {"model": "fake-model", "kind": "prompt"}),
                    ("conveyor_llm_tokens_total", {"model": "fake-model", "kind": "completion"}),
                    ("conveyor_cost_usd_total", {"model": "fake-model", "tenant": "acme"}))
    server.script(["500", "ok"])
    with make_provider(server, observer=observer, price_table=prices, cache=MemoryResponseCache(ttl_s=60)) as provider:
        first = provider.complete(request("The rent is due monthly.", tenant="acme"))
        again = provider.complete(request("The rent is due monthly.", tenant="acme"))
    assert again.cached and again.calls == 0
    ok, failed, hits, prompt, completion, cost = counts.delta()
    assert (ok, failed, hits) == (1, 1, 1)
    assert (prompt, completion) == (first.prompt_tokens, first.completion_tokens)
    assert cost == pytest.approx(first.cost_usd)
    assert cost == pytest.approx((prompt * 1.0 + completion * 2.0) / 1e6)


def test_an_unconfigured_model_and_a_bad_tenant_get_fixed_labels() -> None:
    observer = metrics.LLMMetrics(["gpt-4o-mini"])
    counts = Counts(("conveyor_llm_calls_total", {"model": "other", "status": "ok"}),
                    ("conveyor_cost_usd_total", {"model": "other", "tenant": "unknown"}))
    observer.llm_call(model="summarize the NDA for jane@example.org", status="ok", tenant="jane doe",
                      prompt_tokens=1, completion_tokens=1, cost_usd=0.5)
    assert counts.delta() == [1, 0.5]
    exposed = generate_latest(metrics.REGISTRY).decode()
    assert "jane" not in exposed and "NDA" not in exposed


def test_rate_limit_waits_are_observed_per_call(server: FakeOpenAIServer) -> None:
    clock, sleep = FakeClock(), RecordingSleep()
    limiter = LocalRateLimiter(rpm=60, clock=clock, sleep=sleep)
    counts = Counts(("conveyor_ratelimit_wait_seconds_count", {}), ("conveyor_ratelimit_wait_seconds_sum", {}))
    with make_provider(server, observer=metrics.LLMMetrics([]), rate_limiter=limiter) as provider:
        provider.complete(request("One."))
        provider.complete(request("Two."))
    assert counts.delta() == [2, pytest.approx(1.0)]  # the second call waited its one-second slot


# --- publish time, scrape-time gauges, the exposition ----------------------------------------------
def test_every_published_stage_message_carries_its_publish_time(tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path))
    before = time.time()
    send_job(app, REQUEST.model_dump(mode="json"), start=INTENT.name)
    (message,) = drain_queue(app, INTENT.queue)
    assert before <= message.headers[metrics.PUBLISHED_AT] <= time.time()


def test_queue_depth_counts_every_priority_list_and_batches_their_counters(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    try:
        store.put_batch(BatchInfo(batch_id="live", source="docs/"))
        store.put_batch(BatchInfo(batch_id="old-done", source="x", created_at=datetime.now(UTC) - timedelta(days=3)))
        store.put_batch(BatchInfo(batch_id="old-open", source="y", created_at=datetime.now(UTC) - timedelta(days=3)))
        for batch_id, submitted, succeeded, failed in (("live", 5, 2, 1), ("old-done", 2, 2, 0), ("old-open", 3, 1, 0)):
            for field, n in (("submitted", submitted), ("succeeded", succeeded), ("failed", failed)):
                if n:
                    store.batch_incr(batch_id, field, n)
        sampled = SampledGauges("redis://127.0.0.1:1/0", lambda: store, queues=("llm", "guard"))
        sampled._redis = fakeredis.FakeRedis()
        sampled._redis.rpush("llm", b"a", b"b")
        sampled._redis.rpush("llm\x06\x163", b"c")
        sampled._redis.rpush("llm\x06\x169", b"d")
        assert sampled.queue_depths() == {"llm": 4, "guard": 0}
        assert sampled.batch_items() == {"live": {"succeeded": 2, "failed": 1, "pending": 2},
                                         "old-open": {"succeeded": 1, "failed": 0, "pending": 2}}
    finally:
        store.close()


def test_a_source_that_does_not_answer_leaves_its_gauge_empty_and_the_scrape_whole(tmp_path: Path) -> None:
    def no_store() -> Any:
        raise ConnectionError("state store away")

    sampled = SampledGauges("redis://127.0.0.1:1/0", no_store)
    families = {f.name: f for f in sampled.collect()}
    assert set(families) == {"conveyor_queue_depth", "conveyor_batch_items"}
    assert not families["conveyor_queue_depth"].samples and not families["conveyor_batch_items"].samples


def test_the_exposition_carries_exactly_the_spec(tmp_path: Path) -> None:
    """What the endpoint serves, after one value of each metric: names, types and labels = SPEC (the dashboard
    test in test_deploy_manifests.py reads SPEC, so dashboard and exporter cannot drift)."""
    metrics.stage_run("intent", "retried", 0.1, 0.2)
    metrics.dead_letter("intent", "timeout")
    metrics.guard_checks([("pii", "pass")])
    observer = metrics.LLMMetrics(["m"])
    observer.llm_call(model="m", status="ok", tenant="t", prompt_tokens=1, completion_tokens=1, cost_usd=0.1)
    observer.ratelimit_wait(0.0)
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    store.put_batch(BatchInfo(batch_id="b", source="s"))
    sampled = SampledGauges("redis://127.0.0.1:1/0", lambda: store, queues=("llm",))
    sampled._redis = fakeredis.FakeRedis()
    try:
        text = generate_latest(exporter_registry(sampled)).decode()
    finally:
        store.close()
    exposed: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):  # one process's creation times; the multiprocess endpoint has none
            continue
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        exposed[name] = (family.type, labels)
    assert exposed == metrics.exported_metrics()


# --- prefork: separate processes, one sum ----------------------------------------------------------
def test_children_of_a_forking_worker_are_summed_by_the_endpoint(tmp_path: Path) -> None:
    """prometheus_client picks multiprocess mode at import, so this runs in a fresh interpreter: the
    directory is set as `conveyor worker` sets it, two forked children count, the parent sums them."""
    script = textwrap.dedent("""
        import os, sys
        from workers.exporter import use_private_multiprocess_dir
        use_private_multiprocess_dir()
        from prometheus_client import generate_latest
        from workers import metrics
        from workers.exporter import SampledGauges, exporter_registry, forget_process
        metrics.stage_run("record", "succeeded", 0.01, None)              # the main process: 1
        pids = []
        for n in (2, 3):                                                  # two children: 2 + 3
            pid = os.fork()
            if pid == 0:
                for _ in range(n):
                    metrics.stage_run("record", "succeeded", 0.01, None)
                forget_process(None)
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        sampled = SampledGauges("", lambda: None, queues=())
        sys.stdout.write(generate_latest(exporter_registry(sampled)).decode())
    """)
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(out) for s in f.samples}
    assert samples[("conveyor_jobs_total", (("outcome", "succeeded"), ("stage", "record")))] == 6
    assert samples[("conveyor_stage_duration_seconds_count", (("stage", "record"),))] == 6


# --- the command ---------------------------------------------------------------------------------
def test_worker_refuses_metrics_when_prefork_children_could_not_be_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process prometheus_client is imported already (as a plugin importing it first would do):
    `conveyor worker --metrics-port` stops with a message instead of exporting the main process alone."""
    monkeypatch.setenv("CONVEYOR_BROKER_URL", "redis://127.0.0.1:1/0")
    result = CliRunner().invoke(main, ["worker", "-Q", "record", "--metrics-port", "9100"])
    assert result.exit_code == 1 and "imported before the metrics directory was set" in result.output
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    bad = CliRunner().invoke(main, ["worker", "--metrics-port", "0"])
    assert bad.exit_code == 2 and "--metrics-port" in bad.output


@pytest.mark.parametrize(("flag", "setting", "served"), [("9123", None, 9123), (None, "9200", 9200),
                                                         ("9123", "9200", 9123), (None, None, None)])
def test_worker_serves_metrics_on_the_flag_or_the_setting_port(monkeypatch: pytest.MonkeyPatch, flag: str | None,
                                                               setting: str | None, served: int | None) -> None:
    """The directory is set before the app is built, the endpoint started before Celery runs the worker."""
    import celery

    from workers import exporter

    calls: list[Any] = []
    monkeypatch.setenv("CONVEYOR_BROKER_URL", "redis://127.0.0.1:1/0")
    if setting:
        monkeypatch.setenv("CONVEYOR_METRICS_PORT", setting)
    monkeypatch.setattr(exporter, "use_private_multiprocess_dir", lambda: calls.append("dir"))
    monkeypatch.setattr(exporter, "serve", lambda app, port: calls.append(("serve", port)))
    monkeypatch.setattr(celery.Celery, "worker_main", lambda self, argv: calls.append("worker_main"))
    result = CliRunner().invoke(main, ["worker", "-Q", "record", *(["--metrics-port", flag] if flag else [])])
    assert result.exit_code == 0, result.output
    assert calls == (["dir", ("serve", served), "worker_main"] if served else ["worker_main"])
