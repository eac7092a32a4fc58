"""A contract longer than one prompt is summarised part by part, then combined (issue #11 item 3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pipeline.generation.llm.fallback import FallbackProvider
from pipeline.generation.llm_generator import LLMGenerator
from pipeline.generation.prompts import COMBINE_VERSION
from schemas import ContextChunk, Intent, JobRequest, RetrievalResult
from scripts.fake_openai_server import FakeOpenAIServer
from tests.llm_fixtures import ProviderFactory

SECTIONS = ["Parties", "Term", "Fees", "Liability", "Confidentiality", "Termination", "Governing law", "Notices"]


@pytest.fixture()
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(models=["fake-model"]) as fake:
        yield fake


@pytest.fixture()
def generator(server: FakeOpenAIServer) -> Iterator[Callable[[int], LLMGenerator]]:
    """``generator(budget)``: an LLM generator on the fake server with that context budget per prompt."""
    factory = ProviderFactory(server)

    def build(budget: int) -> LLMGenerator:
        provider = FallbackProvider([(factory(), "fake-model")])
        return LLMGenerator(provider, model="fake-model", max_tokens=300, temperature=0.0,
                            context_token_budget=budget)

    yield build
    factory.close()


def long_contract(sections: list[str] = SECTIONS) -> RetrievalResult:
    chunks = [
        ContextChunk(chunk_id=f"c{i}", doc_id="msa", section=f"{i + 1}. {name}",
                     text=f"{i + 1}. {name}\n" + " ".join(f"The {name.lower()} clause, sentence {n}, binds both "
                                                          "parties as written." for n in range(12)))
        for i, name in enumerate(sections)
    ]
    request = JobRequest(job_id="j-long", text="Summarize this contract.", document_id="msa")
    return RetrievalResult(request=request, intent=Intent.summarize, intent_confidence=1.0, intent_method="hint",
                           chunks=chunks, retrieval_strategy="whole-document", document_chunks=len(chunks))


def test_a_document_longer_than_one_prompt_is_read_part_by_part_then_combined(
    server: FakeOpenAIServer, generator: Callable[[int], LLMGenerator]
) -> None:
    msg = long_contract()
    completion = generator(400).generate(msg)
    prompts = [next(m["content"] for m in messages if m["role"] == "user") for messages in server.chat_messages]
    parts, combine = prompts[:-1], prompts[-1]
    assert len(parts) >= 3 and completion.llm_calls == len(prompts)
    # every chunk went to exactly one part, in document order
    seen = [chunk_id for prompt in parts for chunk_id in
            [c.chunk_id for c in msg.chunks if f"[chunk:{c.chunk_id}]" in prompt]]
    assert seen == [c.chunk_id for c in msg.chunks]
    assert all(f"part {i} of {len(parts)}" in prompt for i, prompt in enumerate(parts, 1))
    assert all(f"Part {i} of {len(parts)}" in combine for i in range(1, len(parts) + 1))
    assert completion.chunks_read == [c.chunk_id for c in msg.chunks]
    assert completion.prompt_version == f"summarize/v2+{COMBINE_VERSION}"
    assert completion.structured is not None and set(completion.structured["citations"]) <= set(completion.chunks_read)
    assert completion.usage.prompt_tokens > sum(len(p) // 8 for p in prompts)  # every call's tokens are counted


def test_a_document_that_fits_is_one_call_and_questions_are_never_mapped(
    server: FakeOpenAIServer, generator: Callable[[int], LLMGenerator]
) -> None:
    short = long_contract(SECTIONS[:2])
    completion = generator(4000).generate(short)
    assert completion.llm_calls == 1 and completion.prompt_version == "summarize/v2"
    assert completion.chunks_read == ["c0", "c1"]
    question = long_contract().model_copy(update={"intent": Intent.question})
    answered = generator(400).generate(question)
    assert answered.llm_calls == 1, "a question gets the top of its ranked chunks, not a map over them"
    assert answered.chunks_read and len(answered.chunks_read) < len(question.chunks)


def test_a_part_that_never_validates_is_left_out_and_named(
    server: FakeOpenAIServer, generator: Callable[[int], LLMGenerator]
) -> None:
    msg = long_contract()
    server.script(["bad_json", "bad_json"])  # part 1's answer and its one repair
    completion = generator(400).generate(msg)
    assert completion.structured is not None
    assert any(reason.startswith("part 1:") for reason in completion.repair_reasons)
    combine = next(m["content"] for m in server.chat_messages[-1] if m["role"] == "user")
    assert "Part 1 of" in combine and "[chunk:c0]" not in combine
