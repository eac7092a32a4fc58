from __future__ import annotations

import uuid

import pytest

from pipeline.retrieval.chunking import chunk_document, chunk_id_for, document_title, parse_sections
from pipeline.retrieval.embeddings import minilm_token_count
from pipeline.text import normalize_for_match, strip_markup

CONTRACT = """# Services Agreement

This agreement is between Acme Inc. and Beta LLC.

1. <span class="header_2">Fees</span>
    1. <span class="header_3">Payment.</span>  Customer will pay all Fees within 30 days. \
All Fees are in U.S. Dollars.
    2. <span class="header_3">Taxes.</span>  Fees exclude taxes.
2. <span class="header_2">Term</span>
    1. <span class="header_3">Renewal.</span>  The Agreement renews each year.
        a. Either party may give notice of non-renewal.
"""


def words(text: str) -> int:
    """A cheap deterministic counter so chunk sizes are easy to reason about."""
    return len(text.split())


class TestParseSections:
    def test_numbered_clauses_become_sections_with_absolute_numbers(self) -> None:
        title, sections = parse_sections(strip_markup(CONTRACT))
        assert title == "Services Agreement"
        assert [s.title for s in sections] == ["", "1. Fees", "2. Term"]
        assert sections[1].paragraphs[0].startswith("1.1 Payment.")
        assert sections[2].paragraphs[1] == "2.1.a Either party may give notice of non-renewal."

    def test_markdown_headings_become_sections(self) -> None:
        _, sections = parse_sections(
            "# Doc\n\n## 1. Definitions\n\n1.1 Term means x.\n\n## 2. Payment\n\nPay."
        )
        assert [s.title for s in sections] == ["1. Definitions", "2. Payment"]
        assert sections[0].paragraphs == ["1.1 Term means x."]

    def test_inline_title_of_top_level_clause(self) -> None:
        _, sections = parse_sections(
            "1. Introduction. This MNDA allows disclosure.\n\n2. Exceptions. None apply."
        )
        assert [s.title for s in sections] == ["1. Introduction", "2. Exceptions"]
        assert sections[0].paragraphs == ["1. Introduction. This MNDA allows disclosure."]


class TestChunkDocument:
    def test_chunks_carry_title_and_section_prefix(self) -> None:
        chunks = chunk_document("services", strip_markup(CONTRACT), count_tokens=words)
        fees = [c for c in chunks if c.section == "1. Fees"]
        assert fees and fees[0].text.startswith("Services Agreement | 1. Fees\n")
        assert "All Fees are in U.S. Dollars." in fees[0].text

    def test_sections_never_share_a_chunk(self) -> None:
        chunks = chunk_document("services", strip_markup(CONTRACT), count_tokens=words)
        for chunk in chunks:
            assert not ("Payment." in chunk.text and "Renewal." in chunk.text)

    def test_positions_are_dense_and_ordered(self) -> None:
        chunks = chunk_document("services", strip_markup(CONTRACT), count_tokens=words)
        assert [c.position for c in chunks] == list(range(len(chunks)))

    def test_ids_are_stable_uuid5_of_doc_hash_position(self) -> None:
        first = chunk_document("services", strip_markup(CONTRACT), count_tokens=words)
        second = chunk_document("services", strip_markup(CONTRACT), count_tokens=words)
        assert [c.chunk_id for c in first] == [c.chunk_id for c in second]
        chunk = first[0]
        assert chunk.chunk_id == chunk_id_for("services", chunk.content_hash, chunk.position)
        assert uuid.UUID(chunk.chunk_id).version == 5

    def test_changing_one_section_keeps_other_ids(self) -> None:
        before = chunk_document("services", strip_markup(CONTRACT), count_tokens=words)
        changed = CONTRACT.replace("renews each year", "renews every two years")
        after = chunk_document("services", strip_markup(changed), count_tokens=words)
        assert before[1].chunk_id == after[1].chunk_id
        assert {c.chunk_id for c in before} != {c.chunk_id for c in after}

    def test_other_doc_id_gives_other_ids(self) -> None:
        a = chunk_document("a", strip_markup(CONTRACT), count_tokens=words)
        b = chunk_document("b", strip_markup(CONTRACT), count_tokens=words)
        assert not {c.chunk_id for c in a} & {c.chunk_id for c in b}

    def test_long_section_is_split_within_budget_with_overlap(self) -> None:
        sentences = " ".join(f"Sentence number {i} says the Provider shall do thing {i}." for i in range(60))
        text = f"# Big\n\n1. Obligations\n    1. Duties. {sentences}"
        chunks = chunk_document("big", text, max_tokens=80, overlap_tokens=20, count_tokens=words)
        assert len(chunks) > 3
        assert all(words(c.text) <= 80 for c in chunks)
        for previous, current in zip(chunks, chunks[1:], strict=False):
            body = current.text.split("\n", 1)[1]
            last_sentence = previous.text.rsplit(". ", 1)[-1].rstrip(".")
            assert last_sentence in body  # the previous chunk's tail is repeated
        every = " ".join(c.text for c in chunks)
        assert all(f"thing {i}." in every for i in range(60))

    def test_overlap_zero_repeats_nothing(self) -> None:
        sentences = " ".join(f"Clause {i} applies here." for i in range(40))
        chunks = chunk_document(
            "x", f"1. Terms\n    1. A. {sentences}", max_tokens=40, overlap_tokens=0, count_tokens=words
        )
        bodies = " ".join(c.text.split("\n", 1)[1] for c in chunks)
        assert bodies.count("Clause 7 applies") == 1

    def test_giant_sentence_is_hard_split(self) -> None:
        text = "1. List\n    1. Items. " + ", ".join(f"item{i}" for i in range(300)) + "."
        chunks = chunk_document("x", text, max_tokens=60, overlap_tokens=10, count_tokens=words)
        assert all(words(c.text) <= 60 for c in chunks)
        assert "item299" in chunks[-1].text

    def test_default_counter_is_the_embedding_tokenizer(self) -> None:
        chunks = chunk_document("services", strip_markup(CONTRACT), max_tokens=40, overlap_tokens=8)
        assert all(minilm_token_count(c.text) <= 40 for c in chunks)

    def test_expected_phrase_is_whole_in_some_chunk(self) -> None:
        chunks = chunk_document("services", strip_markup(CONTRACT), max_tokens=40, overlap_tokens=8)
        needle = normalize_for_match("All Fees are in U.S. Dollars")
        assert any(needle in normalize_for_match(c.text) for c in chunks)

    @pytest.mark.parametrize("max_tokens, overlap", [(10, 0), (100, 60), (100, -1)])
    def test_rejects_bad_sizes(self, max_tokens: int, overlap: int) -> None:
        with pytest.raises(ValueError):
            chunk_document("x", "text", max_tokens=max_tokens, overlap_tokens=overlap, count_tokens=words)


class TestDocumentTitle:
    def test_adds_readable_doc_id_when_heading_is_generic(self) -> None:
        assert document_title("mutual-nda", "Standard Terms") == "Mutual NDA: Standard Terms"

    def test_keeps_heading_when_it_already_names_the_document(self) -> None:
        assert (
            document_title("cloud-service-agreement", "Cloud Service Agreement") == "Cloud Service Agreement"
        )

    def test_opaque_ids_are_left_out(self) -> None:
        assert document_title("contract-000123", "Master Agreement") == "Master Agreement"
