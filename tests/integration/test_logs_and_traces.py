"""JSON logs and one trace per job, from real `conveyor worker` processes.

A threads worker (ingest, intent, retrieve) and a prefork worker of two children (llm, guard, record,
the fake LLM over HTTP) run with ``CONVEYOR_LOG_FORMAT=json`` and ``CONVEYOR_OTEL_FILE``; after three
jobs, every line the workers wrote is a JSON log record (the stage lines with the job's ids and
tenant), the span file holds one trace per job whose spans cover its five stages and come from more
than one process, and neither holds the request's text.

Workers are started by the chaos suite's harness (``scripts/chaos.py``: ``Cluster``) against the
tests' Redis."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts import chaos
from scripts.fake_openai_server import FakeOpenAIServer
from workers.cli import sample_contracts
from workers.runtime import release_components

pytestmark = pytest.mark.integration

pytest.importorskip("opentelemetry.instrumentation.celery", reason="the tracing extra (in .[dev]) is not installed")

JOBS = 3
BATCH = "trace-batch"
STAGES = ("intent", "retrieve", "generate", "guard", "record")
#: the words of every request ``chaos.submit_batch`` sends: never in a log line or a span
REQUEST_TEXT = "What does this contract say about payment?"
WORKERS = (chaos.WorkerSpec("front", "ingest,intent,retrieve", "threads", 2),
           chaos.WorkerSpec("back", "llm,guard,record", "prefork", 2))


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[chaos.Cluster]:
    env = {
        "CONVEYOR_GUARD_POLICY": '{"grounding": "flag"}',  # the fake model quotes chunk headers
        "CONVEYOR_LOG_FORMAT": "json",
        "CONVEYOR_OTEL_FILE": str(tmp_path / "spans.jsonl"),
    }
    with FakeOpenAIServer(latency_s=0.2) as llm:
        cluster = chaos.Cluster(redis_url, redis_url, tmp_path / "data", llm, extra_env=env)
        cluster.data_dir.mkdir()
        try:
            cluster.ingest(sample_contracts()[:2])
            for spec in WORKERS:
                cluster.start(spec)
            cluster.wait_ready()
            yield cluster
        finally:
            cluster.stop_all()


def read_spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def runs_by_job(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The stage task runs (the spans Conveyor put its ids on), by job."""
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        job_id = span["attributes"].get("conveyor.job_id")
        if job_id:
            runs[job_id].append(span)
    return runs


def test_json_logs_and_one_trace_per_job_across_processes(cluster: chaos.Cluster, tmp_path: Path) -> None:
    client = cluster.client()
    try:
        from schemas.batch import BatchInfo

        client.state.put_batch(BatchInfo(batch_id=BATCH, source="test"))
        job_ids = chaos.submit_batch(client, [p.stem for p in sample_contracts()[:2]], JOBS, BATCH)
        outcome, _ = chaos.settle(client, job_ids, timeout=90)
        assert outcome == {job_id: "record" for job_id in job_ids}, cluster.tail()
    finally:
        release_components(client.app)

    # a stage's span ends just after its output is stored: wait for the last ones to be written
    span_file = tmp_path / "spans.jsonl"
    deadline = time.monotonic() + 30
    while True:
        runs = runs_by_job(read_spans(span_file))
        complete = all({s["attributes"]["conveyor.stage"] for s in runs[j]} >= set(STAGES) for j in job_ids)
        if complete or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    logs = {name: w.log_path.read_text() for name, w in cluster.workers.items()}  # before the shutdown notices

    check_logs(logs, job_ids)
    check_traces(read_spans(span_file), job_ids)
    everything = "\n".join(logs.values()) + span_file.read_text()
    assert REQUEST_TEXT not in everything, "request text never reaches a log line or a span"
    assert "query_embedding" not in everything and "succeeded in" not in everything


def check_logs(logs: dict[str, str], job_ids: list[str]) -> None:
    """Every line is a JSON log record; every stage's "done" line names its job, stage, batch and tenant."""
    records = []
    for name, text in logs.items():
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"not a JSON line in the {name} worker's output: {line!r}")
            assert isinstance(record, dict) and {"ts", "level", "logger", "message"} <= record.keys(), line
            records.append(record)
    assert any(r["message"].endswith(" ready.") for r in records)
    done = [r for r in records if r["message"].startswith("done in ")]
    for stage in STAGES:
        lines = [r for r in done if r.get("stage") == stage and r.get("job_id") in job_ids]
        assert {r["job_id"] for r in lines} == set(job_ids), stage
        assert all(r["batch_id"] == BATCH and r["tenant"] == chaos.TENANT for r in lines), lines
    # ids only where a stage runs: a worker's own lines carry none
    assert all("job_id" not in r for r in records if r["message"].endswith(" ready."))


def check_traces(spans: list[dict[str, Any]], job_ids: list[str]) -> None:
    """Per job: one trace id shared by its five stage runs (and the publishes and HTTP calls between them),
    written by more than one process, with ids only in the attributes."""
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        by_trace[span["context"]["trace_id"]].append(span)
    runs = runs_by_job(spans)
    for job_id in job_ids:
        traces = {s["context"]["trace_id"] for s in runs[job_id]}
        assert len(traces) == 1, (job_id, traces)
        trace = by_trace[traces.pop()]
        assert {s["attributes"].get("conveyor.stage") for s in trace} >= set(STAGES), job_id
        assert {s["attributes"].get("conveyor.job_id") for s in trace} <= {job_id, None}, "one job per trace"
        assert all(s["attributes"].get("conveyor.batch_id") == BATCH for s in runs[job_id])
        assert len({s["resource"]["attributes"]["process.pid"] for s in trace}) > 1, job_id
        services = {s["resource"]["attributes"]["service.name"] for s in trace}
        assert services == {"conveyor-ingest-intent-retrieve", "conveyor-llm-guard-record"}
        # the hops are linked: every span but the first stage's run has its parent in the trace
        ids = {s["context"]["span_id"] for s in trace}
        roots = [s for s in trace if s["parent_id"] not in ids]
        assert [r["name"] for r in roots] == ["run/conveyor.intent"], roots
        publishes = [s for s in trace if s["name"].startswith("apply_async/")]
        assert len(publishes) >= len(STAGES) - 1, job_id
        assert any(s["kind"] == "SpanKind.CLIENT" and "/v1/chat/completions" in str(s["attributes"])
                   for s in trace), "the LLM call is in the job's trace"
    for span in spans:
        for event in span["events"]:
            assert set(event["attributes"]) <= {"exception.type"}, event
        assert not span["status"].get("description"), span
