"""The composition root: the one place that reads ``Settings`` and builds components and stages.

Everything below it (stages, stores, providers) receives what it uses and never sees
``Settings``; this module imports downward only. Nothing connects at import: each
component is built on first use, once per ``Components`` (one per worker process, after
any fork), under a lock so a threads pool does not build a client twice. A worker that
serves only the ``llm`` queue with an LLM configured never loads the embedding model.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pipeline.guard.policy import TenantPolicies
from pipeline.settings import Settings
from pipeline.state import redis_client
from schemas import StageSpec
from schemas.pipeline import GENERATE, GUARD, INGEST, INTENT, RECORD, RETRIEVE, stages_for_queues

if TYPE_CHECKING:
    from pipeline.generation.llm.base import CallObserver
    from pipeline.generation.stage import Generator
    from pipeline.intent.classifier import IntentClassifier
    from pipeline.retrieval.embeddings import Embedder
    from pipeline.retrieval.vectorstore import QdrantVectorStore
    from pipeline.state import StateStore

T = TypeVar("T")


class Stage(Protocol):
    """A stage: a callable from its input model to its output model, with a ``warm_up``."""

    def __call__(self, msg: Any, /) -> Any: ...

    def warm_up(self) -> None: ...


class Components:
    """The clients and stages of one process, built lazily from one ``Settings``.

    ``observer`` hears of every LLM call and rate-limit wait (the worker's metrics); None = nobody.
    """

    def __init__(self, settings: Settings, observer: CallObserver | None = None) -> None:
        self.settings = settings
        self.observer = observer
        self._lock = threading.RLock()
        self._built: dict[str, Any] = {}
        self._stage_builders: dict[StageSpec, Callable[[], Stage]] = {
            INGEST: self._ingest_stage,
            INTENT: self._intent_stage,
            RETRIEVE: self._retrieve_stage,
            GENERATE: self._generate_stage,
            GUARD: self._guard_stage,
            RECORD: self._record_stage,
        }

    def _once(self, name: str, build: Callable[[], T]) -> T:
        if name not in self._built:
            with self._lock:
                if name not in self._built:
                    self._built[name] = build()
        value: T = self._built[name]
        return value

    # --- stages ---------------------------------------------------------------------------
    def stage(self, spec: StageSpec) -> Stage:
        """The callable that runs ``spec`` in this process."""
        return self._once(f"stage:{spec.name}", self._stage_builders[spec])

    def warm_up(self, queues: Iterable[str]) -> list[str]:
        """Build and warm the stages of ``queues`` now, so a worker's first job is not slow.

        Returns the stages warmed. Called once per worker process, after any fork.
        """
        warmed = []
        for spec in stages_for_queues(tuple(queues)):
            self.stage(spec).warm_up()
            warmed.append(spec.name)
        if warmed:
            self.state.ping()
        return warmed

    @property
    def policies(self) -> TenantPolicies:
        s = self.settings
        return self._once("policies", lambda: TenantPolicies(s.guard_policy, dict(s.guard_tenant_policies)))

    def count_tokens(self) -> Callable[[str], int]:
        from pipeline.generation.llm.tokens import count_tokens

        return functools.partial(count_tokens, model=self.settings.llm_model)

    def _ingest_stage(self) -> Stage:
        from pipeline.guard.screening import screen
        from pipeline.retrieval.ingest_stage import IngestStage

        s = self.settings
        return IngestStage(self.state, self.vector_store, self.embedder, max_tokens=s.chunk_max_tokens,
                           overlap=s.chunk_overlap_tokens, screen=screen if s.screen_at_ingest else None)

    def _intent_stage(self) -> Stage:
        from pipeline.intent.stage import IntentStage

        return IntentStage(self.embedder, self.intent_classifier, self.policies)

    def _retrieve_stage(self) -> Stage:
        from pipeline.retrieval.stage import RetrieveStage

        s = self.settings
        return RetrieveStage(
            self.vector_store,
            top_k=s.retrieve_top_k,
            score_threshold=s.retrieve_score_threshold,
            token_budget=s.context_token_budget,
            max_document_chunks=s.summary_max_chunks,
            count_tokens=self.count_tokens(),
            policies=self.policies,
        )

    def _generate_stage(self) -> Stage:
        from pipeline.generation.stage import GenerateStage

        return GenerateStage(self.generator)

    def _guard_stage(self) -> Stage:
        from pipeline.generation.prompts import system_prompts
        from pipeline.guard.stage import GuardStage

        return GuardStage(self.policies, secrets=self.settings.secret_values(), system_prompts=system_prompts())

    def _record_stage(self) -> Stage:
        from pipeline.record import RecordStage

        return RecordStage(self.state, self.settings.records_path)

    # --- state ----------------------------------------------------------------------------
    @property
    def state(self) -> StateStore:
        from pipeline.state import open_state_store

        return self._once("state", lambda: open_state_store(self.settings))

    @property
    def redis(self) -> Any | None:
        """A Redis client for the shared rate limiter and response cache; None in embedded mode."""

        def build() -> Any | None:
            url = self.settings.store_url
            return redis_client(url, retry_s=self.settings.redis_retry_s) if url else None

        return self._once("redis", build)

    # --- embeddings, vectors, intent ------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        def build() -> Embedder:
            from pipeline.retrieval.embeddings import build_embedder

            s = self.settings
            if s.embedding_provider == "openai":
                return build_embedder(
                    "openai",
                    base_url=s.embedding_url,
                    api_key=s.embedding_api_key,
                    model=s.embedding_model,
                    dim=s.embedding_dim,
                )
            return build_embedder("onnx")

        return self._once("embedder", build)

    @property
    def vector_store(self) -> QdrantVectorStore:
        def build() -> QdrantVectorStore:
            from pipeline.retrieval.vectorstore import QdrantVectorStore, open_qdrant

            s = self.settings
            if s.qdrant_url:
                client = open_qdrant(url=s.qdrant_url, api_key=s.qdrant_api_key)
            else:
                path = Path(s.data_dir) / "qdrant"
                path.mkdir(parents=True, exist_ok=True)
                client = open_qdrant(path=str(path))
            store = QdrantVectorStore(client, s.qdrant_collection, self.embedder.dim)
            store.ensure_collection()
            return store

        return self._once("vector_store", build)

    @property
    def intent_classifier(self) -> IntentClassifier:
        def build() -> IntentClassifier:
            from pipeline.intent.classifier import IntentClassifier

            return IntentClassifier(self.embedder, threshold=self.settings.intent_threshold)

        return self._once("intent_classifier", build)

    # --- generation -----------------------------------------------------------------------
    @property
    def generator(self) -> Generator:
        """An LLM when ``CONVEYOR_LLM_BASE_URL`` is set, else the honest extractive default."""

        def build() -> Generator:
            if self.settings.llm_base_url:
                return self._llm_generator()
            from pipeline.generation.extractive import ExtractiveGenerator

            return ExtractiveGenerator(self.embedder)

        return self._once("generator", build)

    def _llm_generator(self) -> Generator:
        """Provider, shared rate limiter (Redis when there is one), cache and fallbacks."""
        from pipeline.generation.llm.cache import MemoryResponseCache, ResponseCache
        from pipeline.generation.llm.fallback import FallbackProvider
        from pipeline.generation.llm.openai_compat import OpenAICompatProvider
        from pipeline.generation.llm.pricing import Price, PriceTable
        from pipeline.generation.llm.ratelimit import LocalRateLimiter, SharedRateLimiter
        from pipeline.generation.llm_generator import LLMGenerator

        s = self.settings
        assert s.llm_base_url is not None
        redis_client = self.redis
        limiter: Any = None
        if s.llm_rpm or s.llm_tpm:
            if redis_client is not None:
                limiter = SharedRateLimiter(
                    redis_client,
                    f"conveyor:ratelimit:{s.llm_base_url}",
                    s.llm_rpm,
                    s.llm_tpm,
                    max_wait_s=s.llm_rate_limit_max_wait_s,
                )
            else:
                limiter = LocalRateLimiter(s.llm_rpm, s.llm_tpm, max_wait_s=s.llm_rate_limit_max_wait_s)
        cache: Any = None
        if s.llm_cache_ttl_s > 0:
            cache = (
                ResponseCache(redis_client, ttl_s=s.llm_cache_ttl_s)
                if redis_client is not None
                else MemoryResponseCache(ttl_s=s.llm_cache_ttl_s)
            )
        primary = OpenAICompatProvider(
            s.llm_base_url,
            s.llm_api_key,
            default_model=s.llm_model,
            timeout_s=s.llm_timeout_s,
            max_attempts=s.llm_max_attempts,
            backoff_base_s=s.llm_backoff_base_s,
            backoff_max_s=s.llm_backoff_max_s,
            rate_limiter=limiter,
            cache=cache,
            price_table=PriceTable(
                {name: Price(p.input_per_1m, p.output_per_1m) for name, p in s.llm_prices.items()},
                api_url=s.llm_base_url,
            ),
            observer=self.observer,
        )
        provider: Any = primary
        if s.llm_fallback_models:
            provider = FallbackProvider([(primary, m) for m in [s.llm_model, *s.llm_fallback_models]])
        return LLMGenerator(
            provider,
            model=s.llm_model,
            max_tokens=s.llm_max_tokens,
            temperature=s.llm_temperature,
            context_token_budget=s.context_token_budget,
            prompt_versions=s.prompt_versions,
        )

    def close(self) -> None:
        """Close what was built (store connections, HTTP clients)."""
        with self._lock:
            for value in self._built.values():
                close = getattr(value, "close", None)
                if callable(close):
                    close()
            self._built.clear()
