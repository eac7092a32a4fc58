"""Lexical grounding of summary sentences in retrieved chunks, and citation checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.guard.grounding import GroundingReport, content_terms, grounding, stem
from pipeline.guard.scan import split_blocks

SHARED = Path(__file__).resolve().parents[2].parent / "shared"

CHUNKS = [
    (
        "c1",
        "Customer may terminate this Agreement upon 30 days' written notice if Provider materially breaches.",
    ),
    (
        "c2",
        '<span class="coverpage_link">Provider</span> invoices Fees monthly; all Fees are in U.S. Dollars.',
    ),
    ("c3", "Each party will protect the other's Confidential Information using reasonable care."),
]


@pytest.mark.parametrize(
    ("words", "shared_stem"),
    [
        (["terminate", "terminated", "terminates", "termination", "terminating"], "terminat"),
        (["agree", "agreed", "agrees", "agreement"], "agre"),
        (["party", "parties"], "parti"),
        (["process", "processes", "processed", "processing"], "process"),
    ],
)
def test_stemming_conflates_inflections(words: list[str], shared_stem: str) -> None:
    assert {stem(word) for word in words} == {shared_stem}


def test_content_terms_drop_stopwords_markup_and_keep_numbers() -> None:
    terms = content_terms('The <span class="x">Provider</span> shall pay within 30 days.')
    assert terms == {"provid", "pay", "30", "day"}


def test_supported_and_unsupported_sentences() -> None:
    report = grounding(
        [
            "The customer can terminate the agreement with 30 days notice after a material breach.",
            "Fees are invoiced monthly in US dollars.",
            "The provider guarantees 99.9% uptime with service credits.",
        ],
        CHUNKS,
        threshold=0.6,
    )
    assert isinstance(report, GroundingReport)
    assert report.support == {0: "c1", 1: "c2"}
    assert report.unsupported == [2]
    assert report.score == pytest.approx(2 / 3, abs=1e-3)


def test_support_must_come_from_one_chunk_not_the_union() -> None:
    sentence = "Customer may terminate on written notice and each party protects Confidential Information."
    report = grounding([sentence], CHUNKS, threshold=0.8)
    assert report.unsupported == [0]
    union = [("all", " ".join(text for _, text in CHUNKS))]
    assert grounding([sentence], union, threshold=0.8).unsupported == []


def test_wrong_number_is_not_grounded() -> None:
    sentence = "Customer may terminate the agreement on 60 days written notice."
    assert grounding([sentence], CHUNKS).unsupported == [0]
    assert grounding([sentence], CHUNKS, strict_numbers=False).support == {0: "c1"}


def test_threshold_controls_strictness() -> None:
    sentence = "Provider invoices Fees monthly and may suspend access for late payment."
    assert grounding([sentence], CHUNKS, threshold=0.9).score == 0.0
    assert grounding([sentence], CHUNKS, threshold=0.3).score == 1.0


def test_citation_markers_are_ignored() -> None:
    report = grounding(["Fees are invoiced monthly in U.S. dollars [c2]."], CHUNKS)
    assert report.support == {0: "c2"}


def test_edge_cases() -> None:
    assert grounding([], CHUNKS) == GroundingReport(score=1.0, unsupported=[], support={})
    assert grounding(["Fees are invoiced monthly."], []).unsupported == [0]
    contentless = grounding(["Yes.", "Fees are invoiced monthly."], CHUNKS)
    assert contentless.score == 1.0 and contentless.support == {1: "c2"}


def test_expected_answer_phrases_are_grounded_in_their_contract() -> None:
    rows = [json.loads(line) for line in (SHARED / "eval" / "questions.dev.jsonl").read_text().splitlines()]
    ungrounded = []
    for row in rows:
        text = (SHARED / "corpus" / "contracts" / f"{row['doc']}.md").read_text(encoding="utf-8")
        chunks = [(n, text[start:end]) for n, (start, end) in enumerate(split_blocks(text))]
        if grounding([row["expect"]], chunks, threshold=0.8).unsupported:
            ungrounded.append(row["expect"])
    assert rows and ungrounded == []
