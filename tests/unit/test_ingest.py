from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import InternalError, InvalidInput
from pipeline.retrieval.ingest import ingest_paths, ingest_text, iter_document_paths, read_document, text_sha256
from pipeline.retrieval.vectorstore import QdrantVectorStore, open_qdrant
from tests.fakes import HashingEmbedder, InMemoryVectorStore

CONTRACT_MD = """# Supply Agreement

1. <span class="header_2">Payment</span>
    1. <span class="header_3">Fees.</span>  Buyer pays **all Fees** within 30 days of invoice.
    2. <span class="header_3">Late Payment.</span>  Late amounts accrue interest at 1% per month.
2. <span class="header_2">Term</span>
    1. <span class="header_3">Duration.</span>  This Agreement lasts two years.
"""


@pytest.fixture
def store() -> InMemoryVectorStore:
    return InMemoryVectorStore(dim=64)


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder(dim=64)


class TestReadDocument:
    def test_markdown_is_stripped_and_named_by_stem(self, tmp_path: Path) -> None:
        path = tmp_path / "supply-agreement.md"
        path.write_text(CONTRACT_MD)
        doc_id, text = read_document(path)
        assert doc_id == "supply-agreement"
        assert "<span" not in text and "**" not in text
        assert "Buyer pays all Fees within 30 days" in text

    def test_html_keeps_headings(self, tmp_path: Path) -> None:
        path = tmp_path / "policy.html"
        path.write_text("<html><body><h1>Policy</h1><p>Rule &amp; one.</p></body></html>")
        doc_id, text = read_document(path)
        assert doc_id == "policy"
        assert text.splitlines()[0] == "# Policy" and "Rule & one." in text

    def test_txt_is_read_verbatim(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.txt"
        path.write_text("a <b>literal</b> text\n")
        assert read_document(path) == ("notes", "a <b>literal</b> text\n")

    def test_unsupported_suffix(self, tmp_path: Path) -> None:
        path = tmp_path / "sheet.xlsx"
        path.write_bytes(b"x")
        with pytest.raises(InvalidInput, match="unsupported"):
            read_document(path)

    def test_pdf_without_pypdf_says_how_to_fix(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import sys

        monkeypatch.setitem(sys.modules, "pypdf", None)  # makes the import fail
        path = tmp_path / "scan.pdf"
        path.write_bytes(b"%PDF-1.4")
        with pytest.raises(InvalidInput, match="pdf not supported: install pypdf"):
            read_document(path)

    def test_non_utf8_is_invalid_input(self, tmp_path: Path) -> None:
        path = tmp_path / "latin.md"
        path.write_bytes("caf\xe9".encode("latin-1"))
        with pytest.raises(InvalidInput, match="UTF-8"):
            read_document(path)


class TestIngestText:
    def test_stores_chunks_and_reingest_is_a_no_op(self, store, embedder) -> None:  # type: ignore[no-untyped-def]
        first = ingest_text(
            "doc",
            "1. Fees\n    1. A. Pay now.\n2. Term\n    1. B. Two years.",
            tenant="t",
            store=store,
            embedder=embedder,
        )
        assert first.added >= 2 and first.removed == 0
        calls = embedder.calls
        second = ingest_text(
            "doc",
            "1. Fees\n    1. A. Pay now.\n2. Term\n    1. B. Two years.",
            tenant="t",
            store=store,
            embedder=embedder,
        )
        assert second.added == 0 and second.unchanged == first.added
        assert embedder.calls == calls  # nothing re-embedded

    def test_changed_text_embeds_only_new_chunks(self, store, embedder) -> None:  # type: ignore[no-untyped-def]
        ingest_text(
            "doc",
            "1. Fees\n    1. A. Pay now.\n2. Term\n    1. B. Two years.",
            tenant="t",
            store=store,
            embedder=embedder,
        )
        seen: list[list[str]] = []
        original = embedder.embed

        def spy(texts):  # type: ignore[no-untyped-def]
            seen.append(list(texts))
            return original(texts)

        embedder.embed = spy  # type: ignore[method-assign]
        report = ingest_text(
            "doc",
            "1. Fees\n    1. A. Pay now.\n2. Term\n    1. B. Three years.",
            tenant="t",
            store=store,
            embedder=embedder,
        )
        assert report.added == 1 and report.removed == 1
        assert len(seen) == 1 and len(seen[0]) == 1 and "Three years" in seen[0][0]
        stored = store.document_chunks("t", "doc")
        assert any("Three years" in h.text for h in stored) and not any("Two years" in h.text for h in stored)

    def test_stored_vectors_are_the_embeddings(self, store, embedder) -> None:  # type: ignore[no-untyped-def]
        ingest_text("doc", "Late payment accrues interest.", tenant="t", store=store, embedder=embedder)
        (stored,) = store.document_chunks("t", "doc")
        hits = store.search(embedder.embed_one(stored.text), k=1)
        assert hits[0].chunk_id == stored.chunk_id and hits[0].score == pytest.approx(1.0, abs=1e-5)

    def test_empty_text_is_invalid(self, store, embedder) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(InvalidInput):
            ingest_text("doc", "   ", tenant="t", store=store, embedder=embedder)

    def test_dimension_mismatch_is_internal_error(self, embedder) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(InternalError):
            ingest_text("doc", "text", tenant="t", store=InMemoryVectorStore(dim=32), embedder=embedder)


def test_ingest_records_the_content_hash_in_the_manifest(embedder) -> None:  # type: ignore[no-untyped-def]
    client = open_qdrant()
    try:
        store = QdrantVectorStore(client, "manifest", embedder.dim)
        store.ensure_collection()
        text = "1. Fees\n    1. A. Pay now.\n2. Term\n    1. B. Two years."
        first = ingest_text("doc", text, tenant="t", store=store, embedder=embedder)
        assert first.added >= 2 and store.document_hash("t", "doc") == text_sha256(text)
        again = ingest_text("doc", text, tenant="t", store=store, embedder=embedder)
        assert again.added == 0 and store.document_hash("t", "doc") == text_sha256(text)
        shorter = "1. Fees\n    1. A. Pay now."
        shrunk = ingest_text("doc", shorter, tenant="t", store=store, embedder=embedder)
        assert shrunk.removed >= 1 and store.document_hash("t", "doc") == text_sha256(shorter)
        assert not any("Two years" in h.text for h in store.document_chunks("t", "doc"))
        assert store.document_hash("other-tenant", "doc") is None
    finally:
        client.close()


class TestIngestPaths:
    def test_directories_are_walked_and_reported(self, tmp_path: Path, store, embedder) -> None:  # type: ignore[no-untyped-def]
        (tmp_path / "sub").mkdir()
        (tmp_path / "a.md").write_text(CONTRACT_MD)
        (tmp_path / "sub" / "b.txt").write_text("Plain text agreement. It has terms.")
        (tmp_path / "ignored.bin").write_bytes(b"\x00")
        report = ingest_paths([tmp_path], tenant="t", store=store, embedder=embedder)
        assert report.documents == 2
        assert report.chunks == report.added == len(store) > 0
        assert report.seconds > 0 and report.chunks_per_second > 0
        assert store.list_documents("t") == ["a", "b"]
        again = ingest_paths([tmp_path], tenant="t", store=store, embedder=embedder)
        assert again.added == 0 and again.unchanged == report.chunks

    def test_chunk_size_options_are_passed_through(self, tmp_path: Path, store, embedder) -> None:  # type: ignore[no-untyped-def]
        long = "1. Duties\n    1. All. " + " ".join(f"Provider shall do task number {i}." for i in range(80))
        (tmp_path / "long.md").write_text(long)
        small = ingest_paths([tmp_path], tenant="t", store=store, embedder=embedder, max_tokens=64, overlap=8)
        big = ingest_paths([tmp_path], tenant="u", store=store, embedder=embedder, max_tokens=400, overlap=8)
        assert small.chunks > big.chunks

    def test_missing_path_is_invalid_input(self, tmp_path: Path, store, embedder) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(InvalidInput, match="no such file"):
            ingest_paths([tmp_path / "nope"], tenant="t", store=store, embedder=embedder)

    def test_two_files_with_the_same_doc_id_are_refused(self, tmp_path: Path, store, embedder) -> None:  # type: ignore[no-untyped-def]
        (tmp_path / "x.md").write_text("one")
        (tmp_path / "x.txt").write_text("two")
        with pytest.raises(InvalidInput, match="doc_id"):
            ingest_paths([tmp_path], tenant="t", store=store, embedder=embedder)


def test_iter_document_paths_is_sorted_and_filtered(tmp_path: Path) -> None:
    for name in ("b.md", "a.html", "c.json"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in iter_document_paths([tmp_path])] == ["a.html", "b.md"]


def test_hashing_embedder_is_deterministic() -> None:
    emb = HashingEmbedder(dim=16)
    np.testing.assert_array_equal(emb.embed(["same words"]), emb.embed(["same words"]))
