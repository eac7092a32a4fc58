from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import InvalidInput
from pipeline.retrieval.chunking import Chunk, chunk_id_for, content_hash_of
from pipeline.retrieval.context import (
    coverage_selection,
    dedupe_hits,
    document_context,
    fit_budget,
    in_section,
    referenced_chunks,
    retrieve_context,
)
from pipeline.retrieval.vectorstore import Hit, QdrantVectorStore, VectorStore, open_qdrant
from tests.fakes import HashingEmbedder, InMemoryVectorStore

DIM = 128


def words(text: str) -> int:
    return len(text.split())


def hit(text: str, *, doc: str = "d", position: int = 0, score: float = 0.5, section: str = "S") -> Hit:
    return Hit(
        chunk_id=f"{doc}-{position}",
        doc_id=doc,
        tenant="t",
        section=section,
        text=text,
        score=score,
        position=position,
    )


def add_doc(
    store: VectorStore,
    embedder: HashingEmbedder,
    doc_id: str,
    sections: list[tuple[str, list[str]]],
    tenant: str = "t",
) -> None:
    chunks = []
    for section, bodies in sections:
        for body in bodies:
            text = f"{doc_id} | {section}\n{body}"
            digest = content_hash_of(text)
            position = len(chunks)
            chunks.append(
                Chunk(doc_id, chunk_id_for(doc_id, digest, position), section, text, position, digest)
            )
    store.upsert_document(tenant, doc_id, chunks, embedder.embed([c.text for c in chunks]))


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder(dim=DIM)


@pytest.fixture
def store(embedder: HashingEmbedder) -> InMemoryVectorStore:
    store = InMemoryVectorStore(DIM)
    add_doc(
        store,
        embedder,
        "lease",
        [
            ("1. Rent", ["rent is due monthly on the first day", "late rent accrues a fee of five percent"]),
            (
                "2. Term",
                [
                    "the lease term is two years",
                    "either party may renew with notice",
                    "renewal needs ninety days",
                ],
            ),
            ("3. Repairs", ["the landlord repairs the roof and heating"]),
        ],
    )
    add_doc(store, embedder, "nda", [("1. Secrets", ["the recipient keeps secrets confidential"])])
    add_doc(store, embedder, "lease", [("1. Rent", ["another tenant's rent clause"])], tenant="other")
    return store


