"""Chunk storage and dense search over Qdrant, behind a small protocol.

Point ids are derived from (tenant, chunk id) and chunk ids from content, so writing
the same document twice changes nothing and a changed document only gains its new
chunks and loses its stale ones. Every qdrant-client / HTTP failure is translated into
the pipeline error tree at this boundary.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import httpx
import numpy as np
from pydantic import SecretStr

from pipeline.errors import (
    ConveyorError,
    InternalError,
    InvalidInput,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    StageTimeout,
)
from pipeline.retrieval.chunking import Chunk

if TYPE_CHECKING:
    from qdrant_client import QdrantClient
    from qdrant_client.http import models

#: namespace of point ids; a point id is uuid5(namespace, tenant + chunk id).
POINT_NAMESPACE = uuid.UUID("0b8f3c52-1d7e-5e4a-a6b9-3f2c7d9e1a40")
_SCROLL_PAGE = 256
_FACET_LIMIT = 100_000

T = TypeVar("T")


@dataclass(frozen=True)
class Hit:
    """A stored chunk returned by a search or a document listing."""

    chunk_id: str
    doc_id: str
    tenant: str
    section: str
    text: str
    score: float
    position: int


@dataclass(frozen=True)
class UpsertReport:
    added: int
    unchanged: int
    removed: int


@runtime_checkable
class VectorStore(Protocol):
    """What ingestion and retrieval need; ``QdrantVectorStore`` and the test fake implement it."""

    dim: int

    def ensure_collection(self) -> None: ...

    def upsert_document(
        self, tenant: str, doc_id: str, chunks: Sequence[Chunk], vectors: np.ndarray
    ) -> UpsertReport: ...

    def search(
        self,
        vector: np.ndarray,
        *,
        k: int,
        tenant: str | None = None,
        doc_ids: Sequence[str] | None = None,
        score_threshold: float | None = None,
    ) -> list[Hit]: ...

    def document_chunks(self, tenant: str, doc_id: str) -> list[Hit]: ...

    def has_document(self, tenant: str, doc_id: str) -> bool: ...

    def list_documents(self, tenant: str | None = None) -> list[str]: ...


def point_id(tenant: str, chunk_id: str) -> str:
    """Tenants may ingest identical documents; their points must not collide."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{tenant}\x1f{chunk_id}"))


def check_upsert_args(
    tenant: str, doc_id: str, chunks: Sequence[Chunk], vectors: np.ndarray, dim: int
) -> None:
    """Validation shared by every store implementation."""
    if not tenant or not doc_id:
        raise InvalidInput("tenant and doc_id must be non-empty")
    if vectors.ndim != 2 or vectors.shape[0] != len(chunks):
        raise InvalidInput(f"got {len(chunks)} chunks but vectors of shape {vectors.shape}")
    if len(chunks) and vectors.shape[1] != dim:
        raise InternalError(f"vectors have dimension {vectors.shape[1]}, the collection expects {dim}")
    for chunk in chunks:
        if chunk.doc_id != doc_id:
            raise InvalidInput(f"chunk {chunk.chunk_id} belongs to {chunk.doc_id!r}, not {doc_id!r}")


def check_query_vector(vector: np.ndarray, dim: int) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if array.shape[0] != dim:
        raise InternalError(f"query vector has dimension {array.shape[0]}, the collection expects {dim}")
    return array


def open_qdrant(
    *,
    url: str | None = None,
    api_key: SecretStr | str | None = None,
    path: str | None = None,
    check_compatibility: bool = True,
) -> QdrantClient:
    """A client for a Qdrant server (``url``), an on-disk local store (``path``) or memory.

    Call it in each worker process at start-up, never at import: a local ``path`` can be
    opened by one process only. ``check_compatibility`` is qdrant-client's background
    server-version probe (a warning from a thread when the server is unreachable).
    """
    from qdrant_client import QdrantClient

    if url and path:
        raise ValueError("give either a Qdrant url or a local path, not both")
    key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    try:
        if url:
            return QdrantClient(url=url, api_key=key, check_compatibility=check_compatibility)
        if path:
            return QdrantClient(path=str(path))
        return QdrantClient(location=":memory:")
    except RuntimeError as exc:  # local path already locked by another process
        raise ProviderUnavailable(f"cannot open local Qdrant store at {path}: {exc}") from exc
    except Exception as exc:
        raise _translate(exc, "open") from exc


