"""Field extraction on phrasings that are NOT in the golden set (evals/summary/): it must generalise."""

from __future__ import annotations

from datetime import date

import pytest

from pipeline.generation.fields import (
    canonical_law,
    currency_of,
    day_first,
    extract_from_text,
    money_amounts,
    normalize_party,
    notice_days,
    parse_date,
    term_months_of,
)
from workers.eval_scoring import field_correct, score_summary


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("signed on 7 March 2024", date(2024, 3, 7)),
        ("the 21st day of October, 2026", date(2026, 10, 21)),
        ("this 3rd day of May 2023", date(2023, 5, 3)),
        ("as of August 9, 2024", date(2024, 8, 9)),
        ("on Sept. 14, 2025", date(2025, 9, 14)),
        ("2026-01-31", date(2026, 1, 31)),
        ("on 25/12/2024", date(2024, 12, 25)),
        ("on 12/25/2024", date(2024, 12, 25)),
    ],
)
def test_dates_in_us_uk_and_numeric_forms(text: str, expected: date) -> None:
    assert parse_date(text) == expected


def test_ambiguous_numeric_dates_follow_the_document() -> None:
    uk = "The Purchaser, Tollgate Mills Limited, pays £4,000. Completion is on 03/04/2025."
    us = "The Buyer, Redfern Tools Inc., pays $4,000. Closing is on 03/04/2025."
    assert day_first(uk) and parse_date(uk) == date(2025, 4, 3)
    assert not day_first(us) and parse_date(us) == date(2025, 3, 4)
    # one unambiguous date decides for the whole document
    assert day_first("Signed 28/02/2025. Starts 03/04/2025.")


def test_uk_recital_between_numbered_parties_with_defined_short_names() -> None:
    text = (
        "THIS DEED is made on 4 July 2024\n\n"
        "BETWEEN:\n\n"
        "(1) MARRAM COASTAL HOLDINGS LIMITED (company number 11223344) whose registered office is at 5 Dune Road, "
        "Norfolk (the \"Owner\"); and\n\n"
        "(2) FENBRIDGE LOGISTICS PLC, a company incorporated in England (the \"Operator\").\n\n"
        "IT IS AGREED as follows:\n\n"
        "1. The Operator shall operate the terminal."
    )
    fields = extract_from_text(text)
    assert fields.parties == ["Marram Coastal Holdings Limited", "Fenbridge Logistics plc"]
    assert fields.defined_names["Operator"] == "Fenbridge Logistics plc"


def test_by_and_between_us_style_and_three_parties_by_and_among() -> None:
    us = extract_from_text(
        "This Reseller Agreement is made as of April 2, 2024 by and between Oakhurst Devices, Inc., a Texas "
        "corporation (\"Oakhurst\"), and Pelican Bay Supply Co., LLC, a Florida limited liability company "
        "(\"Reseller\"). Oakhurst and Reseller agree as follows."
    )
    assert us.parties == ["Oakhurst Devices, Inc.", "Pelican Bay Supply Co., LLC"]
    three = extract_from_text(
        "This Escrow Agreement is entered into by and among Alder Ridge Software GmbH (\"Depositor\"), "
        "Weston Clinics Limited (\"Beneficiary\") and Ironvault Escrow Services B.V. (\"Escrow Agent\")."
    )
    assert [normalize_party(p) for p in three.parties] == [
        "alder ridge software gmbh", "weston clinics ltd", "ironvault escrow services bv"]


def test_parties_from_a_cover_table_when_there_is_no_recital() -> None:
    text = (
        "| Field | Details |\n|---|---|\n"
        "| Seller | Quarrybank Stone Ltd, 4 Mill Yard, Sheffield |\n"
        "| Purchaser | Harlow Civic Builders Limited, 20 Park Row, Leeds |\n"
        "| Commencement Date | 2 June 2025 |\n"
        "| Contract Term | 18 months |\n"
    )
    fields = extract_from_text(text)
    assert fields.parties == ["Quarrybank Stone Ltd", "Harlow Civic Builders Limited"]
    assert fields.effective_date == "2025-06-02"
    assert fields.term_months == 18


def test_effective_date_is_not_the_signature_or_an_earlier_agreement() -> None:
    text = (
        "This Third Amendment is dated May 1, 2025 and is effective as of July 1, 2025 (the \"Third Amendment "
        "Effective Date\") between Birchwood Labs LLC and Cinder Analytics Corp.\n\n"
        "WHEREAS, the parties are parties to a Services Agreement dated as of January 10, 2020 (the \"Services "
        "Agreement\").\n\n"
        "Signed: April 28, 2025"
    )
    assert extract_from_text(text).effective_date == "2025-07-01"


