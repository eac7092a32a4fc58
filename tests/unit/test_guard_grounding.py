"""Lexical grounding of summary sentences in retrieved chunks, and citation checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.guard.grounding import GroundingReport, canonical_text, content_terms, grounding, stem
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


# --- false removals (issue #11 item 4): each root cause, on made-up contract text ---------------------------
RECITAL = (
    "Lease | Background\n"
    "A. Ostrander Yards Limited owns the warehouse at 14 Kiln Road, Dunmore;\n"
    "B. the Tenant wishes to take a lease of Unit 3 for storing agricultural machinery."
)
COVER = (
    "Order Form | Details\n"
    "Vendor: Pelican Sensor Works Inc., 88 Dock Street, Portland, OR 97209\n"
    "Buyer: Tarnwood Farms LLC, 12 Mill Road, Salem, OR 97301"
)
CLAUSES = (
    "Order Form | 1. Products\n"
    "1.1 Vendor supplies soil-moisture probes, model SM-40, for up to 600 field stations.\n"
    "1.2 Vendor installs the probes within forty-five (45) days of the order."
)


def test_copied_sentences_fused_by_the_splitter_are_kept() -> None:
    """The extractive summary joins copied sentences with a space; one that ended with ';' or with no
    full stop (a table row, an address line) fuses with the next when the guard splits the summary."""
    fused_at_semicolon = (
        "Ostrander Yards Limited owns the warehouse at 14 Kiln Road, Dunmore; "
        "Vendor supplies soil-moisture probes, model SM-40, for up to 600 field stations."
    )
    # no punctuation at the join: the first piece ends a line of its chunk, the second starts one
    # (after the clause number "1.1", which the generator strips)
    fused_without_stop = (
        "Buyer: Tarnwood Farms LLC, 12 Mill Road, Salem, OR 97301 "
        "Vendor supplies soil-moisture probes, model SM-40, for up to 600 field stations."
    )
    chunks = [("r", RECITAL), ("c", COVER), ("p", CLAUSES)]
    report = grounding([fused_at_semicolon, fused_without_stop], chunks)
    assert report.unsupported == []
    assert report.verbatim == [0, 1]


def test_words_glued_mid_sentence_from_two_chunks_are_not_copied_text() -> None:
    """Runs may only meet at punctuation or at sentence/line edges of both chunks, so splicing the
    middle of one clause onto another is not 'copied'."""
    spliced = "Vendor installs the probes within 600 field stations."
    report = grounding([spliced], [("c", COVER), ("p", CLAUSES)])
    assert report.verbatim == []  # judged by its words (all in clause 1), not taken as a copy
    across_chunks = "Buyer: Tarnwood Farms LLC, 12 Mill Road, installs the probes within forty-five (45) days."
    assert grounding([across_chunks], [("c", COVER), ("p", CLAUSES)]).unsupported == [0]


def test_truncated_quotation_with_an_ellipsis_is_kept() -> None:
    chunks = [("p", CLAUSES)]
    report = grounding(["Vendor supplies soil-moisture probes, model SM-40, for up to 600 fie…"], chunks)
    assert report.unsupported == [] and report.verbatim == [0]
    middle = grounding(["Vendor supplies soil-moisture probes ... for up to 600 field stations."], chunks)
    assert middle.unsupported == []


@pytest.mark.parametrize(
    ("sentence", "chunk"),
    [
        ("Effective date: 2026-03-09.", "This Deed takes effect on 9 March 2026 (the Effective Date)."),
        ("The deed takes effect on March 9, 2026.", "This Deed takes effect on the 9th day of March, 2026."),
        ("Credit limit: USD 4,000,000.", "The bank extends a credit limit of US$4 million to the Borrower."),
        ("The licence runs for 36 months.", "The licence runs for three (3) years from delivery."),
        ("Notice to terminate: 90 days.", "Either side may terminate on three months' notice."),
        ("Late payments carry 4% interest.", "Late payments carry interest of four per cent per year."),
        ("The deposit is EUR 12,500.00.", "The deposit is €12,500, held by the agent."),
        ("Each delivery window is 14 days.", "Each delivery window is a fourteen (14)-day period."),
    ],
)
def test_a_fact_written_in_another_format_is_kept(sentence: str, chunk: str) -> None:
    assert grounding([sentence], [("k", chunk)]).unsupported == []


def test_labelled_field_sentence_may_draw_its_items_from_different_chunks() -> None:
    chunks = [("a", "Parties | (1)\nOSTRANDER YARDS LIMITED, a company registered in Ireland;"),
              ("b", "Parties | (2)\nKESTREL COLD STORE LTD, a company registered in Wales.")]  # fmt: skip
    report = grounding(["Parties: Ostrander Yards Limited and Kestrel Cold Store Ltd."], chunks)
    assert report.unsupported == [] and report.support == {0: "a"}
    wrong = grounding(["Parties: Ostrander Yards Limited and Harbourline Freight Ltd."], chunks)
    assert wrong.unsupported == [0]


def test_html_tag_stripping_does_not_eat_text_between_comparison_signs() -> None:
    chunk = ("k", "Service credits apply when uptime is < 99.5 percent in a month and response time > 4 hours.")
    assert grounding(["Service credits apply when uptime is < 99.5 percent in a month."], [chunk]).unsupported == []


# --- a changed fact is still caught -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sentence",
    [
        "Vendor installs the probes within 60 days of the order.",  # number
        "Vendor installs the probes within sixty (60) days of the order.",  # number in words
        "Effective date: 2026-04-09.",  # date
        "This Deed takes effect on 9 March 2027.",  # year
        "The licence runs for 48 months.",  # duration
        "Credit limit: USD 5,000,000.",  # amount
        "The licence is governed by the laws of Portugal.",  # governing law
        "Governing law: Portugal.",
        "Harbourline Freight Ltd supplies soil-moisture probes for up to 600 field stations.",  # party
        "Vendor shall maintain product liability insurance of USD 2,000,000.",  # invented clause
    ],
)
def test_a_changed_or_invented_fact_is_removed(sentence: str) -> None:
    chunks = [
        ("p", CLAUSES),
        ("c", COVER),
        ("d", "This Deed takes effect on 9 March 2026 (the Effective Date)."),
        ("t", "The licence runs for three (3) years from delivery and is governed by the laws of Ireland."),
        ("m", "The bank extends a credit limit of US$4 million to the Borrower."),
    ]
    assert grounding([sentence], chunks).unsupported == [0]


def test_canonical_text_forms() -> None:
    assert set(canonical_text("1 February 2025; February 1, 2025; 2025-02-01").replace(";", " ").split()) == {
        "d20250201"
    }
    assert "10000000" in canonical_text("USD 10 million")
    assert canonical_text("USD 10,000,000").split() == ["usd", "10000000"]
    assert canonical_text("clause 3.2.1 and 14.20").split() == ["clause", "3p2p1", "and", "14p2"]
    assert set(canonical_text("01/02/2025", alternatives=True).split()) == {"d20250201", "d20250102"}


def test_a_quote_cut_mid_word_at_a_length_limit_is_still_copied_text() -> None:
    """A model (or the fake server) cuts a quote at N characters without an ellipsis: the last word is
    the start of the chunk's word, capitalised or not; a cut number is not taken as a prefix."""
    chunk = ("7.2 Where the Tenant fails to remedy the breach, the Landlord may recover Arrears together with "
             "interest at four percent above the base rate of Barclays Bank plc.")
    cut = "Where the Tenant fails to remedy the breach, the Landlord may recover Arrears together with inter"
    assert grounding([cut], [("c7", chunk)]).verbatim == [0]
    capitalised = "the Landlord may recover Arrears together with interest at four percent above the base rate of Barc"
    assert grounding([capitalised], [("c7", chunk)]).unsupported == []
    assert grounding([cut + "."], [("c7", chunk)]).verbatim == [], "a finished sentence is not cut short"
    wrong = [("c8", "The deposit of USD 1000 is held by the Landlord in a separate account for the Tenant.")]
    assert grounding(["The deposit of USD 100"], wrong).verbatim == []


def test_a_term_between_two_dates_of_one_chunk_is_supported_and_another_is_not() -> None:
    chunk = [("c1", "The lease term begins on 1 May 2026 and ends at midnight on 30 April 2027.")]
    assert grounding(["Term: 12 months."], chunk).unsupported == []
    assert grounding(["Term: 18 months."], chunk).unsupported == [0]
    assert grounding(["Effective date: 2026-05-01."], [("c1", "It takes effect on 2026/05/01.")]).unsupported == []


def test_a_copied_sentence_with_an_ambiguous_numeric_date_is_copied_text() -> None:
    chunk = [("c1", "Letter dated 03/04/2025 to Vence Consulting LLC about the forecasting models")]
    report = grounding(["Letter dated 03/04/2025 to Vence Consulting LLC about the forecasting models."], chunk)
    assert report.unsupported == [] and report.verbatim == [0]
