"""Chunk storage and dense search over Qdrant, behind a small protocol.

Layout: the i-th chunk of (tenant, doc_id) is the point ``slot_id(tenant, doc_id, i)``
(a uuid5, so nobody needs to look it up), and slot 0's payload is the document's
manifest: ``doc_chunks`` (how many slots it has) and ``doc_sha256`` (the content hash
ingest gave, or None). Everything a job with a ``document_id`` needs is therefore a
lookup by id, whose cost does not depend on the collection size: the document's
chunks (``document_chunks``), whether it exists (``has_document``), and a question
scoped to it (``search`` with a tenant and ``doc_ids``: its chunks' vectors fetched by
id and scored here with the same cosine Qdrant computes). Only tenant-wide search is
a Qdrant query; in local (embedded) mode that scans every point, which is what a
Qdrant server (``CONVEYOR_QDRANT_URL``) with its HNSW index is for.

Chunk ids come from content and position, so writing the same document twice changes
nothing and a changed document only rewrites the slots that changed and drops the
slots past its new length. Collections written by the older layout (point id from
the chunk id, no manifest) are migrated once by ``ensure_collection``. Every
qdrant-client / HTTP failure is translated into the pipeline error tree at this
boundary.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
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

#: namespace of point ids; a point id is uuid5(namespace, tenant + key).
POINT_NAMESPACE = uuid.UUID("0b8f3c52-1d7e-5e4a-a6b9-3f2c7d9e1a40")
_SCROLL_PAGE = 256
#: ids per ``retrieve`` call (one HTTP request body stays small).
_RETRIEVE_PAGE = 1024
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
    #: the injection verdict ingest stored with the chunk (``pipeline/guard/screening.py``), if any.
    screen: dict[str, Any] | None = None


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
        self, tenant: str, doc_id: str, chunks: Sequence[Chunk], vectors: np.ndarray, *,
        content_sha256: str | None = None, screens: Mapping[str, dict[str, Any]] | None = None,
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

    def document_hash(self, tenant: str, doc_id: str) -> str | None:
        """The ``content_sha256`` the document was last stored with (None: unknown or absent)."""

    def list_documents(self, tenant: str | None = None) -> list[str]: ...


def point_id(tenant: str, chunk_id: str) -> str:
    """Tenants may ingest identical documents; their points must not collide."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{tenant}\x1f{chunk_id}"))