def test_commencement_date_defined_apart_from_the_agreement_date() -> None:
    text = (
        "This Agreement is dated 10 January 2026.\n\n"
        "\"Go-Live Date\" means 1 March 2026, and the Services start on the Go-Live Date.\n\n"
        "Signed by the Supplier on 9 January 2026."
    )
    assert extract_from_text(text).effective_date == "2026-03-01"
    lease = "The lease is granted on 5 May 2025. The term shall commence on 24 June 2025 and run for 5 years."
    assert extract_from_text(lease).effective_date == "2025-06-24"


@pytest.mark.parametrize(
    ("text", "months"),
    [
        ("Duration\n\nThe Contract shall remain in force for a period of thirty-six (36) months from the Start Date.",
         36),
        ("The initial term of this Agreement is 2 years, renewing annually thereafter.", 24),
        ("This Agreement continues until terminated by either party on three months' notice.", "indefinite"),
        ("The employee is employed at will and the employment has no fixed term.", "indefinite"),
        ("| Term | Four (4) years from the Commencement Date |", 48),
    ],
)
def test_term_from_duration_clauses_tables_and_open_ended_wording(text: str, months: int | str) -> None:
    assert extract_from_text(text).term_months == months


def test_survival_and_warranty_periods_are_not_the_term() -> None:
    text = (
        "The Supplier warrants the goods for 24 months from delivery.\n\n"
        "Confidentiality obligations survive for seven (7) years after termination.\n\n"
        "Term. This Agreement shall continue for an initial period of twelve (12) months."
    )
    assert extract_from_text(text).term_months == 12


def test_law_payment_cap_and_notice() -> None:
    text = (
        "Fees. The Customer shall pay a monthly retainer of £7,250. Late sums carry interest of 3%.\n\n"
        "Liability. The Supplier's total liability shall not exceed £400,000. Insurance cover of £2,000,000 "
        "is maintained.\n\n"
        "Termination. A party may terminate for material breach not remedied within 20 days of notice. Either "
        "party may terminate this Agreement for convenience by giving not less than two months' written notice.\n\n"
        "Law. This Agreement is governed by English law."
    )
    fields = extract_from_text(text)
    assert fields.payment == "£7,250 per month"
    assert fields.liability_cap == "£400,000"
    assert fields.termination_notice_days == 60
    assert fields.governing_law == "England and Wales"


def test_a_contract_without_payment_or_cap_leaves_them_empty() -> None:
    fields = extract_from_text(
        "The Recipient shall keep the information confidential. Neither party shall be liable for indirect loss. "
        "This Agreement shall be construed in accordance with the laws of the State of Illinois."
    )
    assert fields.payment is None and fields.liability_cap is None
    assert fields.governing_law == "Illinois"


def test_normalisation_rules_of_the_scoring() -> None:
    assert canonical_law("the laws of the Commonwealth of Virginia, without regard to conflicts") == "virginia"
    assert canonical_law("English law") == canonical_law("England & Wales") == "england and wales"
    assert normalize_party("THE ACME TRADING COMPANY LIMITED") == normalize_party("Acme Trading Co Ltd")
    assert notice_days("six (6) weeks") == 42 and notice_days(45) == 45
    assert term_months_of("3 years") == 36 and term_months_of("until terminated") == "indefinite"
    key = {"parties": ["Acme Ltd"], "effective_date": "2025-02-01", "term_months": 24, "governing_law": "New York",
           "payment": "$1,000 per month", "liability_cap": None, "termination_notice": "30 days"}
    llm_style = {"parties": ["ACME LIMITED"], "effective_date": "February 1, 2025", "term": "two (2) years",
                 "governing_law": "laws of the State of New York", "payment": "USD 1,000 monthly",
                 "liability_cap": None, "termination_notice": "one month"}
    assert all(score_summary(llm_style, key).values())
    assert not field_correct("liability_cap", None, {"liability_cap": "$5,000"})