class TestRetrieveContext:
    def test_question_gets_top_k_by_score(self, store, embedder) -> None:  # type: ignore[no-untyped-def]
        hits = retrieve_context(
            store,
            query_vector=embedder.embed_one("when is rent due monthly"),
            intent="question",
            tenant="t",
            k=2,
            count_tokens=words,
        )
        assert len(hits) == 2
        assert "rent is due monthly" in hits[0].text
        assert hits[0].score >= hits[1].score
        assert all(h.tenant == "t" for h in hits)

    def test_doc_filter_restricts_to_the_document(self, store, embedder) -> None:  # type: ignore[no-untyped-def]
        hits = retrieve_context(
            store,
            query_vector=embedder.embed_one("secrets confidential"),
            intent="risk",
            tenant="t",
            doc_id="lease",
            k=3,
            count_tokens=words,
        )
        assert hits and {h.doc_id for h in hits} == {"lease"}

    def test_summarize_covers_every_section_in_document_order(self, store, embedder) -> None:  # type: ignore[no-untyped-def]
        hits = retrieve_context(
            store,
            query_vector=embedder.embed_one("summarize"),
            intent="summarize",
            tenant="t",
            doc_id="lease",
            k=1,
            count_tokens=words,
        )
        assert {h.section for h in hits} == {"1. Rent", "2. Term", "3. Repairs"}
        assert [h.position for h in hits] == sorted(h.position for h in hits)
        assert len(hits) == 6  # budget allows everything, k does not cap coverage

    def test_summarize_past_max_chunks_keeps_one_per_section_first(self, store, embedder) -> None:  # type: ignore[no-untyped-def]
        hits = retrieve_context(
            store,
            query_vector=None,
            intent="summarize",
            tenant="t",
            doc_id="lease",
            token_budget=40,  # the prompt budget is the generator's business: a summary reads the document
            count_tokens=words,
            max_chunks=3,
        )
        assert {h.section for h in hits} == {"1. Rent", "2. Term", "3. Repairs"} and len(hits) == 3
        assert [h.position for h in hits] == sorted(h.position for h in hits)

    def test_document_context_counts_every_chunk_of_the_document(self, store) -> None:  # type: ignore[no-untyped-def]
        assert [len(hits) for hits, _ in [document_context(store, "t", "lease", 300)]] == [6]
        hits, total = document_context(store, "t", "lease", 4)
        assert (len(hits), total) == (4, 6)

    def test_summarize_without_doc_falls_back_to_top_k(self, store, embedder) -> None:  # type: ignore[no-untyped-def]
        hits = retrieve_context(
            store,
            query_vector=embedder.embed_one("lease term renew"),
            intent="summarize",
            tenant="t",
            k=2,
            count_tokens=words,
        )
        assert len(hits) == 2 and "term" in hits[0].text

    def test_missing_vector_with_document_uses_coverage(self, store) -> None:  # type: ignore[no-untyped-def]
        hits = retrieve_context(
            store, query_vector=None, intent="question", tenant="t", doc_id="nda", count_tokens=words
        )
        assert [h.doc_id for h in hits] == ["nda"]

    def test_missing_vector_without_document_is_invalid(self, store) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(InvalidInput):
            retrieve_context(store, query_vector=None, intent="question", tenant="t", count_tokens=words)

    def test_unknown_document_is_invalid_input(self, store, embedder) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(InvalidInput, match="not found"):
            retrieve_context(
                store,
                query_vector=embedder.embed_one("x"),
                intent="question",
                tenant="t",
                doc_id="missing",
                count_tokens=words,
            )

    def test_unknown_intent_is_invalid_input(self, store, embedder) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(InvalidInput, match="intent"):
            retrieve_context(
                store, query_vector=embedder.embed_one("x"), intent="poem", tenant="t", count_tokens=words
            )

    def test_budget_cuts_the_list(self, store, embedder) -> None:  # type: ignore[no-untyped-def]
        hits = retrieve_context(
            store,
            query_vector=embedder.embed_one("rent lease term"),
            intent="question",
            tenant="t",
            k=5,
            token_budget=20,
            count_tokens=words,
        )
        assert hits and sum(words(h.text) for h in hits) <= 20

    def test_score_threshold_is_passed_to_the_store(self, store, embedder) -> None:  # type: ignore[no-untyped-def]
        hits = retrieve_context(
            store,
            query_vector=embedder.embed_one("roof heating landlord repairs"),
            intent="question",
            tenant="t",
            k=5,
            score_threshold=0.5,
            count_tokens=words,
        )
        assert hits and all(h.score >= 0.5 for h in hits)

    def test_default_counter_is_used_without_one(self, store, embedder) -> None:  # type: ignore[no-untyped-def]
        hits = retrieve_context(
            store, query_vector=embedder.embed_one("rent"), intent="question", tenant="t", token_budget=1
        )
        assert hits == []


