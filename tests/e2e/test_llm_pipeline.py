"""The generate stage against a real HTTP LLM: the fake OpenAI-compatible server over loopback.

A real in-process Celery worker (embedded runtime) runs the whole chain; faults are scripted on
the server, so every retry, repair, fallback and dead letter goes through httpx, the provider,
the Celery retry path and the dead-letter store for real.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from schemas import JobRequest
from scripts.fake_openai_server import FakeOpenAIServer
from tests.llm_fixtures import llm_runtime
from workers.client import JobFailed

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with llm_runtime(
        tmp_path_factory.mktemp("llm"),
        llm_model="gpt-4o-mini",
        llm_fallback_models=["gpt-4.1-mini"],
        llm_backoff_base_s=0.01,
        llm_backoff_max_s=0.02,
        stage_max_retries=1,
        retry_backoff_base_s=0.01,
        retry_backoff_max_s=0.05,
    ) as (rt, server, doc_id):
        yield {"rt": rt, "server": server, "doc": doc_id}


def _job(env: dict[str, Any], text: str = "Summarize this contract.", **params: Any) -> str:
    request = JobRequest(text=text, document_id=env["doc"], tenant="t", intent_hint="summarize",
                         params={"use_cache": False, **params})
    job_id: str = env["rt"].client.submit(request)
    return job_id


def _chat_calls(server: FakeOpenAIServer) -> int:
    return len(server.chat_models())


def test_summary_from_the_llm_is_structured_costed_and_versioned(env: dict[str, Any]) -> None:
    record = env["rt"].client.result(_job(env), timeout=60)
    assert record.provider == "openai-compatible" and record.model == "gpt-4o-mini"
    assert record.prompt_version == "summarize/v2"
    assert record.llm_calls == 1 and not record.cached
    assert record.usage.prompt_tokens > 100 and record.usage.completion_tokens > 0
    assert record.cost_usd > 0
    assert set(record.output["citations"]) <= set(record.chunks_used)
    assert record.guard.verdict in {"pass", "repaired", "redacted"}


def test_repeated_job_is_served_from_the_cache_without_an_upstream_call(env: dict[str, Any]) -> None:
    server = env["server"]
    text = f"Summarize this contract for review {uuid.uuid4().hex[:6]}."
    first = env["rt"].client.result(_job(env, text, use_cache=True), timeout=60)
    before = _chat_calls(server)
    second = env["rt"].client.result(_job(env, text, use_cache=True), timeout=60)
    assert _chat_calls(server) == before
    assert second.cached and second.llm_calls == 0 and second.cost_usd == 0
    assert second.output == first.output and second.job_id != first.job_id


def test_transient_errors_are_retried_within_the_call(env: dict[str, Any]) -> None:
    env["server"].script(["500", "429:retry_after_ms=10", "ok"])
    record = env["rt"].client.result(_job(env), timeout=60)
    assert record.llm_calls == 3


def test_provider_down_exhausts_both_retry_layers_then_dead_letters(env: dict[str, Any]) -> None:
    server = env["server"]
    attempts_per_call, models, stage_runs = 3, 2, 2  # llm_max_attempts, 1 + fallbacks, stage_max_retries + 1
    budget = attempts_per_call * models * stage_runs
    server.script(["503"] * budget)
    before = _chat_calls(server)
    with pytest.raises(JobFailed) as failed:
        env["rt"].client.result(_job(env), timeout=60)
    letter = failed.value.dead_letter
    assert letter is not None
    assert (letter.stage, letter.failure_class, letter.retries_exhausted) == ("generate", "provider_unavailable", True)
    assert letter.attempts == stage_runs
    assert _chat_calls(server) - before == budget, "total upstream calls per job is bounded by the retry budget"


def test_invalid_json_is_repaired_once_and_the_verdict_says_so(env: dict[str, Any]) -> None:
    env["server"].script(["bad_json", "ok"])
    record = env["rt"].client.result(_job(env), timeout=60)
    assert record.llm_calls == 2
    structure = next(c for c in record.guard.checks if c.name == "structure")
    assert structure.verdict == "repaired" and "not valid JSON" in structure.reasons[0]


def test_output_that_stays_invalid_after_the_repair_is_dead_lettered(env: dict[str, Any]) -> None:
    env["server"].script(["bad_schema", "bad_schema"])
    with pytest.raises(JobFailed) as failed:
        env["rt"].client.result(_job(env), timeout=60)
    letter = failed.value.dead_letter
    assert letter is not None and (letter.stage, letter.failure_class) == ("guard", "output_invalid")


def test_truncated_completion_is_never_a_success(env: dict[str, Any]) -> None:
    env["server"].script(["length"])
    with pytest.raises(JobFailed) as failed:
        env["rt"].client.result(_job(env), timeout=60)
    letter = failed.value.dead_letter
    assert letter is not None and letter.failure_class == "output_invalid"
    assert "truncated" in letter.error_message


def test_refusal_is_a_permanent_provider_rejection(env: dict[str, Any]) -> None:
    env["server"].script(["refusal"])
    with pytest.raises(JobFailed) as failed:
        env["rt"].client.result(_job(env), timeout=60)
    letter = failed.value.dead_letter
    assert letter is not None and (letter.stage, letter.failure_class) == ("generate", "provider_rejected")
    assert letter.attempts == 1


def test_context_overflow_falls_back_to_the_next_model(env: dict[str, Any]) -> None:
    env["server"].script(["context_overflow", "ok"])
    record = env["rt"].client.result(_job(env), timeout=60)
    assert record.model == "gpt-4.1-mini" and record.llm_calls == 2


def test_the_record_counts_the_calls_of_failed_stage_attempts_too(env: dict[str, Any]) -> None:
    """Attempt 1: three calls to each of the two models fail (503); the stage retries; attempt 2
    succeeds with one call. All seven upstream calls are on the record, not only the last one."""
    server = env["server"]
    server.script(["503"] * 6 + ["ok"])
    before = _chat_calls(server)
    record = env["rt"].client.result(_job(env), timeout=60)
    assert _chat_calls(server) - before == 7
    assert record.llm_calls == 7
    assert env["rt"].components.state.take_usage(record.job_id) == {}, "handed over once"


def test_a_contract_longer_than_one_prompt_is_summarised_from_all_of_its_parts(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Through the real chain with a small prompt budget: one call per part, one to combine, and the record
    says the summary read the whole document (coverage 1.0, every chunk in chunks_used)."""
    # the fake model's combination echoes its prompt (the parts' JSON), which grounding rightly refuses: flag it
    with llm_runtime(tmp_path_factory.mktemp("long"), llm_model="gpt-4o-mini", context_token_budget=900,
                     guard_policy={"grounding": "flag"}) as (rt, server, doc_id):
        request = JobRequest(text="Summarize this contract.", document_id=doc_id, tenant="t",
                             intent_hint="summarize", params={"use_cache": False})
        record = rt.client.result(rt.client.submit(request), timeout=60)
        stored = rt.components.vector_store.document_chunks("t", doc_id)
    assert record.prompt_version == "summarize/v2+combine/v1"
    assert record.llm_calls == len(server.chat_models()) >= 4  # three parts or more, then the combination
    assert record.coverage == 1.0 and set(record.chunks_used) == {hit.chunk_id for hit in stored}
    assert record.usage.prompt_tokens > 3000  # the whole contract was read, part by part
    assert set(record.output["citations"]) <= set(record.chunks_used)