@pytest.mark.parametrize(
    ("text", "cap"),
    [
        ("Subject to Section 8.2, the Supplier's liability shall not exceed the amount stated in Section 8.2 of the "
         "Order Form.", "the amount stated in Section 8.2 of the Order Form"),
        ("Except for claims under Clause 12. the Provider's aggregate liability shall not exceed the Fees paid in "
         "the prior 12 months.", "the Fees paid in the prior 12 months"),
        ("The Vendor's liability under Art. 9 shall not exceed U.S. $500,000 per claim.", "U.S. $500,000 per claim"),
        ("The Licensor's liability under Article 9.1 shall not exceed $1,000,000.00 in the aggregate.",
         "$1,000,000.00 in the aggregate"),
        ("The liability of Acme Inc. (the \"Vendor\") is limited to the fees paid under Clause 4.3 (the \"Cap\").",
         "the fees paid under Clause 4.3"),
    ],
)
def test_liability_cap_reads_past_cross_references_and_abbreviations(text: str, cap: str) -> None:
    assert extract_from_text(text).liability_cap == cap


def test_cross_reference_ending_a_sentence_still_ends_it() -> None:
    text = ("Each party's total liability shall not exceed the fees paid under Section 8. In no event shall either "
            "party be liable for lost profits.")
    assert extract_from_text(text).liability_cap == "the fees paid under Section 8"


def test_hereinafter_defined_names_in_indian_and_canadian_recitals() -> None:
    indian = (
        "This Agreement is executed at Pune on 3 March 2026 by and between:\n\n"
        "Suryansh Textiles Private Limited, a company incorporated under the Companies Act, 2013 and having its "
        "registered office at 4 FC Road, Pune (hereinafter referred to as the \"Buyer\", which expression shall unless "
        "repugnant to the context include its successors and permitted assigns) of the ONE PART;\n\nAND\n\n"
        "Nilgiri Looms Limited, a company incorporated under the Companies Act, 1956 and having its registered office "
        "at 9 Mount Road, Chennai (hereinafter called the \"Seller\") of the OTHER PART.\n\n"
        "WHEREAS the Buyer wishes to buy fabric."
    )
    fields = extract_from_text(indian)
    assert fields.parties == ["Suryansh Textiles Private Limited", "Nilgiri Looms Limited"]
    assert fields.defined_names["Seller"] == "Nilgiri Looms Limited"
    canadian = (
        "AMONG:\n\nBOREAL FREIGHT INC., a corporation existing under the laws of Alberta\n(hereinafter the \"Carrier\")"
        "\n\n- and -\n\nPRAIRIE GRAIN LIMITED, a corporation existing under the laws of Manitoba\n"
        "(hereinafter the \"Shipper\")\n\nARTICLE 1 - INTERPRETATION"
    )
    assert extract_from_text(canadian).parties == ["Boreal Freight Inc.", "Prairie Grain Limited"]


@pytest.mark.parametrize(
    ("text", "months"),
    [
        ("1. Term. This agreement starts on 1 April 2026 and ends on 31 March 2028, unless ended earlier.", 24),
        ("The Lease runs from 01/07/2026 to 30/06/2031 inclusive. The Tenant pays £1,000 per month.", 60),
        ("This Agreement takes effect on 1 March 2026 (the \"Effective Date\").\n\n"
         "3. Term. This Agreement commences on the Effective Date and expires on 28 February 2027.", 12),
        ("The term of this Agreement under this Article 3 shall commence on the Effective Date and shall expire on "
         "the third (3rd) anniversary thereof.", 36),
        ("It starts on 1 May 2026. It lasts for 18 months. After that it carries on month by month.", 18),
    ],
)
def test_term_written_as_dates_anniversaries_or_plain_english(text: str, months: int) -> None:
    assert extract_from_text(text).term_months == months


def test_a_delivery_deadline_is_not_a_term() -> None:
    text = ("This Agreement takes effect on 1 March 2026.\n\n"
            "The Supplier shall deliver the goods by 30 June 2026 and the Buyer shall pay within 30 days.")
    assert extract_from_text(text).term_months is None


def test_money_in_dollar_codes_and_indian_digit_grouping() -> None:
    assert extract_from_text("The Customer shall pay the Developer a fee of CAD $320,000.").payment == "CAD $320,000"
    assert currency_of("CAD $320,000") == "CAD" and currency_of("NZ$ 4,000") == "NZD"
    indian = extract_from_text("The Client shall pay a fixed monthly fee of INR 4,50,000 (Rupees Four Lakh Fifty "
                               "Thousand only), exclusive of GST.")
    assert indian.payment == "INR 4,50,000 per month"
    assert money_amounts("Rs. 12,50,000 and INR 4,50,000") == [(1_250_000.0, "INR"), (450_000.0, "INR")]
    assert money_amounts("Mrs 5 Smith") == []


