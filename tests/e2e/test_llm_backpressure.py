"""Waiting for a rate-limit slot is queueing, not failure: jobs go back on the queue and all
finish, without spending the stage retry budget and without a single 429 upstream."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline.retrieval.ingest import ingest_paths
from pipeline.settings import load_settings
from schemas import JobRequest
from scripts.fake_openai_server import FakeOpenAIServer
from workers.cli import sample_contracts
from workers.embedded import EmbeddedRuntime

pytestmark = pytest.mark.e2e


def test_limiter_backpressure_requeues_jobs_instead_of_dead_lettering_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="conveyor.tasks")
    with FakeOpenAIServer() as server:
        settings = load_settings(
            data_dir=tmp_path,
            llm_base_url=server.url,
            llm_rpm=300,  # one call every 0.2 s
            llm_rate_limit_max_wait_s=0.01,  # nobody may wait in the limiter: every wait is a re-queue
            llm_max_attempts=1,
            stage_max_retries=0,  # any retry that spent the budget would dead-letter at once
            worker_concurrency=4,
        )
        with EmbeddedRuntime(settings) as rt:
            doc = sample_contracts()[0]
            ingest_paths([doc], tenant="t", store=rt.components.vector_store, embedder=rt.components.embedder)
            jobs = [rt.client.submit(JobRequest(text=f"What is the rent? ({i})", document_id=doc.stem, tenant="t",
                                                intent_hint="question", params={"use_cache": False}))
                    for i in range(8)]
            records = [rt.client.result(job_id, timeout=90) for job_id in jobs]
            letters = rt.components.state.list_dead_letters()
            assert letters == [], [(d.stage, d.failure_class, d.error_message) for d in letters]
        calls = server.requests_log
        chat = [r for r in calls if r["path"] == "/v1/chat/completions"]
        assert len(chat) == 8 and server.stats["http_429"] == 0
        assert all(r.llm_calls == 1 for r in records)
    requeued = [r for r in caplog.records if "re-queued" in r.getMessage()]
    assert requeued, "eight jobs on four threads at five calls a second must have waited for slots"
