"""In-repo fakes for unit tests.

``InMemoryVectorStore`` implements ``pipeline.retrieval.vectorstore.VectorStore`` with numpy cosine
similarity; the contract suite in ``tests/unit/test_vectorstore_contract.py`` runs the same
assertions against it and against real Qdrant local mode, so tests that use the fake
exercise the behaviour production sees.

``HashingEmbedder`` is a deterministic bag-of-words embedder for tests that need an
``Embedder`` without loading the ONNX model.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.errors import InvalidInput
from pipeline.retrieval.chunking import Chunk
from pipeline.retrieval.embeddings import OnnxMiniLMEmbedder, l2_normalize
from pipeline.retrieval.vectorstore import Hit, UpsertReport, check_query_vector, check_upsert_args, point_id


@dataclass
class _Point:
    tenant: str
    chunk: Chunk
    vector: np.ndarray
    screen: dict[str, Any] | None = None


class InMemoryVectorStore:
    """A dict of points and brute-force cosine search; thread-safe like the real store."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._points: dict[str, _Point] = {}
        self._lock = threading.Lock()
        self._hashes: dict[tuple[str, str], str] = {}
        self.ensured = False

    def ensure_collection(self) -> None:
        self.ensured = True

    def upsert_document(
        self, tenant: str, doc_id: str, chunks: Sequence[Chunk], vectors: np.ndarray, *,
        content_sha256: str | None = None, screens: Mapping[str, dict[str, Any]] | None = None,
    ) -> UpsertReport:
        vectors = np.asarray(vectors, dtype=np.float32)
        check_upsert_args(tenant, doc_id, chunks, vectors, self.dim)
        with self._lock:
            if chunks and content_sha256 is not None:
                self._hashes[(tenant, doc_id)] = content_sha256
            else:
                self._hashes.pop((tenant, doc_id), None)
            existing = {
                pid for pid, p in self._points.items() if p.tenant == tenant and p.chunk.doc_id == doc_id
            }
            wanted = {point_id(tenant, c.chunk_id): (c, v) for c, v in zip(chunks, vectors, strict=True)}
            added = [pid for pid in wanted if pid not in existing]
            stale = [pid for pid in existing if pid not in wanted]
            for pid in added:
                chunk, vector = wanted[pid]
                self._points[pid] = _Point(tenant, chunk, l2_normalize(vector), (screens or {}).get(chunk.chunk_id))
            for pid in stale:
                del self._points[pid]
        return UpsertReport(added=len(added), unchanged=len(wanted) - len(added), removed=len(stale))

    def search(
        self,
        vector: np.ndarray,
        *,
        k: int,
        tenant: str | None = None,
        doc_ids: Sequence[str] | None = None,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        if k < 1:
            raise InvalidInput("k must be at least 1")
        query = l2_normalize(check_query_vector(vector, self.dim))
        with self._lock:
            points = [
                p
                for p in self._points.values()
                if (tenant is None or p.tenant == tenant) and (doc_ids is None or p.chunk.doc_id in doc_ids)
            ]
        scored = [(float(np.dot(p.vector, query)), p) for p in points]
        if score_threshold is not None:
            scored = [(s, p) for s, p in scored if s >= score_threshold]
        scored.sort(key=lambda item: -item[0])
        return [_hit(p, s) for s, p in scored[:k]]

    def document_chunks(self, tenant: str, doc_id: str) -> list[Hit]:
        with self._lock:
            points = [p for p in self._points.values() if p.tenant == tenant and p.chunk.doc_id == doc_id]
        return sorted((_hit(p, 0.0) for p in points), key=lambda h: h.position)

    def document_hash(self, tenant: str, doc_id: str) -> str | None:
        with self._lock:
            return self._hashes.get((tenant, doc_id))

    def has_document(self, tenant: str, doc_id: str) -> bool:
        with self._lock:
            return any(p.tenant == tenant and p.chunk.doc_id == doc_id for p in self._points.values())

    def list_documents(self, tenant: str | None = None) -> list[str]:
        with self._lock:
            return sorted(
                {p.chunk.doc_id for p in self._points.values() if tenant is None or p.tenant == tenant}
            )

    def __len__(self) -> int:
        return len(self._points)


def _hit(point: _Point, score: float) -> Hit:
    chunk = point.chunk
    return Hit(
        chunk_id=chunk.chunk_id,
        doc_id=chunk.doc_id,
        tenant=point.tenant,
        section=chunk.section,
        text=chunk.text,
        score=score,
        position=chunk.position,
        screen=point.screen,
    )


class HashingEmbedder:
    """Deterministic bag-of-words vectors: texts sharing words are close. No model load."""

    model_id = "test-hashing"

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                bucket = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
                out[row, bucket % self.dim] += 1.0
            if not out[row].any():
                out[row, 0] = 1.0
        return l2_normalize(out)

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


@lru_cache(maxsize=1)
def shared_minilm() -> OnnxMiniLMEmbedder:
    """One real ONNX embedder per test session (loading takes ~0.5 s); it is stateless."""
    embedder = OnnxMiniLMEmbedder()
    embedder.warm_up()
    return embedder


def drain_queue(app: Any, queue: str) -> list[Any]:
    """Take every message off ``queue`` of an app's broker (the process-wide memory transport in unit tests)."""
    messages = []
    with app.connection_for_write() as conn:
        while (message := conn.default_channel.basic_get(queue)) is not None:
            messages.append(message)
    return messages