@pytest.mark.parametrize(
    ("text", "cap"),
    [
        ("The Vendor's liability is not to exceed $75,000.", "$75,000"),
        ("The aggregate liability of the Service Provider under Clause 7. and otherwise shall in no case exceed the "
         "fees received by it in the six (6) months preceding the claim.",
         "the fees received by it in the six (6) months preceding the claim"),
        ("IN NO EVENT SHALL THE DEVELOPER'S AGGREGATE LIABILITY UNDER THIS AGREEMENT EXCEED CAD $500,000.",
         "CAD $500,000"),
        ("The most we will pay you for all claims under this agreement is £100,000 in total.", "£100,000 in total"),
        ("The most the Supplier will be liable for in any year is the Charges paid in that year.",
         "the Charges paid in that year"),
    ],
)
def test_liability_cap_in_inverted_and_plain_english_wording(text: str, cap: str) -> None:
    assert extract_from_text(text).liability_cap == cap


@pytest.mark.parametrize(
    ("text", "law"),
    [
        ("The laws of Scotland apply to this agreement.", "Scotland"),
        ("English law governs this Agreement and any dispute arising from it.", "England and Wales"),
        ("The law in force in the State of Victoria shall apply to this Contract.", "Victoria"),
    ],
)
def test_governing_law_as_the_subject_of_the_sentence(text: str, law: str) -> None:
    assert extract_from_text(text).governing_law == law


def test_prose_after_a_stray_between_and_bare_roles_are_not_parties() -> None:
    template = (
        "1. Ownership. As between the parties, Customer (a) retains all right, title, and interest in and to all "
        "Input, and (b) owns all Output.\n\n"
        "2. \"Agreement\" means the Cover Page between Provider and Company that incorporates these Standard Terms."
    )
    assert extract_from_text(template).parties == []
    named = "This Agreement is made between Dana K. Whitfield and The Regents of Westmoor University."
    assert extract_from_text(named).parties == ["Dana K. Whitfield", "The Regents of Westmoor University"]


def test_questions_credit_sentences_that_state_the_kind_of_fact_asked_for() -> None:
    from pipeline.generation.extractive import _answer_type_bonus

    split = "How are the licence fees shared between the two resellers?"
    assert _answer_type_bonus(split, "Reseller A receives thirty percent (30%) and Reseller B 70%.") > 0
    assert _answer_type_bonus(split, "The licence fees are shared between the resellers quarterly.") == 0
    charged = "What is charged for storage above the quota?"
    assert _answer_type_bonus(charged, "Storage above the quota is billed at EUR 0.40 per gigabyte.") > 0
    assert _answer_type_bonus(charged, "The Customer may exceed the quota by 5% without charge.") == 0
    assert _answer_type_bonus("How many sites are covered?", "The licence covers up to six sites.") > 0
    assert _answer_type_bonus("How soon must defects be fixed?", "Defects are fixed within five (5) days.") > 0
    assert _answer_type_bonus("Who owns the deliverables?", "The Client pays 50% of £10,000 in 30 days.") == 0


def test_german_dash_hereinafter_and_parties_named_only_by_their_roles() -> None:
    german = (
        "Framework Contract\n\nbetween\n\nStrelow Antriebstechnik GmbH, Hafenweg 3, 28197 Bremen\n"
        "- hereinafter \"Supplier\" -\n\nand\n\nNordlys Maskin AS, Storgata 1, 0155 Oslo\n"
        "- hereinafter \"Customer\" -\n\n§ 1 Subject matter\n\n(1) The Supplier supplies gear units."
    )
    assert extract_from_text(german).parties == ["Strelow Antriebstechnik GmbH", "Nordlys Maskin AS"]
    lease = (
        "This Lease Agreement (\"Lease\") is made on the 3rd of August, 2026, by Aurelia J. Okafor (\"Landlord\") "
        "and Tobias Wren (\"Tenant\").\n\n1. PREMISES. Landlord leases to Tenant the flat at 12 Elm Row."
    )
    assert extract_from_text(lease).parties == ["Aurelia J. Okafor", "Tobias Wren"]


def test_month_to_month_is_open_ended_unless_a_fixed_period_comes_first() -> None:
    periodic = "2. TERM. The tenancy begins on June 15, 2026 and continues on a month-to-month basis."
    assert extract_from_text(periodic).term_months == "indefinite"
    fixed_then_periodic = ("2. TERM. The Lease term is twelve (12) months from June 15, 2026, and thereafter "
                           "continues from month to month.")
    assert extract_from_text(fixed_then_periodic).term_months == 12


@pytest.mark.parametrize(
    "text",
    [
        "| Governing Law | [Fill in state] |",
        "This Agreement is governed by the laws of the State of [insert state], without regard to conflicts.",
        "This Agreement shall be governed by the laws of ____________.",
    ],
)
def test_a_template_blank_is_not_a_governing_law(text: str) -> None:
    assert extract_from_text(text).governing_law is None


