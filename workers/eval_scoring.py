"""How ``conveyor eval summary-fields`` decides that a field is right.

A summary (the ``output`` of a summarize record, from the extractive generator or an LLM) is
compared with one line of ``evals/summary/key.jsonl``, field by field. The rules, so that an
LLM's wording is not punished for being worded differently:

- ``parties``: the same set of names after ``normalize_party`` (case, punctuation, "&" vs
  "and", a leading "the", and "Limited/Ltd", "Incorporated/Inc", "Corporation/Corp",
  "Company/Co" do not matter). Order does not matter; a missing or an extra party is wrong.
- ``effective_date``: the same calendar day; the output may be ISO or any written form
  ("1 February 2025", "February 1, 2025", "01/02/2025" read with the document's locale).
- ``term``: the same number of months (``term_months``, or the ``term`` text parsed: "2 years"
  = 24), or both indefinite ("until terminated", "at will" ...).
- ``governing_law``: the same jurisdiction after ``canonical_law`` ("the laws of the State of
  New York" = "New York"; "English law" = "England and Wales").
- ``payment``: the key's amount is the first amount in the output's payment, same currency
  when both name one.
- ``liability_cap``: every number in the key is in the output (so "fees paid in the 12 months
  preceding the claim" needs 12 and the word "fee"), same currency when both name one.
- ``termination_notice``: the same number of days (months count 30, weeks 7).
- A field the key leaves null (no liability cap, no payment) is right only when the output
  leaves it empty too.
"""

from __future__ import annotations

from typing import Any

from pipeline.generation.fields import (
    canonical_law,
    currency_of,
    money_amounts,
    normalize_party,
    notice_days,
    numbers,
    parse_date,
    term_months_of,
)

FIELDS = ("parties", "effective_date", "term", "governing_law", "payment", "liability_cap", "termination_notice")


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or (isinstance(value, str) and value.strip().lower() in
                                                           {"none", "n/a", "null", "not stated", "not specified"})


def field_correct(name: str, expected: Any, output: dict[str, Any]) -> bool:
    """Is ``output``'s value of field ``name`` right, given the key's ``expected`` value?"""
    if name == "parties":
        got = output.get("parties") or []
        return {normalize_party(p) for p in expected or []} == {normalize_party(str(p)) for p in got}
    if name == "effective_date":
        value = output.get("effective_date")
        if _empty(expected) or _empty(value):
            return _empty(expected) and _empty(value)
        day = parse_date(str(value))
        return day is not None and day.isoformat() == expected
    if name == "term":
        value = output.get("term_months")
        if _empty(value):
            value = term_months_of(output.get("term"))
        if _empty(expected) or _empty(value):
            return _empty(expected) and _empty(value)
        got = value if value == "indefinite" else term_months_of(value if isinstance(value, int) else str(value))
        return got == expected
    if name == "governing_law":
        value = output.get("governing_law")
        if _empty(expected) or _empty(value):
            return _empty(expected) and _empty(value)
        return canonical_law(str(value)) == canonical_law(str(expected))
    if name == "payment":
        value = output.get("payment")
        if _empty(expected) or _empty(value):
            return _empty(expected) and _empty(value)
        want, got = money_amounts(str(expected)), money_amounts(str(value))
        if not want or not got:
            return bool(numbers(str(expected)) & numbers(str(value)))
        (amount, currency), (got_amount, got_currency) = want[0], got[0]
        return amount == got_amount and (currency is None or got_currency is None or currency == got_currency)
    if name == "liability_cap":
        value = output.get("liability_cap")
        if _empty(expected) or _empty(value):
            return _empty(expected) and _empty(value)
        text = str(value)
        if not numbers(str(expected)) <= numbers(text):
            return False
        if "fee" in str(expected).lower() and "fee" not in text.lower():
            return False
        want_currency, got_currency = currency_of(str(expected)), currency_of(text)
        return want_currency is None or got_currency is None or want_currency == got_currency
    if name == "termination_notice":
        value = output.get("termination_notice_days")
        if _empty(value):
            value = notice_days(output.get("termination_notice"))
        if _empty(expected) or _empty(value):
            return _empty(expected) and _empty(value)
        return notice_days(value if isinstance(value, int) else str(value)) == notice_days(str(expected))
    raise ValueError(f"unknown field {name!r}")


def score_summary(output: dict[str, Any], key: dict[str, Any]) -> dict[str, bool]:
    return {name: field_correct(name, key.get(name if name != "term" else "term_months"), output) for name in FIELDS}
