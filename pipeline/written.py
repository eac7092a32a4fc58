"""How contracts write dates and numbers: month names, ordinals, numbers in words.

Shared by the field extraction (``pipeline/generation/fields.py``), which reads dates and
durations out of clauses, and the grounding check (``pipeline/guard/grounding.py``), which
compares them in one canonical form, so both read "1st February 2025" and "twenty-four"
the same way.
"""

from __future__ import annotations

from datetime import date, timedelta

_MONTH_NAMES = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_MONTHS = {name: i + 1 for i, name in enumerate(_MONTH_NAMES)}
_MONTHS.update({name[:3]: i + 1 for i, name in enumerate(_MONTH_NAMES)})
_MONTHS["sept"] = 9

#: a month name or its abbreviation, with an optional full stop ("Sept.").
MONTH_RE = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
    r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?"
)
#: an ordinal suffix after a day number: "1st", "22nd".
ORDINAL = r"(?:st|nd|rd|th)?"
#: "1 February 2025", "1st day of February, 2025" (groups d1, m1, y1).
DAY_MONTH_YEAR = rf"(?P<d1>\d{{1,2}}){ORDINAL}(?:\s+day)?(?:\s+of)?\s+(?P<m1>{MONTH_RE}),?\s+(?P<y1>\d{{4}})"
#: "February 1, 2025" (groups m2, d2, y2).
MONTH_DAY_YEAR = rf"(?P<m2>{MONTH_RE})\s+(?P<d2>\d{{1,2}}){ORDINAL},?\s+(?P<y2>\d{{4}})"

#: numbers written as words, as contracts write them ("twenty-four (24) months", "a month").
WORD_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
}  # fmt: skip

#: ordinals written as words, as anniversaries are ("the second (2nd) anniversary").
ORDINAL_WORDS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "fifteenth": 15, "twentieth": 20, "twenty-fifth": 25,
}  # fmt: skip


def month_number(name: str) -> int:
    """1-12 for a month name or abbreviation ("Feb.", "Sept", "september"); KeyError otherwise."""
    low = name.lower().rstrip(".")
    return _MONTHS[low[:4] if low.startswith("sept") else low[:3]]


def span_months(start: date, end: date) -> int:
    """Whole months from ``start`` to ``end`` inclusive: 1 April 2026 to 31 March 2028 is 24 (a term written
    as two dates, read by the field extraction and accepted by the grounding check alike)."""
    after = end + timedelta(days=1)
    months = (after.year - start.year) * 12 + after.month - start.month
    return months + round((after.day - start.day) / 30)