def test_short_sentences_with_a_fact_reach_the_extractive_answer() -> None:
    from pipeline.generation.extractive import _fragment

    assert not _fragment("It lasts for 18 months.") and not _fragment("Rent is £950 a month.")
    assert _fragment("Term.") and _fragment("Schedule 1 - Users") and _fragment("2. Fees and Taxes")


def test_letter_agreement_parties_defined_as_we_and_you() -> None:
    letter = (
        "Dear Ms Achterberg\n\nThis letter records the basis on which Kestrel Ridge Surveys Ltd (we, us, our) will "
        "survey the sites of Dunmore Quarry Products Limited (you, your).\n\n1. Fees. You will pay us £4,800."
    )
    assert extract_from_text(letter).parties == ["Kestrel Ridge Surveys Ltd", "Dunmore Quarry Products Limited"]
    quoted = "Terms agreed by Halden & Roe LLP (\"we\" or \"us\") with Marta Ilves (\"you\")."
    assert extract_from_text(quoted).parties == ["Halden & Roe LLP", "Marta Ilves"]


def test_a_table_flattened_into_one_line_after_a_header_with_an_empty_cell() -> None:
    flattened = ("| Key terms | | | Landlord | Harbour Row Estates Limited | | Tenant | Idris Mahmoud | | Term | "
                 "6 months from 1 October 2026 | | Rent | £980 per calendar month |")
    fields = extract_from_text(flattened)
    assert fields.parties == ["Harbour Row Estates Limited", "Idris Mahmoud"]
    assert fields.term_months == 6
    assert fields.payment == "£980 per calendar month"


def test_law_construed_under_and_notice_to_end_a_tenancy() -> None:
    law = "This Agreement shall be governed by and construed under the internal laws of the State of Oregon."
    assert extract_from_text(law).governing_law == "Oregon"
    assert extract_from_text("This Deed is construed under the laws of Ireland.").governing_law == "Ireland"
    notice = ("The Tenant may end the tenancy after the first six months by giving the Landlord at least two "
              "months' notice in writing.")
    assert extract_from_text(notice).termination_notice_days == 60
    assert extract_from_text("You may end your subscription by giving us 14 days' notice.").termination_notice_days \
        == 14


def test_a_start_date_that_will_be_beats_the_letter_date() -> None:
    letter = ("October 2, 2026\n\nDear Ms Osei,\n\nWe are pleased to offer you the position of Analyst. Your start "
              "date will be November 2, 2026.")
    assert extract_from_text(letter).effective_date == "2026-11-02"


def test_offer_letter_parties_are_the_sender_and_the_addressee() -> None:
    defined = ("12 May 2026\n\nDear Mr Tomasz Wielgosz,\n\nBramblecote Foods Limited (the \"Employer\") offers you "
               "the role of Shift Manager. Your salary will be £38,500 per year.")
    assert extract_from_text(defined).parties == ["Bramblecote Foods Limited", "Tomasz Wielgosz"]
    letterhead = ("Veltro Dynamics Inc.\n200 Front Street, Toronto\n\nDear Lena Hu:\n\nWe are pleased to offer you "
                  "employment as a Controls Engineer starting on June 1, 2026.")
    assert extract_from_text(letterhead).parties == ["Veltro Dynamics Inc.", "Lena Hu"]
    assert extract_from_text("Dear Sir or Madam,\n\nAcme Ltd (the \"Company\") writes to you.").parties == []


def test_tenancy_start_beats_the_signing_date() -> None:
    tenancy = ("This Residential Tenancy Agreement is signed on 14 February 2026 by Lowen Lettings Ltd and Ama "
               "Boateng.\n\nThe tenancy is for a term of twelve (12) months from 1 March 2026.")
    assert extract_from_text(tenancy).effective_date == "2026-03-01"
    effect = "This Agreement is dated 2 June 2025 and has effect with effect from and including 1 July 2025."
    assert extract_from_text(effect).effective_date == "2025-07-01"
    cell = "Dated: 20 January 2026\n\n| Tenancy Start Date | 1 February 2026 |"
    assert extract_from_text(cell).effective_date == "2026-02-01"