def is_local_client(client: Any) -> bool:
    """True for qdrant-client local mode (in-process, not documented as thread-safe)."""
    try:
        from qdrant_client.local.qdrant_local import QdrantLocal
    except ImportError:  # pragma: no cover - qdrant-client always ships it
        return False
    return isinstance(getattr(client, "_client", None), QdrantLocal)


class QdrantVectorStore:
    """``VectorStore`` over one Qdrant collection (cosine distance, one unnamed dense vector)."""

    def __init__(self, client: QdrantClient, collection: str, dim: int) -> None:
        self.client = client
        self.collection = collection
        self.dim = dim
        self.local = is_local_client(client)
        self._lock: AbstractContextManager[Any] = threading.RLock() if self.local else nullcontext()

    # -- plumbing ---------------------------------------------------------------------

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        with self._lock:
            try:
                return fn()
            except ConveyorError:
                raise
            except Exception as exc:
                raise _translate(exc, operation) from exc

    @staticmethod
    def _filter(tenant: str | None = None, doc_ids: Sequence[str] | None = None) -> models.Filter | None:
        from qdrant_client.http import models

        must: list[Any] = []
        if tenant is not None:
            must.append(models.FieldCondition(key="tenant", match=models.MatchValue(value=tenant)))
        if doc_ids is not None:
            must.append(models.FieldCondition(key="doc_id", match=models.MatchAny(any=list(doc_ids))))
        return models.Filter(must=must) if must else None

    def _scroll(self, scroll_filter: models.Filter | None, *, with_payload: Any) -> Iterator[Any]:
        offset: Any = None
        while True:
            page, offset = self._call(
                "scroll",
                partial(
                    self.client.scroll,
                    self.collection,
                    scroll_filter=scroll_filter,
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=with_payload,
                    with_vectors=False,
                ),
            )
            yield from page
            if offset is None:
                return

    # -- VectorStore ------------------------------------------------------------------

    def ensure_collection(self) -> None:
        """Create the collection and keyword indexes if missing; refuse a mismatched one."""
        from qdrant_client.http import models

        def create() -> None:
            if self.client.collection_exists(self.collection):
                params = self.client.get_collection(self.collection).config.params.vectors
                size = getattr(params, "size", None)
                distance = getattr(params, "distance", None)
                if size != self.dim or distance != models.Distance.COSINE:
                    raise InternalError(
                        f"collection {self.collection!r} has vectors size={size} distance={distance}; "
                        f"this embedder needs size={self.dim} COSINE (use another collection name)"
                    )
            else:
                self.client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.COSINE),
                )
            if not self.local:  # local mode scans everything; indexes there only warn
                for field in ("tenant", "doc_id"):
                    self.client.create_payload_index(
                        self.collection, field_name=field, field_schema=models.PayloadSchemaType.KEYWORD
                    )

        self._call("ensure_collection", create)

    def upsert_document(
        self, tenant: str, doc_id: str, chunks: Sequence[Chunk], vectors: np.ndarray
    ) -> UpsertReport:
        """Make the stored chunks of (tenant, doc_id) exactly ``chunks``; new points go in
        before stale ones go out, so readers never see the document empty."""
        from qdrant_client.http import models

        vectors = np.asarray(vectors, dtype=np.float32)
        check_upsert_args(tenant, doc_id, chunks, vectors, self.dim)
        with self._lock:
            existing = {
                str(record.id) for record in self._scroll(self._filter(tenant, [doc_id]), with_payload=False)
            }
            wanted = {
                point_id(tenant, chunk.chunk_id): (chunk, vector)
                for chunk, vector in zip(chunks, vectors, strict=True)
            }
            new_ids = [pid for pid in wanted if pid not in existing]
            stale = [pid for pid in existing if pid not in wanted]
            if new_ids:
                points = [
                    models.PointStruct(
                        id=pid,
                        vector=wanted[pid][1].tolist(),
                        payload=_payload(tenant, wanted[pid][0]),
                    )
                    for pid in new_ids
                ]
                for start in range(0, len(points), _SCROLL_PAGE):
                    batch = points[start : start + _SCROLL_PAGE]
                    self._call("upsert", partial(self.client.upsert, self.collection, batch, wait=True))
            if stale:
                self._call(
                    "delete",
                    lambda: self.client.delete(
                        self.collection,
                        points_selector=models.PointIdsList(points=list[Any](stale)),
                        wait=True,
                    ),
                )
        return UpsertReport(added=len(new_ids), unchanged=len(wanted) - len(new_ids), removed=len(stale))

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
        query = check_query_vector(vector, self.dim)
        if doc_ids is not None and not doc_ids:
            return []
        response = self._call(
            "search",
            lambda: self.client.query_points(
                self.collection,
                query=query.tolist(),
                query_filter=self._filter(tenant, doc_ids),
                limit=k,
                score_threshold=score_threshold,
                with_payload=True,
            ),
        )
        return [_hit(point.payload or {}, float(point.score)) for point in response.points]

    def document_chunks(self, tenant: str, doc_id: str) -> list[Hit]:
        hits = [
            _hit(record.payload or {}, 0.0)
            for record in self._scroll(self._filter(tenant, [doc_id]), with_payload=True)
        ]
        return sorted(hits, key=lambda hit: hit.position)

    def has_document(self, tenant: str, doc_id: str) -> bool:
        result = self._call(
            "count",
            lambda: self.client.count(
                self.collection, count_filter=self._filter(tenant, [doc_id]), exact=True
            ),
        )
        return result.count > 0

    def list_documents(self, tenant: str | None = None) -> list[str]:
        response = self._call(
            "facet",
            lambda: self.client.facet(
                self.collection,
                key="doc_id",
                facet_filter=self._filter(tenant),
                limit=_FACET_LIMIT,
                exact=True,
            ),
        )
        return sorted(str(hit.value) for hit in response.hits)


