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


def test_a_refused_slot_is_one_requeue_with_the_default_retry_layers_and_a_fallback_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Defaults (llm_max_attempts=3, stage_max_retries=4) plus a fallback model: a job refused a
    slot is re-queued once, never retried in-process, never moved to the fallback model, and
    spends none of its stage retries."""
    caplog.set_level(logging.INFO)
    with FakeOpenAIServer() as server:
        settings = load_settings(
            data_dir=tmp_path,
            llm_base_url=server.url,
            llm_model="gpt-4o-mini",
            llm_fallback_models=["gpt-4.1-mini"],
            llm_rpm=12,  # one slot every 5 s: the second job must wait far longer than it may
            llm_rate_limit_max_wait_s=0.5,
            worker_concurrency=2,
        )
        assert (settings.llm_max_attempts, settings.stage_max_retries) == (3, 4)
        with EmbeddedRuntime(settings) as rt:
            doc = sample_contracts()[0]
            ingest_paths([doc], tenant="t", store=rt.components.vector_store, embedder=rt.components.embedder)
            jobs = [rt.client.submit(JobRequest(text=f"What is the rent? ({i})", document_id=doc.stem, tenant="t",
                                                intent_hint="question", params={"use_cache": False}))
                    for i in range(2)]
            records = [rt.client.result(job_id, timeout=60) for job_id in jobs]
            assert rt.components.state.list_dead_letters() == []
        assert server.chat_models() == ["gpt-4o-mini", "gpt-4o-mini"], "no fallback hop, no extra call"
    messages = [(r.name, r.getMessage(), getattr(r, "job_id", "-")) for r in caplog.records]
    requeues = [m for m in messages if m[1].startswith("re-queued in")]
    assert len(requeues) == 1, requeues
    assert requeues[0][2] in jobs, "the re-queue is logged with the job's id"
    assert not [m for m in messages if "retrying in" in m[1]], "no in-process retry of a refused slot"
    assert not [m for m in messages if "falling back" in m[1]]
    assert not [m for m in messages if m[1].startswith("retry ")], "the stage's retry budget is untouched"
    assert all(r.llm_calls == 1 for r in records)