@pytest.mark.parametrize(
    ("sentence", "payment"),
    [
        ("The Operator shall pay EUR 86.50 per housing unit, payable quarterly.", "EUR 86.50 per housing unit"),
        ("The hire charge is £45 per unit per week.", "£45 per unit per week"),
        ("The fee is $12 per named user per month, billed annually.", "$12 per named user per month"),
        ("The rent is £1,200 Per Month in advance.", "£1,200 per month"),
        ("The fee is $5,000 per annum exclusive of VAT.", "$5,000 per annum"),
        ("Base rent is USD 41.00 per rentable square foot for the first year.", "USD 41.00 per rentable square foot"),
    ],
)
def test_payment_keeps_its_per_unit(sentence: str, payment: str) -> None:
    assert extract_from_text(sentence).payment == payment


def test_a_law_given_as_a_defined_term_is_resolved_or_left_empty() -> None:
    defined = ('"Governing Member State" means Belgium.\n\nThis Agreement is governed by the laws of the Governing '
               'Member State.')
    assert extract_from_text(defined).governing_law == "Belgium"
    named = ('The Supplier is established in Portugal (the "Home State").\n\nThis Agreement is governed by the law '
             'of the Home State.')
    assert extract_from_text(named).governing_law == "Portugal"
    unresolved = ('"Governing Member State" has the meaning given in the Framework.\n\nThis Agreement is governed by '
                  'the laws of the Governing Member State.')
    assert extract_from_text(unresolved).governing_law is None


def test_a_cap_in_capitals_comes_back_in_lower_case_with_its_currency() -> None:
    text = ("IN NO EVENT SHALL EITHER PARTY'S AGGREGATE LIABILITY EXCEED THE GREATER OF THE FEES PAID IN THE "
            "TWELVE (12) MONTHS PRECEDING THE CLAIM AND USD 250,000.")
    assert extract_from_text(text).liability_cap == ("the greater of the fees paid in the twelve (12) months "
                                                    "preceding the claim and USD 250,000")


def test_a_numbered_schedule_table_gives_its_values() -> None:
    text = ("The Fee is the amount in Item 4 of the Schedule. Liability is limited to the amount in Item 5.\n\n"
            "| Item | Matter | Details |\n|---|---|---|\n| 3 | Initial Term | Three (3) years from the Start Date |\n"
            "| 4 | Fee | A$9,800 per month (exclusive of GST) |\n| 5 | Liability cap | A$750,000 |")
    fields = extract_from_text(text)
    assert (fields.term_months, fields.payment) == (36, "A$9,800 per month")
    assert fields.liability_cap is not None and "750,000" in fields.liability_cap


def test_law_defined_in_the_definitions_and_named_by_an_adjective() -> None:
    defined = ('"Applicable Law" means the laws of the Province of Alberta.\n\nThis Agreement is governed by the '
               'Applicable Law.')
    assert extract_from_text(defined).governing_law == "Alberta"
    assert extract_from_text("This Agreement is governed by Dutch law.").governing_law == "the Netherlands"
    assert canonical_law("Hong Kong Special Administrative Region of the People's Republic of China") == "hong kong"


def test_a_term_with_a_time_of_day_and_a_holdover_keeps_its_dates() -> None:
    text = ("The lease term starts on 1 May 2026 and ends at midnight on 30 April 2027.\n\n"
            "If neither party gives notice, the tenancy continues on a month-to-month basis.")
    assert extract_from_text(text).term_months == 12


def test_two_people_as_one_party_are_two_parties_and_a_firm_is_one() -> None:
    lease = ('This Lease is made between Harrow Lane Homes LLC ("Landlord") and Dana K. Moretti and Luis Moretti '
             '(together, "Tenant").')
    assert extract_from_text(lease).parties == ["Harrow Lane Homes LLC", "Dana K. Moretti", "Luis Moretti"]
    firm = 'This Agreement is made between Oxley & Finch Cycles Ltd ("Buyer") and Pell and Rowe LLP ("Seller").'
    assert extract_from_text(firm).parties == ["Oxley & Finch Cycles Ltd", "Pell and Rowe LLP"]


def test_a_party_defined_mid_sentence_with_several_names() -> None:
    letter = ('Dear Ms. Ortiz:\n\nThis letter sets out the terms on which Corvane Labs, Inc., a Delaware corporation '
              '("Corvane", "we" or "us"), retains Ortiz Data Studio LLC, an Oregon limited liability company '
              '("you").')
    assert extract_from_text(letter).parties == ["Corvane Labs, Inc.", "Ortiz Data Studio LLC"]


def test_a_share_of_sales_is_the_payment_when_no_amount_is() -> None:
    text = "The Licensee shall pay the Licensor royalties at the rate of six per cent (6%) of Net Revenue, quarterly."
    assert extract_from_text(text).payment == "6% royalty on net revenue"