def slot_id(tenant: str, doc_id: str, slot: int) -> str:
    """Point id of the ``slot``-th chunk of (tenant, doc_id); slot 0 carries the manifest.

    ``doc_id#slot`` is unambiguous (the slot has no ``#``), so two documents never share one.
    """
    return point_id(tenant, f"{doc_id}#{slot}")


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

    def _retrieve(self, ids: Sequence[str], *, with_payload: Any, with_vectors: bool) -> list[Any]:
        records: list[Any] = []
        for start in range(0, len(ids), _RETRIEVE_PAGE):
            batch = list[Any](ids[start : start + _RETRIEVE_PAGE])
            records.extend(
                self._call(
                    "retrieve",
                    partial(
                        self.client.retrieve,
                        self.collection,
                        ids=batch,
                        with_payload=with_payload,
                        with_vectors=with_vectors,
                    ),
                )
            )
        return records

    def _document_records(self, tenant: str, doc_id: str, *, with_vectors: bool) -> list[Any]:
        """The document's points (payload, optionally vectors) by id: slot 0, then the rest.

        Slots past the manifest's count are never read, so a reader racing a shrinking
        re-ingest sees at most the old version's slots, never a third document.
        """
        with self._lock:
            head = self._retrieve([slot_id(tenant, doc_id, 0)], with_payload=True, with_vectors=with_vectors)
            if not head:
                return []
            count = int((head[0].payload or {}).get("doc_chunks", 1))
            rest = [slot_id(tenant, doc_id, slot) for slot in range(1, count)]
            records = head + (self._retrieve(rest, with_payload=True, with_vectors=with_vectors) if rest else [])
        return sorted(records, key=lambda record: int((record.payload or {}).get("position", 0)))

    # -- VectorStore ------------------------------------------------------------------

    def ensure_collection(self) -> None:
        """Create the collection and keyword indexes if missing; refuse a mismatched one;
        migrate points of the older layout (no manifest) to slot ids."""
        from qdrant_client.http import models

        def create() -> bool:
            existed = self.client.collection_exists(self.collection)
            if existed:
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
            return existed

        with self._lock:
            if self._call("ensure_collection", create):
                self.migrate_legacy_points()

    def migrate_legacy_points(self) -> int:
        """Rewrite points stored by the pre-manifest layout (id from the chunk id, no
        ``slot`` in the payload) as slot points with a manifest; return how many.

        One scan of the collection when it was opened (the layout has no marker of its
        own); per document, the new points go in before the old ones go out, so an
        interrupted migration resumes on the next start and readers never lose a document.
        """
        from qdrant_client.http import models

        legacy = models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="slot"))])
        with self._lock:
            documents: dict[tuple[str, str], list[str]] = {}
            for record in self._scroll(legacy, with_payload=["tenant", "doc_id"]):
                payload = record.payload or {}
                key = (str(payload.get("tenant", "")), str(payload.get("doc_id", "")))
                documents.setdefault(key, []).append(str(record.id))
            moved = 0
            for (tenant, doc_id), ids in documents.items():
                records = sorted(
                    self._retrieve(ids, with_payload=True, with_vectors=True),
                    key=lambda record: int((record.payload or {}).get("position", 0)),
                )
                if tenant and doc_id and records:
                    chunks = [_chunk(doc_id, record.payload or {}) for record in records]
                    vectors = np.asarray([_vector(record) for record in records], dtype=np.float32)
                    self.upsert_document(tenant, doc_id, chunks, vectors)
                self._delete(ids)
                moved += len(ids)
        return moved

    def upsert_document(
        self,
        tenant: str,
        doc_id: str,
        chunks: Sequence[Chunk],
        vectors: np.ndarray,
        *,
        content_sha256: str | None = None,
        screens: Mapping[str, dict[str, Any]] | None = None,
    ) -> UpsertReport:
        """Make the stored chunks of (tenant, doc_id) exactly ``chunks``, in slots 0..n-1.

        ``screens`` (chunk id -> injection verdict) go into the payload of the points written; a
        chunk that moves to another slot keeps the verdict it had.

        Only slots whose chunk id changed are written; the other rows of ``vectors`` are
        not read (ingest leaves them zero). A chunk that moved to another slot keeps its
        stored vector. Slots 1.. go in first, then slot 0 with the manifest, then the
        slots past the new length go out, so readers never see the document empty.
        """
        from qdrant_client.http import models

        vectors = np.asarray(vectors, dtype=np.float32)
        check_upsert_args(tenant, doc_id, chunks, vectors, self.dim)
        with self._lock:
            old = self._document_records(tenant, doc_id, with_vectors=False)
            old_slots = {int((r.payload or {}).get("slot", -1)): str((r.payload or {}).get("chunk_id")) for r in old}
            head_payload = next((r.payload or {} for r in old if (r.payload or {}).get("slot") == 0), {})
            old_count = int(head_payload.get("doc_chunks", len(old)))
            old_ids = set(old_slots.values())
            kept_screens = {str((r.payload or {}).get("chunk_id")): (r.payload or {}).get("screen") for r in old}
            new_screens = {**{k: v for k, v in kept_screens.items() if v}, **(screens or {})}
            elsewhere = {chunk_id: slot for slot, chunk_id in old_slots.items()}
            count = len(chunks)
            rewrite = [i for i, chunk in enumerate(chunks) if old_slots.get(i) != chunk.chunk_id]
            moved = {i: elsewhere[chunks[i].chunk_id] for i in rewrite if chunks[i].chunk_id in elsewhere}
            kept_vectors: dict[int, Any] = {}
            if moved:
                ids = [slot_id(tenant, doc_id, slot) for slot in moved.values()]
                by_id = {str(r.id): _vector(r) for r in self._retrieve(ids, with_payload=False, with_vectors=True)}
                kept_vectors = {i: by_id.get(slot_id(tenant, doc_id, slot)) for i, slot in moved.items()}
            manifest = {"doc_chunks": count, "doc_sha256": content_sha256}

            def point(i: int) -> models.PointStruct:
                chunk = chunks[i]
                vector = kept_vectors.get(i)
                payload = _payload(tenant, chunk) | {"slot": i} | (manifest if i == 0 else {})
                if chunk.chunk_id in new_screens:
                    payload["screen"] = new_screens[chunk.chunk_id]
                return models.PointStruct(
                    id=slot_id(tenant, doc_id, i),
                    vector=vector if vector is not None else vectors[i].tolist(),
                    payload=payload,
                )

            later = [point(i) for i in rewrite if i > 0]
            for start in range(0, len(later), _SCROLL_PAGE):
                batch = later[start : start + _SCROLL_PAGE]
                self._call("upsert", partial(self.client.upsert, self.collection, batch, wait=True))
            if count and 0 in rewrite:
                self._call("upsert", partial(self.client.upsert, self.collection, [point(0)], wait=True))
            elif count and {k: head_payload.get(k) for k in manifest} != manifest:
                self._call(
                    "set_payload",
                    partial(
                        self.client.set_payload,
                        self.collection,
                        payload=manifest,
                        points=[slot_id(tenant, doc_id, 0)],
                        wait=True,
                    ),
                )
            past_end = sorted(set(range(count, old_count)) | {slot for slot in old_slots if slot >= count})
            self._delete([slot_id(tenant, doc_id, slot) for slot in past_end])
        new_ids = {chunk.chunk_id for chunk in chunks}
        added = len(new_ids - old_ids)
        return UpsertReport(added=added, unchanged=len(new_ids) - added, removed=len(old_ids - new_ids))

    def _delete(self, ids: Sequence[str]) -> None:
        from qdrant_client.http import models

        for start in range(0, len(ids), _RETRIEVE_PAGE):
            batch = list[Any](ids[start : start + _RETRIEVE_PAGE])
            self._call(
                "delete",
                partial(
                    self.client.delete,
                    self.collection,
                    points_selector=models.PointIdsList(points=batch),
                    wait=True,
                ),
            )

    def search(
        self,
        vector: np.ndarray,
        *,
        k: int,
        tenant: str | None = None,
        doc_ids: Sequence[str] | None = None,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """Best ``k`` chunks by cosine. Scoped to a tenant's documents, the documents'
        chunks are fetched by id and scored here (cost: their size, not the collection's);
        otherwise it is a Qdrant query (tenant-wide: a scan in local mode, HNSW on a server)."""
        if k < 1:
            raise InvalidInput("k must be at least 1")
        query = check_query_vector(vector, self.dim)
        if doc_ids is not None and not doc_ids:
            return []
        if tenant is not None and doc_ids is not None:
            return self._score_documents(query, k=k, tenant=tenant, doc_ids=doc_ids, score_threshold=score_threshold)
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

    def _score_documents(
        self,
        query: np.ndarray,
        *,
        k: int,
        tenant: str,
        doc_ids: Sequence[str],
        score_threshold: float | None,
    ) -> list[Hit]:
        records = [
            record
            for doc_id in dict.fromkeys(doc_ids)
            for record in self._document_records(tenant, doc_id, with_vectors=True)
        ]
        if not records:
            return []
        scores = cosine_scores(query, np.asarray([_vector(record) for record in records], dtype=np.float32))
        hits: list[Hit] = []
        for index in np.argsort(-scores, kind="stable")[:k]:
            score = float(scores[index])
            if score_threshold is not None and score < score_threshold:
                break
            hits.append(_hit(records[index].payload or {}, score))
        return hits

    def document_chunks(self, tenant: str, doc_id: str) -> list[Hit]:
        records = self._document_records(tenant, doc_id, with_vectors=False)
        return [_hit(record.payload or {}, 0.0) for record in records]

    def has_document(self, tenant: str, doc_id: str) -> bool:
        return bool(self._retrieve([slot_id(tenant, doc_id, 0)], with_payload=False, with_vectors=False))

    def document_hash(self, tenant: str, doc_id: str) -> str | None:
        """The ``content_sha256`` the document was last stored with (None: unknown or absent)."""
        head = self._retrieve([slot_id(tenant, doc_id, 0)], with_payload=["doc_sha256"], with_vectors=False)
        value = (head[0].payload or {}).get("doc_sha256") if head else None
        return str(value) if value else None

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


def cosine_scores(query: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Cosine of ``query`` with each row of ``matrix``, computed as Qdrant's cosine distance
    does (both sides unit-normalized, then a float32 dot product)."""
    query = np.asarray(query, dtype=np.float32)
    matrix = np.asarray(matrix, dtype=np.float32)
    query_norm = np.linalg.norm(query)
    row_norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit_query = query / (query_norm if query_norm else 1.0)
    unit_rows = matrix / np.where(row_norms == 0.0, 1.0, row_norms)
    return np.asarray(unit_rows @ unit_query, dtype=np.float32)


def _vector(record: Any) -> list[float]:
    vector = record.vector
    if isinstance(vector, dict):  # named vectors: the unnamed one is ""
        vector = vector.get("")
    if vector is None:
        raise InternalError(f"qdrant point {record.id} came back without its vector")
    return list(vector)


def _chunk(doc_id: str, payload: dict[str, Any]) -> Chunk:
    return Chunk(
        doc_id=doc_id,
        chunk_id=str(payload.get("chunk_id", "")),
        section=str(payload.get("section", "")),
        text=str(payload.get("text", "")),
        position=int(payload.get("position", 0)),
        content_hash=str(payload.get("content_hash", "")),
    )


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
        screen=payload.get("screen") if isinstance(payload.get("screen"), dict) else None,
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
