"""The clients a stage needs, built lazily once per process.

Nothing here connects at import. A worker process builds its ``Resources`` on first use
(or eagerly from ``worker_process_init``), after any fork, so no socket, ONNX session or
Qdrant lock is ever shared between processes. Each attribute is built on first access
under a lock, so a threads pool does not build the same client twice, and a worker that
only serves the ``llm`` queue never loads the embedding model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.generation.stage import Generator
    from pipeline.intent.classifier import IntentClassifier
    from pipeline.retrieval.embeddings import Embedder
    from pipeline.retrieval.vectorstore import QdrantVectorStore
    from pipeline.state import StateStore

T = TypeVar("T")


class Resources:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._built: dict[str, Any] = {}

    def _get(self, name: str, build: Callable[[], T]) -> T:
        if name not in self._built:
            with self._lock:
                if name not in self._built:
                    self._built[name] = build()
        value: T = self._built[name]
        return value

    # --- state --------------------------------------------------------------------------
    @property
    def state(self) -> StateStore:
        def build() -> StateStore:
            from pipeline.state import RedisStateStore, SqliteStateStore

            url = self.settings.store_url
            if url:
                return RedisStateStore.from_url(url)
            return SqliteStateStore(Path(self.settings.data_dir) / "state.sqlite3")

        return self._get("state", build)

    @property
    def redis(self) -> Any | None:
        """A Redis client for the shared rate limiter and response cache; None in embedded mode."""

        def build() -> Any | None:
            url = self.settings.store_url
            if not url:
                return None
            import redis

            return redis.Redis.from_url(url, socket_timeout=10, health_check_interval=30)

        return self._get("redis", build)

    # --- embeddings, vectors, intent ----------------------------------------------------
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

        return self._get("embedder", build)

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

        return self._get("vector_store", build)

    @property
    def intent_classifier(self) -> IntentClassifier:
        def build() -> IntentClassifier:
            from pipeline.intent.classifier import IntentClassifier

            return IntentClassifier(self.embedder, threshold=self.settings.intent_threshold)

        return self._get("intent_classifier", build)

    # --- generation ---------------------------------------------------------------------
    @property
    def generator(self) -> Generator:
        def build() -> Generator:
            from pipeline.generation.stage import build_generator

            return build_generator(self)

        return self._get("generator", build)

    def warm_up(self, queues: Iterable[str]) -> list[str]:
        """Build what the given queues' stages need now, so a worker's first job is not slow.

        Returns what was warmed. Called once per worker process, after any fork.
        """
        queues = set(queues)
        warmed = []
        if queues & {"intent", "retrieve", "llm"}:
            warm = getattr(self.embedder, "warm_up", None)
            if callable(warm):
                warm()
            warmed.append("embedder")
        if "intent" in queues:
            self.intent_classifier.warm_up()
            warmed.append("intent_classifier")
        if "retrieve" in queues:
            _ = self.vector_store
            warmed.append("vector_store")
        if "llm" in queues:
            from pipeline.generation.llm.tokens import count_tokens

            _ = self.generator
            count_tokens("warm up", self.settings.llm_model)  # loads the BPE ranks (about a second)
            warmed.append("generator")
        if queues & {"record", "intent", "retrieve", "llm", "guard"}:
            self.state.ping()
            warmed.append("state")
        return warmed

    def close(self) -> None:
        """Close what was built (store connections, HTTP clients)."""
        with self._lock:
            for value in self._built.values():
                close = getattr(value, "close", None)
                if callable(close):
                    close()
            self._built.clear()