def test_the_notice_of_a_trial_period_is_not_the_contracts_own() -> None:
    text = ("During the probationary period either party may terminate this Agreement on seven (7) days' notice.\n\n"
            "Thereafter either party may terminate this Agreement by giving two (2) months' written notice.")
    assert extract_from_text(text).termination_notice_days == 60


def test_the_last_signature_dates_an_agreement_dated_by_its_last_signature() -> None:
    text = ("This Agreement takes effect on the date on which it is signed by the last of the parties.\n\n"
            "The Company was incorporated on 3 January 2026.\n\nSigned for Alder Ltd\nDate: 14 March 2026\n\n"
            "Signed for Birch GmbH\nDate: 18 March 2026")
    assert extract_from_text(text).effective_date == "2026-03-18"


def test_a_novation_date_and_an_end_date_in_a_cover_table() -> None:
    novation = ('This Deed is dated 2 May 2026.\n\n"Novation Date" means 1 July 2026.\n\n'
                'The Original Contract dated 5 March 2021 is novated with effect from the Novation Date.')
    assert extract_from_text(novation).effective_date == "2026-07-01"
    sow = "| Project Start Date | 2 February 2026 |\n| Project End Date | 1 August 2026 |"
    fields = extract_from_text(sow)
    assert (fields.effective_date, fields.term_months) == ("2026-02-02", 6)


def test_a_relationship_that_ends_on_events_is_indefinite() -> None:
    text = ("This Agreement continues in force until the earliest of: (a) the Company being wound up; or (b) one "
            "Shareholder holding all the shares.")
    assert extract_from_text(text).term_months == "indefinite"


@pytest.mark.parametrize(
    ("written", "amount", "currency"),
    [
        ("EUR 125.000,00 per year", 125000.0, "EUR"),
        ("ZAR 18 500,00 per month", 18500.0, "ZAR"),
        ("PLN 9.250 per unit", 9250.0, "PLN"),
        ("TWO HUNDRED THOUSAND AND NO/100 DOLLARS ($200,000.00)", 200000.0, "USD"),
        ("EUR 14.20 per unit", 14.2, "EUR"),
    ],
)
def test_amounts_in_european_and_spaced_grouping(written: str, amount: float, currency: str) -> None:
    assert money_amounts(written)[0] == (amount, currency)


def test_a_loan_note_principal_maturity_and_heading_date() -> None:
    note = ("PROMISSORY NOTE\n\n$800,000.00          Austin, Texas          Dated as of June 2, 2025\n\n"
            "FOR VALUE RECEIVED, QUILLFEATHER FOODS, INC., a Texas corporation (\"Borrower\"), promises to pay to "
            "the order of HARTSHORN CREDIT PARTNERS, LP, a Delaware limited partnership (\"Lender\"), the principal "
            "sum of EIGHT HUNDRED THOUSAND AND NO/100 DOLLARS ($800,000.00), together with interest.\n\n"
            "Beginning on July 1, 2025 and continuing on the first day of each month thereafter, Borrower shall pay "
            "monthly installments of interest.\n\nThe whole principal balance of this Note, with accrued interest, "
            "is due on June 2, 2028 (the \"Maturity Date\").")
    fields = extract_from_text(note)
    assert [normalize_party(p) for p in fields.parties] == ["quillfeather foods inc", "hartshorn credit partners lp"]
    assert (fields.effective_date, fields.term_months) == ("2025-06-02", 36)
    assert fields.payment == "$800,000.00"


def test_dollars_named_after_the_amount_and_a_rate_for_each_hour() -> None:
    text = "We'll pay you $95 (Australian dollars) for each hour you work on the project."
    assert extract_from_text(text).payment == "AUD 95 per hour"


def test_plain_english_cap_and_a_figure_over_a_formula() -> None:
    plain = "Neither of us will be liable to the other for more than the fees paid in the last 12 months."
    assert extract_from_text(plain).liability_cap == "the fees paid in the last 12 months"
    two = ("In cases of slight negligence liability is limited to the damage typically foreseeable.\n\n"
           "In those cases the total liability of each Party is limited to EUR 250.000,00 per Contract Year.")
    assert extract_from_text(two).liability_cap == "EUR 250.000,00 per Contract Year"


def test_renewal_after_a_fixed_term_keeps_the_fixed_term() -> None:
    text = ("2.1 This Agreement endures for an initial period of 24 (twenty-four) months.\n\n"
            "2.2 Thereafter it continues for successive periods of 12 months until terminated.")
    assert extract_from_text(text).term_months == 24


