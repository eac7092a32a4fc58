"""Helpers shared by the LLM-layer tests (plain functions, imported explicitly)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from pipeline.generation.llm.base import ChatMessage, LLMRequest
from pipeline.generation.llm.openai_compat import OpenAICompatProvider
from scripts.fake_openai_server import FakeOpenAIServer

#: looks like a real key so a leak would be obvious in any log or message.
TEST_API_KEY = "sk-test-CONVEYOR-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


class RecordingSleep:
    """Stands in for time.sleep: records the waits asked for, sleeps for none of them."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class FakeClock:
    """A clock that only moves when told to (or when the recorded sleep says so)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def request(text: str = "Summarise this. It is short.", **kwargs: Any) -> LLMRequest:
    return LLMRequest(messages=(ChatMessage(role="user", content=text),), **kwargs)


def make_provider(server: FakeOpenAIServer, **kwargs: Any) -> OpenAICompatProvider:
    """A provider pointed at ``server`` with fast, deterministic retry settings."""
    options: dict[str, Any] = {
        "api_key": SecretStr(TEST_API_KEY),
        "default_model": "fake-model",
        "timeout_s": 5.0,
        "max_attempts": 3,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "sleep": RecordingSleep(),
        "rng": lambda: 0.5,
    }
    options.update(kwargs)
    return OpenAICompatProvider(server.url, **options)


class ProviderFactory:
    """Builds providers for one test and closes them all at teardown, pass or fail."""

    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server
        self.made: list[OpenAICompatProvider] = []

    def __call__(self, **kwargs: Any) -> OpenAICompatProvider:
        provider = make_provider(self.server, **kwargs)
        self.made.append(provider)
        return provider

    def close(self) -> None:
        for provider in self.made:
            provider.close()


@contextmanager
def llm_runtime(data_dir: Path, **settings: Any) -> Iterator[tuple[Any, FakeOpenAIServer, str]]:
    """``(runtime, server, doc_id)``: an embedded runtime whose generator is the fake server over HTTP,
    with the first sample contract ingested for tenant ``t``; ``settings`` override the defaults."""
    from pipeline.retrieval.ingest import ingest_paths
    from pipeline.settings import load_settings
    from workers.cli import sample_contracts
    from workers.embedded import EmbeddedRuntime

    with (
        FakeOpenAIServer() as server,
        EmbeddedRuntime(load_settings(data_dir=data_dir, llm_base_url=server.url, **settings)) as rt,
    ):
        doc = sample_contracts()[0]
        ingest_paths([doc], tenant="t", store=rt.components.vector_store, embedder=rt.components.embedder)
        yield rt, server, doc.stem