def _payload(tenant: str, chunk: Chunk) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "doc_id": chunk.doc_id,
        "chunk_id": chunk.chunk_id,
        "section": chunk.section,
        "text": chunk.text,
        "position": chunk.position,
        "content_hash": chunk.content_hash,
    }


def _hit(payload: dict[str, Any], score: float) -> Hit:
    return Hit(
        chunk_id=str(payload.get("chunk_id", "")),
        doc_id=str(payload.get("doc_id", "")),
        tenant=str(payload.get("tenant", "")),
        section=str(payload.get("section", "")),
        text=str(payload.get("text", "")),
        score=score,
        position=int(payload.get("position", 0)),
    )


def _translate(exc: Exception, operation: str) -> ConveyorError:
    """Map a qdrant-client / transport exception onto the pipeline error tree."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    where = f"qdrant {operation}"
    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code or 0
        details: dict[str, object] = {"status": status, "body": exc.content[:300].decode("utf-8", "replace")}
        if status == 429:
            retry = exc.headers.get("retry-after") if exc.headers else None
            try:
                retry_after = float(retry) if retry is not None else None
            except ValueError:
                retry_after = None
            return RateLimited(f"{where}: rate limited", retry_after=retry_after, details=details)
        if status == 408:
            return StageTimeout(f"{where}: timed out", details=details)
        if status >= 500 or status == 0:
            return ProviderUnavailable(f"{where}: server error {status}", details=details)
        return ProviderRejected(f"{where}: rejected with {status}", details=details)
    if isinstance(exc, ResponseHandlingException):
        source = getattr(exc, "source", None)
        if isinstance(source, httpx.TimeoutException):
            return StageTimeout(f"{where}: timed out: {source}")
        return ProviderUnavailable(f"{where}: unreachable: {source or exc}")
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return StageTimeout(f"{where}: timed out: {exc}")
    if isinstance(exc, httpx.TransportError | ConnectionError):
        return ProviderUnavailable(f"{where}: unreachable: {exc}")
    grpc_error = _translate_grpc(exc, where)
    if grpc_error is not None:
        return grpc_error
    return InternalError(f"{where} failed: {type(exc).__name__}: {exc}")


def _translate_grpc(exc: Exception, where: str) -> ConveyorError | None:
    try:
        import grpc
    except ImportError:  # pragma: no cover - grpcio is a qdrant-client dependency
        return None
    if not isinstance(exc, grpc.RpcError):
        return None
    code = exc.code() if hasattr(exc, "code") else None
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return StageTimeout(f"{where}: deadline exceeded")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return RateLimited(f"{where}: resource exhausted")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL):
        return ProviderUnavailable(f"{where}: {code}")
    return ProviderRejected(f"{where}: {code}")