def test_employment_without_an_end_is_indefinite_and_the_employers_notice_counts() -> None:
    text = ("1. Your employment with the Company begins on 1 September 2025.\n\n"
            "9.1 You may terminate your employment by giving the Company one month's written notice.\n\n"
            "9.2 The Company may terminate your employment by giving you two months' written notice.")
    fields = extract_from_text(text)
    assert (fields.term_months, fields.termination_notice_days) == ("indefinite", 60)


def test_polish_company_form_and_a_law_that_names_no_place() -> None:
    text = ('This Agreement is made between Orlik Maszyny Sp. z o.o., ul. Brzozowa 4, Krakow ("Buyer") and '
            'Feldmann Antriebe GmbH ("Seller").\n\nThis Lease is governed by the laws of the state in which the '
            'Premises are located.')
    fields = extract_from_text(text)
    assert fields.parties == ["Orlik Maszyny Sp. z o.o.", "Feldmann Antriebe GmbH"]
    assert fields.governing_law is None


def test_a_key_details_block_joined_into_one_line_gives_its_labels() -> None:
    block = ("Reference: ABC Owner: Larkspur Code Ltd (company number 123), 4 Mill Lane Licensee: Fenwick Stores "
             "Limited, 9 High Street Start Date: 1 May 2026 Law and Courts: Scots law; courts of Scotland")
    fields = extract_from_text(block)
    assert fields.parties == ["Larkspur Code Ltd", "Fenwick Stores Limited"]
    assert fields.governing_law == "Scotland"


def test_swiss_amounts_and_law_and_other_currencies() -> None:
    assert money_amounts("CHF 1'250.00 per day")[0] == (1250.0, "CHF")
    assert money_amounts("KES 740,000 per month")[0] == (740000.0, "KES")
    assert extract_from_text("This Agreement is governed by substantive Swiss law.").governing_law == "Switzerland"


def test_dollars_declared_for_the_whole_document() -> None:
    text = ("We will pay you a salary of $150,000 per year.\n\n"
            "All amounts in this agreement are in New Zealand dollars.")
    assert extract_from_text(text).payment == "NZD 150,000 per year"


def test_date_of_entry_and_we_may_end_your_employment() -> None:
    lease = "The Lease is signed on 3 March 2026.\n\nDate of Entry: 1 April 2026"
    assert extract_from_text(lease).effective_date == "2026-04-01"
    notice = ("You may end your employment by giving us two weeks' notice.\n\n"
              "We may end your employment by giving you six weeks' notice.")
    assert extract_from_text(notice).termination_notice_days == 42


def test_a_recital_party_followed_by_its_postal_address() -> None:
    text = ("THIS AGREEMENT is made BETWEEN\n\nKILIMA TOOLS LIMITED, a company of Plot 4, Enterprise Road, and of "
            "P.O. Box 100, Nairobi (hereinafter called \"the Lessor\") of the one part;\n\nAND\n\nPWANI QUARRIES "
            "LIMITED, a company of Box 7, Mombasa (hereinafter called \"the Lessee\") of the other part.")
    assert [normalize_party(p) for p in extract_from_text(text).parties] == ["kilima tools ltd", "pwani quarries ltd"]


def test_numbered_parties_without_quoted_names_and_the_employers_notice_after_probation() -> None:
    text = ("EMPLOYMENT AGREEMENT\n\nParties\n\n1. Wombat Ridge Analytics Pty Ltd ACN 111 222 333 of 5 Gum Lane, "
            "Hobart (Company, we, us)\n2. Tomas Eriksen of 9 Sand Street, Hobart (you)\n\nBackground\n\n"
            "During probation either of us may end your employment on one week's notice.\n\n"
            "After probation, we may end your employment by giving you six weeks' notice.\n\n"
            "You may resign by giving us three weeks' notice.")
    fields = extract_from_text(text)
    assert fields.parties == ["Wombat Ridge Analytics Pty Ltd", "Tomas Eriksen"]
    assert fields.termination_notice_days == 42


def test_neither_partys_liability_shall_exceed_and_a_year_first_slashed_date() -> None:
    cap = ("NEITHER PARTY'S AGGREGATE LIABILITY UNDER THIS AGREEMENT SHALL EXCEED THE CHARGES PAID IN THE THREE (3) "
           "MONTHS BEFORE THE CLAIM.")
    assert extract_from_text(cap).liability_cap == "the charges paid in the three (3) months before the claim"
    assert extract_from_text("This Agreement takes effect on 2026/07/01.").effective_date == "2026-07-01"