class TestDocumentJobsOnQdrant:
    """Jobs naming a document read it by id: no scroll, no filtered query, no count."""

    @pytest.fixture
    def qdrant(self, embedder: HashingEmbedder, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
        client = open_qdrant()
        qdrant = QdrantVectorStore(client, "jobs", DIM)
        qdrant.ensure_collection()
        add_doc(qdrant, embedder, "lease", [("1. Rent", ["rent is due monthly", "late rent costs more"]),
                                             ("2. Term", ["the term is two years"])])
        add_doc(qdrant, embedder, "nda", [("1. Secrets", ["keep rent secrets confidential"])])
        add_doc(qdrant, embedder, "lease", [("1. Rent", ["another tenant pays rent weekly"])], tenant="other")

        def scan(*args: object, **kwargs: object) -> None:
            raise AssertionError("a document job scanned the collection")

        for name in ("scroll", "query_points", "count", "facet"):
            monkeypatch.setattr(client, name, scan)
        yield qdrant
        client.close()

    def test_summary_reads_the_document_by_id(self, qdrant, embedder) -> None:  # type: ignore[no-untyped-def]
        hits = retrieve_context(
            qdrant, query_vector=None, intent="summarize", tenant="t", doc_id="lease", count_tokens=words
        )
        assert [h.text.split("\n")[1] for h in hits] == [
            "rent is due monthly",
            "late rent costs more",
            "the term is two years",
        ]

    def test_scoped_question_scores_only_that_document(self, qdrant, embedder) -> None:  # type: ignore[no-untyped-def]
        hits = retrieve_context(
            qdrant,
            query_vector=embedder.embed_one("when is rent due"),
            intent="question",
            tenant="t",
            doc_id="lease",
            k=2,
            count_tokens=words,
        )
        assert hits and {(h.tenant, h.doc_id) for h in hits} == {("t", "lease")}
        assert "rent is due monthly" in hits[0].text

    def test_unknown_document_is_an_id_miss(self, qdrant, embedder) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(InvalidInput, match="not found"):
            retrieve_context(
                qdrant, query_vector=None, intent="summarize", tenant="other", doc_id="nda", count_tokens=words
            )


class TestDedupe:
    def test_adjacent_overlapping_chunks_keep_the_better_one(self) -> None:
        a = hit("T | S\nalpha beta gamma delta epsilon zeta eta theta", position=3, score=0.9)
        b = hit("T | S\ngamma delta epsilon zeta eta theta iota kappa", position=4, score=0.8)
        assert dedupe_hits([b, a]) == [a]

    def test_adjacent_chunks_with_little_overlap_both_stay(self) -> None:
        a = hit("T | S\nalpha beta gamma delta epsilon zeta eta theta", position=3, score=0.9)
        b = hit("T | S\neta theta iota kappa lambda mu nu xi omicron pi", position=4, score=0.8)
        assert dedupe_hits([a, b]) == [a, b]

    def test_identical_text_in_two_documents_collapses(self) -> None:
        a = hit("CSA | Feedback\nProvider may use all Feedback freely", doc="csa", score=0.7)
        b = hit("SLA | Feedback\nProvider may use all Feedback freely", doc="sla", score=0.75)
        assert dedupe_hits([a, b]) == [b]

    def test_distant_chunks_with_moderate_overlap_stay(self) -> None:
        a = hit("T | S\nalpha beta gamma delta epsilon zeta eta theta", position=1, score=0.9)
        b = hit("T | S\ngamma delta epsilon zeta eta theta iota kappa", position=9, score=0.8)
        assert len(dedupe_hits([a, b])) == 2


def test_coverage_selection_round_robin_prefers_big_sections() -> None:
    chunks = [
        hit("one two three", position=0, section="A"),
        hit("four five six", position=1, section="A"),
        hit("seven eight nine", position=2, section="A"),
        hit("ten eleven twelve", position=3, section="B"),
    ]
    picked = coverage_selection(chunks, token_budget=9, count=words)
    assert [h.position for h in picked] == [0, 1, 3]


def test_fit_budget_skips_what_does_not_fit_but_keeps_going() -> None:
    hits = [hit("a b c d e", position=0), hit("f g h i j k l", position=1), hit("m n", position=2)]
    assert [h.position for h in fit_budget(hits, 8, words)] == [0, 2]


def test_store_vectors_are_unit_norm(store) -> None:  # type: ignore[no-untyped-def]
    results = store.search(np.ones(DIM, dtype=np.float32), k=10)
    assert all(-1.0001 <= h.score <= 1.0001 for h in results)


def test_a_clause_deferring_to_a_schedule_brings_the_schedule_along(embedder: HashingEmbedder) -> None:
    store = InMemoryVectorStore(DIM)
    add_doc(store, embedder, "hire", [
        ("2. Equipment", ["the hirer may use the cranes listed in Annex B at the site named in Annex B"]),
        ("3. Insurance", ["the hirer insures the cranes against loss"]),
        ("Annex B - Equipment and Site", ["two Liebherr LTM 1100 mobile units at Dock 4 Tilbury"]),
    ])
    hits = retrieve_context(store, query_vector=embedder.embed_one("the hirer may use the cranes listed at the site"),
                            intent="question", tenant="t", doc_id="hire", k=1, count_tokens=words)
    assert [h.section for h in hits] == ["2. Equipment", "Annex B - Equipment and Site"]
    # a schedule already retrieved is not added twice, and a bare mention ("Annex B applies") is not a deferral
    assert referenced_chunks(store, "t", [hits[1], hit("as stated in Annex B", doc="hire", section="Annex B")]) == []
    assert referenced_chunks(store, "t", [hit("Annex B applies to the cranes", doc="hire")]) == []
    assert in_section("Schedule 1 — Users > Part A", "Schedule 1") and not in_section("Schedule 12", "Schedule 1")


def test_the_answer_follows_a_deferral_into_the_schedule() -> None:
    from pipeline.generation.extractive import _followed_references
    from schemas import ContextChunk

    def chunk(section: str) -> ContextChunk:
        return ContextChunk(chunk_id=section, doc_id="d", section=section, text="", score=0.0)

    sentences = [
        ("The Licensee may use the Software at the sites specified in Schedule 3.", chunk("2. Licence")),
        ("Schedule 3 lists the sites.", chunk("Schedule 3 - Sites")),
        ("The sites are Leeds and York.", chunk("Schedule 3 - Sites")),
        ("The fee is set out in Schedule 4.", chunk("4. Fees")),
    ]
    scores = np.array([0.9, 0.2, 0.3, 0.8])
    assert _followed_references(sentences[:1], sentences, scores) == [2]
    assert _followed_references(sentences[3:], sentences, scores) == []  # Schedule 4 is not in the context
