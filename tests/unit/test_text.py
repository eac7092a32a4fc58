from __future__ import annotations

import pytest

from pipeline.text import normalize_for_match, split_sentences, strip_markup


class TestStripMarkup:
    def test_inline_spans_vanish_without_gaps(self) -> None:
        raw = (
            '<span class="coverpage_link">Customer</span>’s data and <span class="x" id="1">Provider</span>.'
        )
        assert strip_markup(raw) == "Customer’s data and Provider."

    def test_comments_are_dropped_entirely(self) -> None:
        assert strip_markup("Keep <!-- secret\nnote --> this") == "Keep this"

    def test_entities_are_unescaped(self) -> None:
        assert (
            strip_markup("Fees &amp; Taxes &lt;net&gt; &#8220;quoted&#8221;") == "Fees & Taxes <net> “quoted”"
        )

    def test_markdown_emphasis_links_and_images_become_text(self) -> None:
        raw = (
            "The **Disclosing Party** may *not* see [the terms](https://x.test/t) "
            "or ![logo](l.png) or __this__."
        )
        assert strip_markup(raw) == "The Disclosing Party may not see the terms or logo or this."

    def test_snake_case_and_blanks_survive(self) -> None:
        assert strip_markup("field_name_here and ____ blank") == "field_name_here and ____ blank"

    def test_markdown_headings_are_kept(self) -> None:
        out = strip_markup("# Title\n\n## 2. Payment\n\nText.")
        assert out.splitlines()[0] == "# Title"
        assert "## 2. Payment" in out.splitlines()

    def test_html_headings_become_markdown_headings(self) -> None:
        out = strip_markup(
            "<html><head><title>x</title></head><body><h2>Term</h2><p>One.</p><p>Two.</p></body>"
        )
        lines = [line for line in out.splitlines() if line]
        assert lines == ["## Term", "One.", "Two."]

    def test_script_and_style_content_is_removed(self) -> None:
        assert strip_markup("<style>p{color:red}</style>Hi<script>alert(1)</script>") == "Hi"

    def test_nested_list_indentation_is_kept(self) -> None:
        raw = '1. <span class="header_2">Service</span>\n    1. <span class="header_3">Access.</span>  Text.'
        assert strip_markup(raw).splitlines() == ["1. Service", "    1. Access. Text."]

    def test_table_rules_are_removed(self) -> None:
        assert strip_markup("| a | b |\n|:--- | :---: |\n| 1 | 2 |").splitlines() == [
            "| a | b |",
            "| 1 | 2 |",
        ]


class TestNormalizeForMatch:
    def test_unifies_quotes_dashes_case_and_spacing(self) -> None:
        assert normalize_for_match("The  “Provider’s”\tFees—ALL") == normalize_for_match(
            'the "provider\'s" fees - all'
        )

    def test_strips_punctuation(self) -> None:
        assert normalize_for_match("all Fees are in U.S. Dollars.") == "all fees are in u s dollars"

    def test_phrase_containment_survives_markup_leftovers(self) -> None:
        chunk = "Provider may use all Feedback freely, without any restriction or obligation."
        assert normalize_for_match("Feedback freely without any restriction") in normalize_for_match(chunk)

    def test_different_words_do_not_match(self) -> None:
        assert normalize_for_match("destroy all data") not in normalize_for_match("return all data")


class TestSplitSentences:
    @pytest.mark.parametrize(
        "text",
        [
            "Acme Inc. shall pay the Fees.",
            "See Sec. 2.1 of the Agreement for details.",
            "Some items, e.g. Fees, are due.",
            "All Fees are in U.S. Dollars and due on time.",
            "Northwind Analytics, Inc. and Harbor Logistics LLC agree.",
            "The rate is 2.5 percent per No. 7 schedule.",
        ],
    )
    def test_does_not_split_inside_legal_references(self, text: str) -> None:
        assert split_sentences(text) == [text]

    def test_splits_real_sentence_ends(self) -> None:
        text = "The term is one year. Either party may terminate! Is notice required? Yes."
        assert split_sentences(text) == [
            "The term is one year.",
            "Either party may terminate!",
            "Is notice required?",
            "Yes.",
        ]

    def test_list_marker_at_start_is_not_a_sentence(self) -> None:
        assert split_sentences("1. Introduction. This MNDA applies.")[0] == "1. Introduction."

    def test_lowercase_continuation_is_not_split(self) -> None:
        assert len(split_sentences("Payment is due in 30 days. after that interest accrues.")) == 1

    def test_blank_lines_end_sentences(self) -> None:
        assert split_sentences("First paragraph without period\n\nSecond one.") == [
            "First paragraph without period",
            "Second one.",
        ]

    def test_closing_quote_stays_with_its_sentence(self) -> None:
        assert split_sentences('It is called the "Agreement." The parties agree.') == [
            'It is called the "Agreement."',
            "The parties agree.",
        ]

    def test_empty_text_has_no_sentences(self) -> None:
        assert split_sentences("  \n ") == []
