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
    cosine_scores,
    is_local_client,
    open_qdrant,
    point_id,
    slot_id,
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


@pytest.fixture
def qdrant(tmp_path: Path) -> Iterator[QdrantVectorStore]:
    client = open_qdrant(path=str(tmp_path / "layout"))
    store = QdrantVectorStore(client, "layout_test", DIM)
    store.ensure_collection()
    try:
        yield store
    finally:
        client.close()


def _forbid_collection_scans(store: QdrantVectorStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every call that filters or scans the collection fail; lookups by id still work."""

    def scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("a document-scoped call scanned the collection")

    for name in ("scroll", "query_points", "count", "facet"):
        monkeypatch.setattr(store.client, name, scan)


def _stored_ids(store: QdrantVectorStore) -> set[str]:
    records, _ = store.client.scroll(store.collection, limit=10_000, with_payload=False)
    return {str(r.id) for r in records}


def _random_unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class TestDocumentScopedPaths:
    """A job naming a document costs lookups by id: (a) chunks, (b) scoped question, (c) existence."""

    def test_document_chunks_has_document_and_scoped_search_never_scan(
        self, qdrant: QdrantVectorStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        ingest(qdrant, "t1", "doc", [f"chunk {i}" for i in range(7)])
        ingest(qdrant, "t1", "other", ["x", "y"], offset=3)
        _forbid_collection_scans(qdrant, monkeypatch)
        assert [h.text for h in qdrant.document_chunks("t1", "doc")] == [f"chunk {i}" for i in range(7)]
        assert qdrant.has_document("t1", "doc") and not qdrant.has_document("t1", "missing")
        assert not qdrant.has_document("t2", "doc")
        hits = qdrant.search(axis(2, wobble=0.1), k=3, tenant="t1", doc_ids=["doc"])
        assert [h.text for h in hits][0] == "chunk 2" and {h.doc_id for h in hits} == {"doc"}
        assert qdrant.document_chunks("t1", "missing") == []
        assert qdrant.search(axis(0), k=3, tenant="t1", doc_ids=["missing"]) == []

    def test_points_have_deterministic_slot_ids(self, qdrant: QdrantVectorStore) -> None:
        ingest(qdrant, "t1", "doc", ["a", "b", "c"])
        assert _stored_ids(qdrant) == {slot_id("t1", "doc", i) for i in range(3)}
        (head,) = qdrant.client.retrieve(qdrant.collection, ids=[slot_id("t1", "doc", 0)])
        assert (head.payload or {})["doc_chunks"] == 3

    def test_reingest_with_fewer_chunks_removes_the_stale_slots(self, qdrant: QdrantVectorStore) -> None:
        ingest(qdrant, "t1", "doc", [f"old {i}" for i in range(6)])
        report = ingest(qdrant, "t1", "doc", ["old 0", "new 1"])
        assert report == UpsertReport(added=1, unchanged=1, removed=5)
        assert [h.text for h in qdrant.document_chunks("t1", "doc")] == ["old 0", "new 1"]
        assert _stored_ids(qdrant) == {slot_id("t1", "doc", 0), slot_id("t1", "doc", 1)}
        texts = {h.text for h in qdrant.search(axis(0), k=10, tenant="t1")}
        assert texts == {"old 0", "new 1"}  # tenant-wide search sees no stale chunk either
        ingest(qdrant, "t1", "doc", [f"grown {i}" for i in range(4)])
        assert [h.text for h in qdrant.document_chunks("t1", "doc")] == [f"grown {i}" for i in range(4)]

    def test_scoped_scores_equal_qdrant_search_scores(self, qdrant: QdrantVectorStore) -> None:
        rng = np.random.default_rng(7)
        for n, doc in enumerate(["a", "b", "c"]):
            texts = [f"{doc} {i}" for i in range(5 + n)]
            chunks = make_chunks(doc, texts)
            qdrant.upsert_document("t1", doc, chunks, _random_unit(rng, len(texts)) * (1 + n))
        ingest(qdrant, "t2", "b", ["foreign b"])
        for query in _random_unit(rng, 5) * 3.0:
            ours = qdrant.search(query, k=20, tenant="t1", doc_ids=["b"])
            theirs = qdrant.client.query_points(
                qdrant.collection,
                query=query.tolist(),
                query_filter=QdrantVectorStore._filter("t1", ["b"]),
                limit=20,
                with_payload=True,
            ).points
            assert [h.chunk_id for h in ours] == [(p.payload or {})["chunk_id"] for p in theirs]
            np.testing.assert_allclose([h.score for h in ours], [p.score for p in theirs], atol=1e-5)
            both = qdrant.search(query, k=3, tenant="t1", doc_ids=["a", "c"])
            assert len(both) == 3 and {h.doc_id for h in both} <= {"a", "c"}
            assert [h.score for h in both] == sorted((h.score for h in both), reverse=True)

    def test_scoped_search_applies_k_and_threshold(self, qdrant: QdrantVectorStore) -> None:
        ingest(qdrant, "t1", "doc", ["zero", "one", "two"])
        hits = qdrant.search(axis(0, wobble=0.5), k=3, tenant="t1", doc_ids=["doc"], score_threshold=0.3)
        assert [h.text for h in hits] == ["zero", "one"]
        assert len(qdrant.search(axis(0), k=1, tenant="t1", doc_ids=["doc"])) == 1

    def test_two_tenants_with_the_same_doc_id_do_not_mix(self, qdrant: QdrantVectorStore) -> None:
        ingest(qdrant, "t1", "doc", ["mine 0", "mine 1", "mine 2"])
        ingest(qdrant, "t2", "doc", ["theirs 0", "theirs 1"])
        ingest(qdrant, "t1", "doc", ["mine 0"])  # shrinking t1's copy leaves t2's alone
        assert [h.text for h in qdrant.document_chunks("t2", "doc")] == ["theirs 0", "theirs 1"]
        assert [h.text for h in qdrant.document_chunks("t1", "doc")] == ["mine 0"]
        hits = qdrant.search(axis(0), k=10, tenant="t2", doc_ids=["doc"])
        assert {h.tenant for h in hits} == {"t2"} and len(hits) == 2
        assert slot_id("t1", "doc", 0) != slot_id("t2", "doc", 0)

    def test_tenant_wide_search_is_still_a_qdrant_query(
        self, qdrant: QdrantVectorStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        ingest(qdrant, "t1", "a", ["a0"])
        ingest(qdrant, "t1", "b", ["b0"], offset=1)
        calls: list[object] = []
        original = qdrant.client.query_points

        def spy(*args: object, **kwargs: object) -> object:
            calls.append(kwargs.get("query_filter"))
            return original(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(qdrant.client, "query_points", spy)
        assert {h.doc_id for h in qdrant.search(axis(0), k=5, tenant="t1")} == {"a", "b"}
        assert len(qdrant.search(axis(0), k=5, doc_ids=["a"])) == 1  # no tenant: filtered query
        assert len(calls) == 2

    def test_a_chunk_that_moved_slot_keeps_its_vector(self, qdrant: QdrantVectorStore) -> None:
        first, second = make_chunks("doc", ["first", "second"])
        qdrant.upsert_document("t1", "doc", [second, first], np.stack([axis(1), axis(0)]))
        # same chunks, other order, zero rows: ingest's way of saying "already stored"
        report = qdrant.upsert_document("t1", "doc", [first, second], np.zeros((2, DIM), dtype=np.float32))
        assert report == UpsertReport(added=0, unchanged=2, removed=0)
        (best,) = qdrant.search(axis(1), k=1, tenant="t1", doc_ids=["doc"])
        assert best.text == "second" and best.score == pytest.approx(1.0, abs=1e-5)

    def test_document_hash_is_kept_in_the_manifest(self, qdrant: QdrantVectorStore) -> None:
        assert isinstance(qdrant, VectorStore)
        chunks = make_chunks("doc", ["a", "b"])
        assert qdrant.document_hash("t1", "doc") is None
        qdrant.upsert_document("t1", "doc", chunks, vectors_for(2), content_sha256="h1")
        assert qdrant.document_hash("t1", "doc") == "h1" and qdrant.document_hash("t2", "doc") is None
        report = qdrant.upsert_document("t1", "doc", chunks, vectors_for(2), content_sha256="h2")
        assert report.added == 0 and qdrant.document_hash("t1", "doc") == "h2"  # manifest-only update
        qdrant.upsert_document("t1", "doc", [], np.zeros((0, DIM), dtype=np.float32))
        assert qdrant.document_hash("t1", "doc") is None and _stored_ids(qdrant) == set()

    def test_legacy_layout_is_migrated_by_ensure_collection(self, tmp_path: Path) -> None:
        from qdrant_client.http import models

        client = open_qdrant(path=str(tmp_path / "legacy"))
        try:
            store = QdrantVectorStore(client, "old", DIM)
            store.ensure_collection()
            chunks = make_chunks("doc", ["l0", "l1", "l2"])
            client.upsert(  # what the pre-manifest code wrote: id from the chunk id, no slot
                "old",
                [
                    models.PointStruct(
                        id=point_id("t1", c.chunk_id),
                        vector=axis(i).tolist(),
                        payload={"tenant": "t1", "doc_id": "doc", "chunk_id": c.chunk_id, "section": c.section,
                                 "text": c.text, "position": c.position, "content_hash": c.content_hash},
                    )
                    for i, c in enumerate(chunks)
                ],
                wait=True,
            )
            assert not store.has_document("t1", "doc")
            QdrantVectorStore(client, "old", DIM).ensure_collection()
            assert [h.text for h in store.document_chunks("t1", "doc")] == ["l0", "l1", "l2"]
            assert _stored_ids(store) == {slot_id("t1", "doc", i) for i in range(3)}
            (best,) = store.search(axis(2), k=1, tenant="t1", doc_ids=["doc"])
            assert best.text == "l2" and best.score == pytest.approx(1.0, abs=1e-5)
            assert store.migrate_legacy_points() == 0  # nothing left to move
        finally:
            client.close()


def test_cosine_scores_normalize_both_sides() -> None:
    matrix = np.array([[3.0, 0.0], [1.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(cosine_scores(np.array([2.0, 0.0]), matrix), [1.0, 2**-0.5, 0.0], atol=1e-6)


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
