"""One contract suite, two implementations: the in-memory fake and real Qdrant (local mode).

If the fake drifts from Qdrant's behaviour, the fake's row here fails, so unit tests that
use the fake keep testing what production does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from pipeline.errors import (
    InternalError,
    InvalidInput,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    StageTimeout,
)
from pipeline.retrieval.chunking import Chunk, chunk_id_for, content_hash_of
from pipeline.retrieval.vectorstore import (
    QdrantVectorStore,
    UpsertReport,
    VectorStore,
    _translate,
    is_local_client,
    open_qdrant,
)
from tests.fakes import InMemoryVectorStore

DIM = 8


def make_chunks(doc_id: str, texts: list[str]) -> list[Chunk]:
    chunks = []
    for position, text in enumerate(texts):
        digest = content_hash_of(text)
        chunks.append(
            Chunk(
                doc_id=doc_id,
                chunk_id=chunk_id_for(doc_id, digest, position),
                section=f"Section {position // 2 + 1}",
                text=text,
                position=position,
                content_hash=digest,
            )
        )
    return chunks


def axis(i: int, wobble: float = 0.0) -> np.ndarray:
    """Unit vector near basis axis ``i`` (cosine to axis i is ~1, to others ~0)."""
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM] = 1.0
    v[(i + 1) % DIM] = wobble
    return v / np.linalg.norm(v)


def vectors_for(n: int, offset: int = 0) -> np.ndarray:
    return np.stack([axis(offset + i) for i in range(n)])


@pytest.fixture(params=["fake", "qdrant-local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    if request.param == "fake":
        yield InMemoryVectorStore(DIM)
        return
    client = open_qdrant(path=str(tmp_path / "qdrant"))
    qdrant = QdrantVectorStore(client, "contract_test", DIM)
    qdrant.ensure_collection()
    try:
        yield qdrant
    finally:
        client.close()


def ingest(store: VectorStore, tenant: str, doc_id: str, texts: list[str], offset: int = 0) -> UpsertReport:
    return store.upsert_document(tenant, doc_id, make_chunks(doc_id, texts), vectors_for(len(texts), offset))


class TestContract:
    def test_is_a_vector_store(self, store: VectorStore) -> None:
        assert isinstance(store, VectorStore)
        store.ensure_collection()  # idempotent

    def test_first_upsert_adds_everything(self, store: VectorStore) -> None:
        assert ingest(store, "t1", "doc", ["a", "b", "c"]) == UpsertReport(added=3, unchanged=0, removed=0)

    def test_reingesting_the_same_document_is_a_no_op(self, store: VectorStore) -> None:
        ingest(store, "t1", "doc", ["a", "b", "c"])
        before = store.document_chunks("t1", "doc")
        assert ingest(store, "t1", "doc", ["a", "b", "c"]) == UpsertReport(added=0, unchanged=3, removed=0)
        assert store.document_chunks("t1", "doc") == before

    def test_changed_document_replaces_stale_chunks(self, store: VectorStore) -> None:
        ingest(store, "t1", "doc", ["a", "b", "c"])
        report = ingest(store, "t1", "doc", ["a", "B2", "c", "d"])
        assert report == UpsertReport(added=2, unchanged=2, removed=1)
        assert [h.text for h in store.document_chunks("t1", "doc")] == ["a", "B2", "c", "d"]

    def test_empty_chunk_list_removes_the_document(self, store: VectorStore) -> None:
        ingest(store, "t1", "doc", ["a", "b"])
        report = store.upsert_document("t1", "doc", [], np.zeros((0, DIM), dtype=np.float32))
        assert report.removed == 2
        assert not store.has_document("t1", "doc")

    def test_document_chunks_in_position_order_with_payload(self, store: VectorStore) -> None:
        texts = [f"chunk {i}" for i in range(12)]
        ingest(store, "t1", "doc", texts)
        hits = store.document_chunks("t1", "doc")
        assert [h.position for h in hits] == list(range(12))
        assert [h.text for h in hits] == texts
        assert {h.tenant for h in hits} == {"t1"} and {h.doc_id for h in hits} == {"doc"}
        assert hits[3].section == "Section 2"
        assert hits[0].chunk_id == make_chunks("doc", texts)[0].chunk_id

    def test_search_ranks_by_cosine(self, store: VectorStore) -> None:
        ingest(store, "t1", "doc", ["zero", "one", "two"])
        hits = store.search(axis(1, wobble=0.2), k=3)
        assert hits[0].text == "one"
        assert hits[0].score == pytest.approx(1 / np.sqrt(1.04), abs=1e-4)
        assert hits[0].score >= hits[1].score >= hits[2].score
        assert len(store.search(axis(1), k=1)) == 1

    def test_search_filters_by_tenant(self, store: VectorStore) -> None:
        ingest(store, "t1", "doc", ["mine"])
        ingest(store, "t2", "doc", ["theirs"])
        hits = store.search(axis(0), k=5, tenant="t1")
        assert [(h.tenant, h.text) for h in hits] == [("t1", "mine")]
        assert len(store.search(axis(0), k=5)) == 2

    def test_same_document_in_two_tenants_is_stored_twice(self, store: VectorStore) -> None:
        ingest(store, "t1", "doc", ["same"])
        assert ingest(store, "t2", "doc", ["same"]).added == 1
        ingest(store, "t1", "doc", ["changed"])
        assert [h.text for h in store.document_chunks("t2", "doc")] == ["same"]

    def test_search_filters_by_doc_ids(self, store: VectorStore) -> None:
        ingest(store, "t1", "a", ["a0", "a1"], offset=0)
        ingest(store, "t1", "b", ["b0", "b1"], offset=2)
        ingest(store, "t1", "c", ["c0"], offset=4)
        hits = store.search(axis(0), k=10, tenant="t1", doc_ids=["b", "c"])
        assert {h.doc_id for h in hits} == {"b", "c"}
        assert store.search(axis(0), k=10, doc_ids=[]) == []

    def test_score_threshold_drops_weak_hits(self, store: VectorStore) -> None:
        ingest(store, "t1", "doc", ["zero", "one", "two"])
        hits = store.search(axis(0, wobble=0.5), k=3, score_threshold=0.3)
        assert [h.text for h in hits] == ["zero", "one"]

    def test_has_and_list_documents(self, store: VectorStore) -> None:
        ingest(store, "t1", "b", ["x"])
        ingest(store, "t1", "a", ["y"])
        ingest(store, "t2", "c", ["z"])
        assert store.has_document("t1", "a") and not store.has_document("t2", "a")
        assert store.list_documents("t1") == ["a", "b"]
        assert store.list_documents() == ["a", "b", "c"]
        assert store.list_documents("nobody") == []

    def test_unknown_document_has_no_chunks(self, store: VectorStore) -> None:
        assert store.document_chunks("t1", "missing") == []

    def test_mismatched_vectors_are_rejected(self, store: VectorStore) -> None:
        chunks = make_chunks("doc", ["a", "b"])
        with pytest.raises(InvalidInput):
            store.upsert_document("t1", "doc", chunks, vectors_for(1))
        with pytest.raises(InternalError):
            store.upsert_document("t1", "doc", chunks, np.ones((2, DIM + 1), dtype=np.float32))
        with pytest.raises(InvalidInput):
            store.upsert_document("t1", "other-doc", chunks, vectors_for(2))

    def test_query_of_wrong_dimension_is_internal_error(self, store: VectorStore) -> None:
        with pytest.raises(InternalError):
            store.search(np.ones(DIM + 2, dtype=np.float32), k=1)

    def test_concurrent_upserts_and_searches(self, store: VectorStore) -> None:
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                ingest(store, "t1", f"doc{n}", [f"text {n} {i}" for i in range(5)], offset=n)
                store.search(axis(n), k=3, tenant="t1")
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(store.list_documents("t1")) == 6


class TestQdrantSpecifics:
    def test_local_client_is_detected_and_locked(self, tmp_path: Path) -> None:
        client = open_qdrant()  # in-memory
        try:
            store = QdrantVectorStore(client, "c", DIM)
            assert is_local_client(client)
            assert store.local
        finally:
            client.close()

    def test_existing_collection_with_other_size_is_refused(self) -> None:
        client = open_qdrant()
        try:
            QdrantVectorStore(client, "c", DIM).ensure_collection()
            with pytest.raises(InternalError, match="size"):
                QdrantVectorStore(client, "c", DIM * 2).ensure_collection()
        finally:
            client.close()

    def test_locked_local_path_is_provider_unavailable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import qdrant_client

        def locked(**kwargs: object) -> None:
            raise RuntimeError("Storage folder is already accessed by another instance of Qdrant client")

        monkeypatch.setattr(qdrant_client, "QdrantClient", locked)
        with pytest.raises(ProviderUnavailable, match="cannot open local Qdrant"):
            open_qdrant(path="/nonexistent/qdrant")

    def test_url_and_path_together_is_a_config_error(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError):
            open_qdrant(url="http://localhost:6333", path=str(tmp_path))

    def test_unreachable_server_is_provider_unavailable(self) -> None:
        # discard port: nothing listens; no background version probe (it would warn from a thread)
        client = open_qdrant(url="http://127.0.0.1:9", check_compatibility=False)
        try:
            store = QdrantVectorStore(client, "c", DIM)
            assert not store.local
            with pytest.raises(ProviderUnavailable):
                store.ensure_collection()
        finally:
            client.close()


def _unexpected(status: int, headers: dict[str, str] | None = None) -> UnexpectedResponse:
    return UnexpectedResponse(status, "x", b'{"status":"error"}', httpx.Headers(headers or {}))


class TestTranslate:
    def test_http_statuses(self) -> None:
        limited = _translate(_unexpected(429, {"retry-after": "3"}), "search")
        assert isinstance(limited, RateLimited) and limited.retry_after == 3.0
        assert isinstance(_translate(_unexpected(503), "search"), ProviderUnavailable)
        assert isinstance(_translate(_unexpected(408), "search"), StageTimeout)
        assert isinstance(_translate(_unexpected(400), "search"), ProviderRejected)

    def test_transport_failures(self) -> None:
        request = httpx.Request("GET", "http://q")
        timeout = ResponseHandlingException(httpx.ReadTimeout("slow", request=request))
        assert isinstance(_translate(timeout, "scroll"), StageTimeout)
        refused = ResponseHandlingException(httpx.ConnectError("refused", request=request))
        assert isinstance(_translate(refused, "scroll"), ProviderUnavailable)

    def test_anything_else_is_internal(self) -> None:
        assert isinstance(_translate(ValueError("bad filter"), "search"), InternalError)
