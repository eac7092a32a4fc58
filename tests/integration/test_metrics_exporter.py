"""Real `conveyor worker` processes serve Prometheus metrics: a threads worker (ingest, intent, retrieve)
and a prefork worker of two children (llm, guard, record, with the fake LLM over HTTP) run a few jobs,
and their endpoints say what happened. The prefork children count separately; the endpoint sums them.

Workers are started by the chaos suite's harness (``scripts/chaos.py``: ``Cluster``) against the tests'
Redis; each gets its port through ``CONVEYOR_METRICS_PORT`` (the flag's wiring is a unit test)."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas import QUEUES
from schemas.batch import BatchInfo
from schemas.stages import JobRecord
from scripts import chaos
from scripts.fake_openai_server import FakeOpenAIServer
from workers.cli import sample_contracts
from workers.runtime import release_components

pytestmark = pytest.mark.integration

JOBS = 8
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text)
            for s in f.samples}


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape_until(port: int, ready: Callable[[Samples], bool], timeout: float = 30) -> Samples:
    """A stage's metrics are recorded just after its output is stored: wait for them, then read."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


WORKERS = (chaos.WorkerSpec("front", "ingest,intent,retrieve", "threads", 2),
           chaos.WorkerSpec("back", "llm,guard,record", "prefork", 2))


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[tuple[chaos.Cluster, dict[str, int]]]:
    """The two workers up, each with its metrics port (name -> port)."""
    grounding = {"CONVEYOR_GUARD_POLICY": '{"grounding": "flag"}'}  # the fake model quotes chunk headers
    with FakeOpenAIServer(latency_s=0.3) as llm:  # slow enough that both prefork children take calls
        cluster = chaos.Cluster(redis_url, redis_url, tmp_path / "data", llm, extra_env=grounding)
        cluster.data_dir.mkdir()
        ports = {spec.name: chaos.free_port() for spec in WORKERS}
        try:
            cluster.ingest(sample_contracts()[:2])
            for spec in WORKERS:  # the environment is read when a worker starts
                cluster.extra_env["CONVEYOR_METRICS_PORT"] = str(ports[spec.name])
                cluster.start(spec)
            cluster.wait_ready()
            yield cluster, ports
        finally:
            cluster.stop_all()


def test_prefork_and_threads_workers_export_what_their_jobs_did(cluster: tuple[chaos.Cluster, dict[str, int]]
                                                                ) -> None:
    workers, ports = cluster
    client = workers.client()
    try:
        check_exports(workers, client, ports["front"], ports["back"])
    finally:
        release_components(client.app)


def check_exports(cluster: chaos.Cluster, client: Any, front: int, back: int) -> None:
    client.state.put_batch(BatchInfo(batch_id="metrics-batch", source="test"))
    docs = [p.stem for p in sample_contracts()[:2]]
    job_ids = chaos.submit_batch(client, docs, JOBS, "metrics-batch")
    outcome, _ = chaos.settle(client, job_ids, timeout=120)
    assert outcome == {job_id: "record" for job_id in job_ids}, cluster.tail()
    records = [r for r in (client.state.get_record(j) for j in job_ids) if isinstance(r, JobRecord)]

    samples = scrape_until(back, lambda s: get(s, "conveyor_jobs_total", stage="record", outcome="succeeded") >= JOBS)
    for stage in ("generate", "guard", "record"):
        assert get(samples, "conveyor_jobs_total", stage=stage, outcome="succeeded") == JOBS, stage
        assert get(samples, "conveyor_stage_duration_seconds_count", stage=stage) == JOBS, stage
        assert get(samples, "conveyor_queue_wait_seconds_count", stage=stage) == JOBS, stage  # header on every hop
    upstream = [r for r in cluster.llm.requests_log if r["path"] == "/v1/chat/completions"]
    assert get(samples, "conveyor_llm_calls_total", model="gpt-4o-mini", status="ok") == len(upstream) == JOBS
    for kind, field in (("prompt", "prompt_tokens"), ("completion", "completion_tokens")):
        billed = sum(getattr(r.usage, field) for r in records)
        assert get(samples, "conveyor_llm_tokens_total", model="gpt-4o-mini", kind=kind) == billed > 0
    cost = get(samples, "conveyor_cost_usd_total", model="gpt-4o-mini", tenant=chaos.TENANT)
    assert cost == pytest.approx(sum(r.cost_usd or 0.0 for r in records))
    verdicts = Counter((c.name, c.verdict) for r in records for c in r.guard.checks)
    assert {k: get(samples, "conveyor_guard_verdicts_total", check=k[0], verdict=k[1]) for k in verdicts} == verdicts

    # the two children each ran jobs, so the totals above are sums over processes
    log = cluster.workers["back"].log_path.read_text()
    children = set(re.findall(r"/(ForkPoolWorker-\d+)\] done in [0-9.]+ ms \[job_id=\S+ stage=generate ", log))
    assert len(children) == 2, children

    samples = scrape_until(front, lambda s: get(s, "conveyor_jobs_total", stage="retrieve", outcome="succeeded")
                           >= JOBS)
    for stage in ("intent", "retrieve"):
        assert get(samples, "conveyor_jobs_total", stage=stage, outcome="succeeded") == JOBS, stage
        assert get(samples, "conveyor_queue_wait_seconds_count", stage=stage) == JOBS, stage
    assert {q for (name, labels) in samples if name == "conveyor_queue_depth" for _, q in labels} == set(QUEUES)
    assert all(v == 0 for (name, _), v in samples.items() if name == "conveyor_queue_depth")
    assert {state: get(samples, "conveyor_batch_items", batch_id="metrics-batch", state=state)
            for state in ("succeeded", "failed", "pending")} == {"succeeded": JOBS, "failed": 0, "pending": 0}
