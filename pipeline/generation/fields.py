"""Contract fields, read the way a lawyer's assistant reads them.

``extract_fields(segments)`` takes a document as ``(section, text)`` segments in document
order (the retrieve stage's chunks, or any split of a text) and returns the summary fields
with the segment each one came from:

- ``parties``: full legal names from the opening recital ("by and between X ... and Y",
  "BETWEEN (1) X ... AND (2) Y", "PARTIES 1 X 2 Y", "BY AND AMONG X - and - Y - and - Z"),
  else from role lines and cover tables ("Customer: X", "| Supplier | X |"), else from role names
  defined in the opening ('by Marcus T. Delgado ("Landlord") and Priya Raman ("Tenant")', "X (we, us)
  ... Y (you)"), else a letter's sender and its "Dear Full Name," addressee. Prose
  after a stray "between" and bare roles of an unfilled template are not names. A name ends
  where its description starts (", a Delaware corporation", "incorporated in", "(company
  number", "whose registered office"). Defined short names ("Acme Holdings Limited (the
  "Supplier")") are collected in ``defined_names`` and resolved when a recital or role line
  names a party only by its short name; also '(hereinafter referred to as the "Client", which
  expression ...)', '- hereinafter "Supplier" -' and ("Bellweather", "we" or "us"). Two people named as
  one party ("A and B (together, "Tenant")") are two parties.
- ``effective_date`` (ISO): every date in the text is scored by what surrounds it: defined
  as the Effective / Commencement / Start Date, "effective as of", "takes effect on",
  "come into force on", "commence on", "with effect from", "a term of 12 months from", a "Novation
  Date", "your start date will be" beat "dated" / "made on" / "this 3rd day of", which beat nothing;
  a date that names another document ("dated 2 March 2021 (the "Main Agreement")", "the note
  dated"), one in a WHEREAS recital, a signature line ("Signed", "Date:"), an expiry ("ending on",
  "no later than") or a payment schedule ("commencing on ... and continuing on the first day of each
  month") counts against. An agreement "dated the date on which it has been signed by the last of
  the Parties" takes the latest execution date. Dates: "1 February 2025",
  "1st day of February, 2025", "February 1, 2025", "2025-02-01" and "01/02/2025", the last
  read day-first or month-first from the document itself (``day_first``).
- ``term_months`` (int or ``"indefinite"``) and ``term`` (the sentence): from "Term" /
  "Duration" cells of a cover table, or the best-scored sentence saying how long the
  agreement runs ("continue for a period of 12 months", "an initial period of two years",
  "remain in force for eighteen (18) months", "extended for an additional twenty-four (24)
  months", "Maturity Date means the date that is sixty (60) months after", "it lasts for 18
  months"), or written as dates ("starts on 1 April 2026 and ends on 31 March 2028", an end date
  after the Effective Date, a defined "Maturity Date", a cover table's end date) or an anniversary
  ("expire on the second (2nd) anniversary"); "until terminated", "at will", "for as long as",
  "month-to-month", "until the earliest of" events give ``"indefinite"``, unless they only describe
  what follows a fixed initial term; an employment contract with no end is indefinite. Survival,
  warranty, insurance, confidentiality, non-solicitation and renewal periods do not count.
- ``governing_law``: the jurisdiction of "governed by / construed under the law(s) of ..." or "the laws of X apply to
  this agreement" (``canonical_law``; "French law" is France); a defined term ("the Governing Law")
  is resolved through its definition; a template blank ("[Fill in state]") or a law that names no
  place ("the state in which the Premises are located") is none.
- ``payment``: the main amount (fee, price, rent, salary, principal, funding, minimum
  purchase), not a liability cap, insurance limit, late charge, bonus or add-on rate; currencies
  as symbols, codes, "CAD $" and "$150 (Canadian dollars)", amounts also grouped the Indian,
  German or South African way ("INR 4,50,000", "EUR 480.000,00", "ZAR 2 340,00"), with its unit
  ("per housing unit", "per unit per week"); a commission or royalty share when there is no amount.
- ``liability_cap``: what aggregate liability "shall not exceed" / "shall in no case exceed" / "is
  limited to", "in no event shall ... liability ... exceed", "the most we will pay ... is", "liable ...
  for more than", read to the end of the sentence (a cross-reference such as "Section 8.2" or
  "Clause 12." is not an end); a cap with a figure beats a formula, and capitals are lowered.
- ``termination_notice`` and ``termination_notice_days``: the notice to terminate without
  cause (convenience, withdrawal, resignation, break), else to stop a renewal; cure periods
  and a trial period's notice do not count, and an employer's notice beats an employee's. Months
  count 30 days, weeks 7.

Nothing here knows a particular contract: tests/unit/test_fields.py checks it on phrasings
that are not in the golden set (evals/summary/).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from pipeline.text import split_sentences
from pipeline.written import DAY_MONTH_YEAR, MONTH_DAY_YEAR, ORDINAL_WORDS, WORD_NUMBERS, month_number, span_months

TermMonths = int | Literal["indefinite"]

_ISO = r"(?P<y3>\d{4})(?P<sep3>[-/.])(?P<m3>\d{1,2})(?P=sep3)(?P<d3>\d{1,2})"  # 2025-04-01, Japanese 2025/04/01
_NUMERIC = r"(?P<a>\d{1,2})(?P<sep>[/.])(?P<b>\d{1,2})(?P=sep)(?P<y4>\d{4})"
DATE_RE = re.compile(rf"\b(?:{DAY_MONTH_YEAR}|{MONTH_DAY_YEAR}|{_ISO}|{_NUMERIC})\b", re.IGNORECASE)

_NUMBER_WORD = (
    r"(?:(?:one\s+hundred\s+(?:and\s+)?)?(?:(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)"
    r"(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?|one|two|three|four|five|six|seven|eight|nine|ten|"
    r"eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|hundred))"
)
_UNIT = r"(?P<unit>years?|months?|weeks?|(?:business\s+|working\s+|calendar\s+)?days?)"
DURATION_RE = re.compile(
    rf"\b(?:(?P<word>{_NUMBER_WORD})\s*\(\s*(?P<paren>\d+)\s*\)|\(\s*(?P<bare>\d+)\s*\)|(?P<digits>\d+)|"
    rf"(?P<wordonly>{_NUMBER_WORD}|an?))[\s-]*(?:\((?:\d+|{_NUMBER_WORD})\)\s*)?(?:calendar\s+)?{_UNIT}(?:['’]s?)?(?![a-z])",
    re.IGNORECASE,
)
# "CAD $320,000" and "INR 4,50,000" (Indian digit grouping) as well as "$", "£", "EUR"
_CURRENCY = (
    r"(?:(?:USD|CAD|AUD|NZD|SGD|HKD)\s?\$|NZ\$|S\$|HK\$|USD|EUR|GBP|CAD|AUD|NZD|SGD|HKD|CHF|SEK|NOK|DKK|INR|JPY|"
    r"ZAR|PLN|CZK|HUF|BRL|MXN|CNY|AED|KES|NGN|UGX|TZS|GHS|EGP|PHP|MYR|THB|IDR|KRW|TWD|ILS|TRY|SAR|QAR|"
    r"(?<![a-z])Rs\.?|US\$|C\$|A\$|\$|£|€|₹|¥)"
)
# 1,000.00 · 4,50,000 (Indian grouping) · 480.000,00 (German) · 2 340,00 (South African, French) · 1000
_AMOUNT = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,2}(?:,\d{2})+,\d{3}(?:\.\d+)?|\d{1,3}(?:\.\d{3})+(?:,\d{1,2})?(?!\d)|" \
          r"\d{1,3}(?:[ \u00a0]\d{3})+(?:,\d{1,2})?(?!\d)|\d{1,3}(?:['’]\d{3})+(?:\.\d{1,2})?|\d+(?:\.\d+)?"
MONEY_RE = re.compile(
    rf"(?P<cur>{_CURRENCY})\s?(?P<amount>{_AMOUNT})(?:\s?(?P<mult>million|m)\b)?"
    rf"|(?<![/\d])(?P<amount2>{_AMOUNT})\s?(?P<cur2>USD|EUR|GBP|CAD|AUD|INR|ZAR|euros?|dollars|pounds|rupees|rand)\b",
    re.IGNORECASE,
)
_CURRENCY_CODES = {
    "$": "USD", "us$": "USD", "usd": "USD", "usd$": "USD", "dollars": "USD", "£": "GBP", "gbp": "GBP",
    "pounds": "GBP", "€": "EUR", "eur": "EUR", "euro": "EUR", "euros": "EUR", "cad": "CAD", "c$": "CAD",
    "cad$": "CAD", "aud": "AUD", "a$": "AUD", "aud$": "AUD", "nzd": "NZD", "nz$": "NZD", "nzd$": "NZD",
    "sgd": "SGD", "s$": "SGD", "sgd$": "SGD", "hkd": "HKD", "hk$": "HKD", "hkd$": "HKD", "chf": "CHF",
    "sek": "SEK", "nok": "NOK", "dkk": "DKK", "inr": "INR", "rs": "INR", "rs.": "INR", "₹": "INR",
    "rupees": "INR", "jpy": "JPY", "¥": "JPY", "zar": "ZAR", "rand": "ZAR", "pln": "PLN", "czk": "CZK",
    "huf": "HUF", "brl": "BRL", "mxn": "MXN", "cny": "CNY", "aed": "AED",
    **{code.lower(): code for code in ("KES", "NGN", "UGX", "TZS", "GHS", "EGP", "PHP", "MYR", "THB", "IDR", "KRW",
                                       "TWD", "ILS", "TRY", "SAR", "QAR")},
}


def amount_value(written: str) -> float:
    """'1,000.50' -> 1000.5; '4,50,000' -> 450000; '480.000,00' -> 480000; '2 340,00' -> 2340; "1'250" -> 1250."""
    s = written.replace("\u00a0", " ").replace("'", "").replace("’", "")
    if re.fullmatch(r"\d{1,3}(?:\.\d{3})+(?:,\d{1,2})?|\d{1,3}(?:\s\d{3})+(?:,\d{1,2})?", s):
        return float(s.replace(".", "").replace(" ", "").replace(",", "."))
    return float(s.replace(",", ""))


def _currency_code(symbol: str) -> str | None:
    """ISO code of a currency as written ("CAD $" and "CAD$" alike)."""
    return _CURRENCY_CODES.get(re.sub(r"\s+", "", symbol.lower()))


# a defined name in parentheses: ("Quillon"), (the "Supplier"), ("Sundqvist" or the "Principal")
# Indian and Commonwealth drafting: (hereinafter referred to as the "Client", which expression shall ... include
# its successors), (hereinafter the "Developer"), (hereinafter called "X")
# and German drafting between dashes: Hollbach GmbH, Stuttgart - hereinafter "Supplier" -
_DEFINED = re.compile(
    r"(?:\(|(?<=\s)[-–](?=\s*hereinafter))\s*(?:hereinafter\s+|herein\s+|hereafter\s+)?(?:(?:referred\s+to\s+as|called|defined\s+as|known\s+as)\s+)?"
    r"(?:the\s+|each\s+|together,?\s+)?[\"“']([^\"”'()]{1,60})[\"”']"
    r"(?:\s*(?:,\s*(?:or|and)?|or|and)\s*(?:the\s+)?[\"“']([^\"”'()]{1,60})[\"”'])?"
    r"(?:\s*(?:,\s*(?:or|and)?|or|and)\s*(?:the\s+)?[\"“'][^\"”'()]{1,60}[\"”'])*"  # ("Bellweather", "we" or "us")
    r"(?:\s*,\s*which\s+expression[^()]{0,300})?\s*[)\-–]",
    re.IGNORECASE,
)
_NOT_A_PARTY = re.compile(
    r"agreement|amendment|date|transaction|^party$|parties|party\s+\w|order|lease|licen[cs]e|schedule|services?$|project|"
    r"products?|territory|deliverables|confidential|premises|property|dpa|msa|sow|loan$|funding|fees?$",
    re.IGNORECASE,
)
_ROLE_WORDS = (
    "Landlord|Tenant|Customer|Client|Provider|Supplier|Buyer|Seller|Purchaser|Vendor|Licensor|Licensee|Lender|"
    "Borrower|Distributor|Principal|Employer|Employee|Company|Executive|Consultant|Contractor|Processor|Controller|"
    "Lessor|Lessee|Discloser|Recipient|Service Provider|Guarantor|Agent|Reseller|Partner|Owner|Escrow Agent|Hirer|"
    "Developer|Publisher|Subscriber|Investor|Shareholder|Trustee|Sponsor"
)
_ROLE_LINE = re.compile(
    rf"(?:^|\n|\|)\s*(?:the\s+)?(?P<role>{_ROLE_WORDS})(?:\s+name)?\s*(?:[:|]\s*)(?P<name>[A-Z0-9][^\n|]{{1,200}})",
)
# where a party's name ends and its description begins
_NAME_END = re.compile(
    r",\s*(?:an?|the)\s|,\s*(?:incorporated|registered|organi[sz]ed|having|whose|with|of|at|acting|company|"
    r"registration|reg\.|a\s)|\s+\((?:company|registration|registered|reg\.|hrb|kvk|crn|no\.|number|abn|acn|"
    r"organisation|organization)|\s+(?:a\s+company|a\s+corporation|incorporated|registered|whose|having|of\s+\d|"
    r"residing)\b|\s+\((?![^()]{1,30}\)\s+(?:[A-Z][\w.&'-]*\s+){0,2}(?:Limited|Ltd|Pte|Pty|Inc|LLC|GmbH|AG|B\.?V))|"
    r",\s*\d|\s+-\s+|\s+of\s+(?=\d)|"
    # a European street address after the name: ", Storgata 1", ", Industriestraße 12"
    r",\s*[A-ZÄÖÜÅ][\w.'-]+\s+\d{1,4}[a-z]?(?:,|\s*$)",
    re.IGNORECASE,
)
_SUFFIX_CASE = {
    "llc": "LLC", "llp": "LLP", "lp": "LP", "plc": "plc", "n.a.": "N.A.", "ab": "AB", "b.v.": "B.V.", "bv": "BV",
    "gmbh": "GmbH", "ag": "AG", "sa": "SA", "s.a.": "S.A.", "nv": "NV", "n.v.": "N.V.", "inc.": "Inc.",
    "ltd": "Ltd", "ltd.": "Ltd.", "of": "of", "and": "and", "the": "the", "for": "for", "de": "de", "kg": "KG",
    "se": "SE", "s.r.l.": "S.r.l.", "sas": "SAS", "oy": "Oy", "as": "AS", "a/s": "A/S", "pty": "Pty", "ulc": "ULC",
}


_HEADING_LINE = re.compile(
    r"(?i)(?:section|clause|article)\s+\d+|parties|between|by\s+and\s+between|[-–]?\s*and\s*[-–]?"
)
_COMPANY_SUFFIX = re.compile(
    r",?\s+(?:LLC|L\.L\.C\.|LLP|LP|L\.P\.|Inc\.?|Incorporated|Corp\.?|Corporation|Ltd\.?|Limited|plc|PLC|GmbH|AG|"
    r"B\.V\.|BV|N\.V\.|NV|AB|S\.A\.|SA|SAS|S\.r\.l\.|Pty\s+Ltd|N\.A\.|ULC|Oy|A/S|ASA|KG|SE|S\.p\.A\.|SpA|"
    r"S\.L\.|SARL|Pte\.?\s+Ltd|Sp\.\s?z\s?o\.\s?o\.|s\.r\.o\.|a\.s\.|Kft\.|S\.A\.S\.)(?=$|[\s,;(])",
    re.IGNORECASE,
)


# --- dates -------------------------------------------------------------------------------------------
def day_first(text: str) -> bool:
    """Does this document write numeric dates day-first (01/02/2025 = 1 February)?

    An unambiguous numeric date decides (13/04/2025 is day-first, 04/13/2025 is not);
    else the written dates ("1 February 2025" vs "February 1, 2025"); else the document's
    currency and company forms (£ € Limited GmbH B.V. vs $ Inc. LLC).
    """
    votes = 0
    for m in re.finditer(r"\b(\d{1,2})[/.](\d{1,2})[/.](\d{4})\b", text):
        a, b = int(m.group(1)), int(m.group(2))
        if a > 12 >= b:
            votes += 5
        elif b > 12 >= a:
            votes -= 5
        if m.group(0)[len(m.group(1))] == ".":
            votes += 1
    for m in DATE_RE.finditer(text):
        if m.group("d1"):
            votes += 1
        elif m.group("m2"):
            votes -= 1
    if votes:
        return votes > 0
    eu = len(re.findall(r"£|€|\bEUR\b|\bGBP\b|\bLimited\b|\bLtd\b|\bGmbH\b|\bB\.V\.|\bplc\b|\bAB\b", text))
    us = len(re.findall(r"\$|\bUSD\b|\bInc\.|\bLLC\b|\bCorp\.|\bState of\b", text))
    return eu > us


def _date_of(m: re.Match[str], dayfirst: bool) -> date | None:
    try:
        if m.group("d1"):
            return date(int(m.group("y1")), month_number(m.group("m1")), int(m.group("d1")))
        if m.group("m2"):
            return date(int(m.group("y2")), month_number(m.group("m2")), int(m.group("d2")))
        if m.group("y3"):
            return date(int(m.group("y3")), int(m.group("m3")), int(m.group("d3")))
        a, b, year = int(m.group("a")), int(m.group("b")), int(m.group("y4"))
        if a > 12:
            return date(year, b, a)
        if b > 12:
            return date(year, a, b)
        return date(year, b, a) if dayfirst else date(year, a, b)
    except (ValueError, KeyError):
        return None


def parse_date(text: str, *, dayfirst: bool | None = None) -> date | None:
    """The first date written in ``text`` (``dayfirst`` None: guessed from ``text``)."""
    m = DATE_RE.search(text or "")
    if m is None:
        return None
    return _date_of(m, day_first(text) if dayfirst is None else dayfirst)


# --- numbers and durations ---------------------------------------------------------------------------
def _word_number(word: str) -> int | None:
    parts = [p for p in re.split(r"[- ]+", word.lower()) if p != "and"]
    if len(parts) > 1 and parts[1] == "hundred":
        rest = _word_number(" ".join(parts[2:])) if parts[2:] else 0
        head = WORD_NUMBERS.get(parts[0])
        return head * 100 + (rest or 0) if head and rest is not None else None
    total = 0
    for part in parts:
        if part not in WORD_NUMBERS:
            return None
        total += WORD_NUMBERS[part]
    return total or None


@dataclass(frozen=True)
class Duration:
    value: int
    unit: str  # year | month | week | day
    text: str

    @property
    def months(self) -> int | None:
        if self.unit == "year":
            return self.value * 12
        if self.unit == "month":
            return self.value
        return None

    @property
    def days(self) -> int:
        return self.value * {"year": 365, "month": 30, "week": 7}.get(self.unit, 1)


def _duration_of(m: re.Match[str]) -> Duration | None:
    raw = m.group("paren") or m.group("bare") or m.group("digits")
    value = int(raw) if raw else _word_number(m.group("wordonly") or m.group("word") or "")
    if not value:
        return None
    unit = m.group("unit").lower().split()[-1].rstrip("s")
    return Duration(value, unit, " ".join(m.group(0).split()))


def durations(text: str) -> list[tuple[Duration, int]]:
    """Every duration in ``text`` with its offset: "twenty-four (24) months", "2 years", "one month's"."""
    out = []
    for m in DURATION_RE.finditer(text):
        d = _duration_of(m)
        if d is not None:
            out.append((d, m.start()))
    return out


def parse_duration(text: str) -> Duration | None:
    found = durations(text or "")
    return found[0][0] if found else None


def notice_days(text: str | int | None) -> int | None:
    """'90 days' -> 90, 'one month's' -> 30, 'four (4) weeks' -> 28, 45 -> 45."""
    if text is None:
        return None
    if isinstance(text, int):
        return text
    d = parse_duration(str(text))
    return d.days if d else None


_INDEFINITE = re.compile(
    r"until\s+terminated|\bat[- ]will\b|\bindefinite(?:ly)?\b|no\s+fixed\s+(?:term|duration|period)|"
    r"for\s+as\s+long\s+as|until\s+(?:either|one)\s+party\s+terminates|perpetual(?:ly)?\s+(?:term|in\s+force)|"
    r"continues?\s+until\s+(?:it\s+is\s+)?terminated",
    re.IGNORECASE,
)


def term_months_of(text: str | int | None) -> TermMonths | None:
    """A term written any way -> months or "indefinite" ('2 years' -> 24, 'until terminated' -> indefinite)."""
    if text is None:
        return None
    if isinstance(text, int):
        return text
    if str(text).strip().lower() == "indefinite" or _INDEFINITE.search(str(text)):
        return "indefinite"
    for d, _ in durations(str(text)):
        if d.months:
            return d.months
    return None


def numbers(text: str | None) -> set[float]:
    """Every number in ``text`` ('1,000,000', '14.20', '(12)', 'twelve', '100%')."""
    found: set[float] = set()
    if not text:
        return found
    for m in re.finditer(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?:\.\d{3})+(?:,\d{1,2})?(?!\d)|"
                         r"\d{1,3}(?:['’]\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?", text):
        found.add(amount_value(m.group(0)))
    for m in re.finditer(_NUMBER_WORD, text, re.IGNORECASE):
        value = _word_number(m.group(0))
        if value:
            found.add(float(value))
    return found


def currency_of(text: str | None) -> str | None:
    m = MONEY_RE.search(text or "")
    if m is None:
        return None
    return _currency_code(m.group("cur") or m.group("cur2") or "")


def money_amounts(text: str | None) -> list[tuple[float, str | None]]:
    out = []
    for m in MONEY_RE.finditer(text or ""):
        amount = amount_value(m.group("amount") or m.group("amount2"))
        if m.group("mult"):
            amount *= 1_000_000
        out.append((amount, _currency_code(m.group("cur") or m.group("cur2") or "")))
    return out


# --- names and law -----------------------------------------------------------------------------------
def normalize_party(name: str) -> str:
    """For comparing names: case, punctuation, '&', 'the' and company-form spellings do not matter."""
    s = name.lower().replace("&", " and ")
    s = re.sub(r"[.,'’\"]", "", s)
    s = re.sub(r"^\s*the\s+", "", s)
    words = s.split()
    forms = {"limited": "ltd", "incorporated": "inc", "corporation": "corp", "company": "co", "na": "na",
             "public limited company": "plc"}
    return " ".join(forms.get(w, w) for w in words)


_LAW_PREFIX = re.compile(
    r"^(?:the\s+)?(?:(?:substantive|internal)\s+)?laws?\s+(?:of|in\s+force\s+in)\s+|^(?:the\s+)?(?:state|commonwealth|"
    r"province|federal\s+republic|republic|kingdom|grand\s+duchy|canton|territory)\s+of\s+|^the\s+",
    re.IGNORECASE,
)


# "French law" names France: the adjectives of the jurisdictions contracts are most often governed by
_LAW_ADJECTIVES = {
    "french": "France", "german": "Germany", "dutch": "the Netherlands", "irish": "Ireland", "italian": "Italy",
    "spanish": "Spain", "swiss": "Switzerland", "belgian": "Belgium", "swedish": "Sweden", "danish": "Denmark",
    "norwegian": "Norway", "finnish": "Finland", "austrian": "Austria", "polish": "Poland",
    "portuguese": "Portugal", "luxembourgish": "Luxembourg", "japanese": "Japan", "singaporean": "Singapore",
    "indian": "India", "chinese": "China", "welsh": "Wales", "canadian": "Canada", "australian": "Australia",
    "greek": "Greece", "czech": "the Czech Republic", "hungarian": "Hungary", "romanian": "Romania",
    "english": "England and Wales", "scots": "Scotland", "scottish": "Scotland",
    "kenyan": "Kenya", "nigerian": "Nigeria", "philippine": "the Philippines", "malaysian": "Malaysia",
}
# "Hong Kong Special Administrative Region of the People's Republic of China" is Hong Kong
_LAW_SUFFIX = re.compile(r"(?i)\s+special\s+administrative\s+region\b.*$|\s+\(?SAR\)?$")


def _law_name(text: str) -> str:
    """'French law' -> 'France'; 'Hong Kong Special Administrative Region' -> 'Hong Kong'; else as is."""
    m = re.fullmatch(r"(?i)(?:the\s+)?(\w+)(?:\s+law)?", text.strip())
    if m and m.group(1).lower() in _LAW_ADJECTIVES:
        return _LAW_ADJECTIVES[m.group(1).lower()]
    return _LAW_SUFFIX.sub("", text)


def canonical_law(text: str | None) -> str | None:
    """'the laws of the State of New York' -> 'new york'; 'English law' -> 'england and wales'."""
    if not text:
        return None
    s = _law_name(" ".join(text.replace("&", "and").split()).strip(" .,;:"))
    if re.fullmatch(r"(?i)english(?:\s+law)?|england", s):
        return "england and wales"
    if re.fullmatch(r"(?i)scots(?:\s+law)?", s):
        return "scotland"
    previous = None
    while previous != s:
        previous = s
        s = _LAW_PREFIX.sub("", s).strip()
    s = re.split(r"(?i),|;|\s+and\s+the\s+|\s+(?:without|excluding|exclusive|notwithstanding|consistent|applicable|"
                 r"as\s+applied|and\s+any|and\s+federal|including)\b", s)[0]
    s = re.sub(r"(?i)\s+law$", "", s).strip(" .")
    s = s.lower()
    return {"united states": "united states", "usa": "united states", "uk": "england and wales",
            "england": "england and wales"}.get(s, s) or None


def _display_law(text: str) -> str:
    s = re.sub(r"(?i)^(?:the\s+)?(?:substantive|internal)\s+", "", " ".join(text.split()).strip(" .,;:"))
    previous = None
    while previous != s:
        previous = s
        s = _LAW_PREFIX.sub("", s).strip()
    s = re.split(r",|;|\s+and\s+the\s+|\s+(?:without|excluding|exclusive|notwithstanding|consistent|applicable|as\s+"
                 r"applied|and\s+any|and\s+federal|including)\b", s, flags=re.IGNORECASE)[0]
    return _law_name(re.sub(r"(?i)\s+law$", "", s.strip(" .")))


def tidy_name(raw: str) -> str:
    """A party's name from the text that starts with it; capitals become title case."""
    lines = [ln for ln in raw.splitlines() if ln.strip() and not _HEADING_LINE.fullmatch(ln.strip())]
    s = " ".join((lines[-1] if lines else raw).split()).strip()
    s = re.sub(r"^(?:\(?\d{1,2}[.)]?\s+|\(?[a-z]\)\s+|[-–]\s*and\s*[-–]\s*|and\s*:?\s+|between\s*:?\s+|among\s*:?\s+)",
               "", s,
               flags=re.IGNORECASE)
    m = _NAME_END.search(s)
    if m:
        s = s[: m.start()]
    s = s.strip(" ,;:\"'“”")
    suffix = _COMPANY_SUFFIX.search(s)
    if suffix:
        s = s[: suffix.end()].strip(" ,;:")
    if s.isupper() and len(s) > 4:
        words = []
        for w in s.split():
            low = w.lower()
            words.append(_SUFFIX_CASE.get(low, w.capitalize() if w.isalpha() or "." in w or "&" in w else w))
        s = " ".join(words)
        s = re.sub(r"\bInc\b(?!\.)", "Inc.", s) if "INC." in raw.upper() else s
    return s


# --- segments ---------------------------------------------------------------------------------------
@dataclass
class FieldValues:
    """The extracted fields and, per field, the index of the segment it was read from."""

    parties: list[str] = field(default_factory=list)
    effective_date: str | None = None
    term: str | None = None
    term_months: TermMonths | None = None
    governing_law: str | None = None
    payment: str | None = None
    liability_cap: str | None = None
    termination_notice: str | None = None
    termination_notice_days: int | None = None
    defined_names: dict[str, str] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Sentence:
    text: str
    section: str
    segment: int


_CELL_SPLIT = re.compile(r"\s*\|\s*")


def _sentences(segments: Sequence[tuple[str, str]]) -> list[_Sentence]:
    out = []
    for index, (section, text) in enumerate(segments):
        for line in text.splitlines():
            if line.count("|") >= 2:
                continue  # tables are read as cells
            for piece in _split_line(line):
                out.append(_Sentence(piece, section, index))
    return out


def _split_line(line: str) -> list[str]:
    """The sentences (and semicolon clauses) of one line.

    Uses the shared ``split_sentences`` so that a cross-reference ("Section 8.2", "under
    Clause 12. the"), an abbreviation ("Art. 9", "U.S. $", "Acme Inc. (the") or a decimal
    does not end a sentence: a value read to the sentence end would be cut there.
    """
    pieces: list[str] = []
    for sentence in split_sentences(line):
        pieces.extend(p.strip() for p in re.split(r"(?<=;)\s+(?=[A-Z(\"“])", sentence) if p.strip())
    return pieces


_ROW_INDEX = re.compile(r"(?i)(?:item\s*)?\(?(?:\d{1,3}(?:\.\d{1,2})?|[a-z]|[ivx]{1,4})[.)]?")


def _label_value_pairs(line: str) -> list[tuple[str, str]]:
    """(label, value) pairs of a table line. Chunking joins a table's rows into one line ("| Date | 1 May
    2026 | | Term | 12 months |"), so rows are split at "| |" first: pairing the cells of the whole line
    would shift every pair by one after a header with an empty cell ("| Particulars | |")."""
    pairs: list[tuple[str, str]] = []
    for row in re.split(r"\|\s*\|", line.strip()):
        cells = [c.strip() for c in _CELL_SPLIT.split(row.strip()) if c.strip()]
        cells = [c for c in cells if not re.fullmatch(r"-{2,}|:?-+:?", c)]
        if len(cells) == 3 and _ROW_INDEX.fullmatch(cells[0]):
            cells = cells[1:]  # "| 3 | Commencement Date | 1st July 2025 |": an item number, then the pair
        pairs.extend(zip(cells[::2], cells[1::2], strict=False))
    return pairs


def _cells(segments: Sequence[tuple[str, str]]) -> list[tuple[str, str, int]]:
    """(label, value, segment) from table rows ("| Label | Value |") and "Label: value" lines."""
    out = []
    for index, (_, text) in enumerate(segments):
        for line in text.splitlines():
            if line.count("|") >= 2:
                for label, value in _label_value_pairs(line):
                    out.append((label, value, index))
                    # a "Parties" cell may hold "Landlord: X. Tenant: Y"
                    for sub in re.finditer(rf"\b({_ROLE_WORDS})\s*:\s*([^:]+?)(?=\s+(?:{_ROLE_WORDS})\s*:|$)", value):
                        out.append((sub.group(1), sub.group(2).strip(), index))
            else:
                labels = list(_INLINE_LABEL.finditer(line))
                if len(labels) >= 3:  # a "Key Details" block of "Label: value" lines, joined into one by chunking
                    for here, after in zip(labels, [*labels[1:], None], strict=True):
                        value = line[here.end(): after.start() if after else len(line)].strip()
                        # "... 4 Mill Lane Licensee: X": the label is the role the address runs into
                        role = re.search(rf"\b(?:{_ROLE_WORDS})$", here.group(1))
                        if value:
                            out.append((role.group(0) if role else here.group(1), value[:200], index))
                    continue
                m = re.match(r"^\s*([A-Z][A-Za-z ./()-]{1,40}?)\s*:\s+(\S.{0,200})$", line.strip())
                if m:
                    out.append((m.group(1).strip(), m.group(2).strip(), index))
    return out


# a label in a joined "Label: value" block: Title Case words ("Escrow Start Date:", "Law and Courts:")
_INLINE_LABEL = re.compile(
    r"(?:(?<=\s)|^)([A-Z][A-Za-z/()&'-]*(?:\s+(?:[A-Z][A-Za-z/()&'-]*|of|and|for|to|the|in)){0,4})\s*:\s+"
)


# --- parties ----------------------------------------------------------------------------------------
_RECITAL_START = re.compile(
    r"\bby\s+and\s+(?:between|among)\b|\bbetween\b|\bamong\b|(?:^|\n)\s*(?:THE\s+)?PARTIES\s*:?\s*(?:\n|$)|"
    r"(?:^|\n)\s*Parties\s*:?\s*(?:\n|$)",
    re.IGNORECASE,
)
_RECITAL_END = re.compile(
    r"\bWHEREAS\b|\bBACKGROUND\b|\bRECITALS?\b|\bNOW,?\s+THEREFORE\b|\bIT\s+IS\s+AGREED\b|\(each\s+a\s+[\"“]Party|"
    r"\bthe\s+parties\s+agree\b|\bRecitals?\s*:|\bBackground\s*:|\n\s*(?:1\.?\s+)?(?:Definitions|Interpretation)\b",
)


def _recital_parties(text: str) -> tuple[list[str], dict[str, str]]:
    head = text[:6000]
    start = _RECITAL_START.search(head)
    if start is None:
        return [], {}
    end = _RECITAL_END.search(head, start.end())
    body = head[start.start(): end.start() if end else start.end() + 2500]
    body = re.sub(r"^(?:by\s+and\s+(?:between|among)|between|among|(?:the\s+)?parties)\s*:?", "", body.strip(),
                  flags=re.IGNORECASE).strip()
    parties: list[str] = []
    names: dict[str, str] = {}
    last = 0
    for m in _DEFINED.finditer(body):
        shorts = [s.strip() for s in (m.group(1), m.group(2)) if s]
        if any(_NOT_A_PARTY.search(s) and s.lower() not in _ROLE_WORDS.lower().split("|") for s in shorts):
            last = m.end()
            continue
        raw = body[last: m.start()]
        if len(parties) >= 2 and re.search(r"(?<![A-Z])(?<!Inc)(?<!Ltd)(?<!Co)(?<!Corp)\.\s+[A-Z][a-z]", raw):
            break  # the sentence naming the parties has ended
        last = m.end()
        # the name starts after the previous party's connective
        raw = re.split(
            r"(?i);\s*and\b|\band\s*\n|\n\s*-?\s*and\s*-?\s*\n|,\s+and\s+(?-i:(?=[A-Z]))|\)\s*,?\s*and\s+", raw
        )[-1]
        name = tidy_name(raw.strip(" ,;\n"))
        if name and len(name) > 2 and name not in parties:
            parties.append(name)
            for short in shorts:
                names[short] = name
    if len(parties) < 2:
        # "Parties\n1. Tallowgrove Systems Pty Ltd ACN 612 ... (Company, we, us)\n2. Priyanka Marchetti of 14 ...":
        # numbered lines whose short names are not quoted
        numbered = []
        for line in body.splitlines():
            item = re.match(r"^\s*\(?\d{1,2}[.)]\s+(.+)$", line)
            if item:
                numbered.append(tidy_name(item.group(1)))
            elif line.strip() and numbered and not re.fullmatch(r"Section \d+", line.strip()):
                break  # the list of parties has ended (chunking heads a numbered item "Section N")
        numbered = [name for name in numbered if name and _plausible_party(name)]
        if len(numbered) >= 2:
            return numbered, names
    if len(parties) < 2:
        # "between Acme Ltd and Beta LLC." without defined names
        m2 = re.match(r"(.+?)\s+and\s+(.+?)(?:\.\s|\.$|;|\n|$)", body, re.DOTALL)
        if m2:
            found = [tidy_name(m2.group(1)), tidy_name(m2.group(2))]
            parties = [p for p in found if p and len(p) > 2]
    return parties, names


# a company name with its descriptor right before a definition, in running prose: "... the terms on which
# Bellweather Analytics, Inc., a Delaware corporation (" (the sentence does not start at the name)
_COMPANY_BEFORE_DEFINITION = re.compile(
    rf"((?:[A-Z][\w&'’.-]*\s+(?:(?:of|and|for|de|&)\s+)?){{0,6}}[A-Z][\w&'’.-]*(?i:{_COMPANY_SUFFIX.pattern}))"
    r"(?:,?\s+(?:an?|the)\s+[^()\"“”]{0,80})?\s*,?\s*$"
)


def _defined_names(text: str) -> dict[str, str]:
    """Every 'Full Name Ltd (the "Short")' in the text."""
    names: dict[str, str] = {}
    for m in _DEFINED.finditer(text):
        before = text[max(0, m.start() - 250): m.start()]
        # the name starts after "between", "and", "by" or the previous sentence (not at an initial: "Marcus T.")
        before = re.split(r"[\n;]|\bbetween\b|\b(?:and|by)\b(?=\s+[A-Z])|(?<!\b[A-Z])\.\s", before)[-1]
        company = _COMPANY_BEFORE_DEFINITION.search(before)
        name = tidy_name(company.group(1) if company else before.strip(" ,"))
        if not name or not re.search(r"[A-Z]", name):
            continue
        for short in (m.group(1), m.group(2)):
            if short and not _NOT_A_PARTY.search(short):
                names.setdefault(short.strip(), name)
    return names


def _resolve(name: str, names: dict[str, str]) -> str:
    key = re.sub(r"^the\s+", "", name.strip(" \"'“”"), flags=re.IGNORECASE)
    return names.get(key, name)


_GENERIC_PARTY = re.compile(
    rf"(?i)(?:{_ROLE_WORDS}|Subcontractor|Sub-?processor|Affiliate|Licensor|Party|Parties|Disclosing\s+Party|"
    rf"Receiving\s+Party)s?"
)
_CLAUSE_WORDS = re.compile(r"\b(?:is|are|shall|will|may|must|where|which|who|retains|owns|supersedes|agrees?|has|have|"
                           r"had|concluded|offered|dated)\b")


def _plausible_party(name: str) -> bool:
    """Is this a party's name rather than prose caught after a stray "between" ("As between the parties,
    Customer retains ...") or a bare role ("Provider" in a template with no names filled in)?"""
    bare = re.sub(r"^the\s+", "", name.strip(), flags=re.IGNORECASE)
    if not bare or not (bare[0].isupper() or bare[0].isdigit()):
        return False
    if len(bare.split()) > 12 or _CLAUSE_WORDS.search(bare):
        return False
    return not _GENERIC_PARTY.fullmatch(bare)


def _parties(text: str, cells: list[tuple[str, str, int]], segment_of: list[int]) -> tuple[list[str], dict[str, str],
                                                                                            int | None]:
    names = _defined_names(text)
    parties, recital_names = _recital_parties(text)
    parties = [p for p in parties if _plausible_party(p)]
    names.update(recital_names)
    source = None
    if len(parties) >= 2:
        first = text.find(parties[0].split()[0]) if parties[0] else -1
        source = segment_of[first] if first >= 0 else None
        return [_resolve(p, names) for p in parties], names, source
    roles: list[str] = []
    for label, value, index in cells:
        if re.fullmatch(rf"(?i)(?:the\s+)?(?:{_ROLE_WORDS})(?:\s+name)?", label):
            name = _resolve(tidy_name(value), names)
            if name and name not in roles and _plausible_party(name):
                roles.append(name)
                source = index if source is None else source
    if len(roles) >= 2:
        return roles, names, source
    for m in _ROLE_LINE.finditer(text):
        name = _resolve(tidy_name(m.group("name")), names)
        if name and name not in roles and _plausible_party(name):
            roles.append(name)
            source = segment_of[m.start()] if source is None else source
    if len(roles) >= 2:
        return roles, names, source
    defined = _defined_role_parties(text)
    if len(defined) >= 2:
        return defined, names, segment_of[text.find(defined[0])] if defined[0] in text else source
    return [_resolve(p, names) for p in parties], names, source


_PERSON = r"[A-Z][a-z'’-]+(?:\s+(?:[A-Z]\.|[A-Z][a-z'’-]+)){1,3}"
_JOINT = re.compile(rf"({_PERSON})\s+(?:and|&)\s+({_PERSON})")


def _joint_persons(name: str) -> list[str]:
    """Two people named as one party ('Owen Bakshi and Rosalind Bakshi (together, "Tenant")'), each a
    party; a firm ('Oxley & Finch Cycles Ltd', 'Johnson and Johnson') stays one name."""
    m = _JOINT.fullmatch(name)
    if m is None or _COMPANY_SUFFIX.search(name):
        return [name]
    return [m.group(1), m.group(2)]


# plain-English and letter agreements define the parties as pronouns, quoted or not: "X (we, us)", "Y (you)"
_PRONOUN_DEFINED = re.compile(
    r"\(\s*[\"“']?(?:we|you)[\"”']?(?:\s*(?:,|and|or)\s*[\"“']?(?:us|our|your|yours)[\"”']?)*\s*\)"
)
_NAME_TAIL = re.compile(r"(?:[A-Z][\w&'’.-]*)(?:\s+(?:(?:of|and|for|de|&)\s+)?[A-Z][\w&'’.-]*)*\s*$")


def _pronoun_parties(text: str) -> list[str]:
    """'Coralbay Marine Services Pty Ltd (we, us) will maintain the vessels of Saltgrass Aquaculture Pty Ltd
    (you)': the capitalised name right before each pronoun definition in the opening."""
    found: list[str] = []
    for m in _PRONOUN_DEFINED.finditer(text[:3000]):
        tail = _NAME_TAIL.search(text[max(0, m.start() - 150): m.start()].rstrip())
        name = tidy_name(tail.group(0)) if tail else ""
        if name and _plausible_party(name) and name not in found:
            found.append(name)
    return found


_DEAR = re.compile(
    r"(?m)^\s*Dear\s+(?:(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+)?([A-Z][\w'’-]+(?:\s+[A-Z][\w'’.-]+)+)\s*[,:]?\s*$"
)


def _letter_parties(text: str, defined: list[str]) -> list[str]:
    """An offer or engagement letter: the sender, by its defined role ("Quarrystone Analytics LLC (the
    "Company")") or the company on the letterhead, and the addressee of "Dear Amara Osei," (a full name: a
    first name alone or "Sir or Madam" is not one)."""
    dear = _DEAR.search(text[:3000])
    if dear is None or re.search(r"(?i)\bsir\b|\bmadam\b", dear.group(1)):
        return []
    sender = defined[0] if defined else None
    if sender is None:
        head = _COMPANY_SUFFIX.search(text[: dear.start()])
        line = text[text.rfind("\n", 0, head.start()) + 1: head.end()] if head else ""
        sender = tidy_name(line) if line else None
    return [sender, dear.group(1)] if sender and _plausible_party(sender) else []


def _defined_role_parties(text: str) -> list[str]:
    """Parties named in the opening by their role without a "between": 'entered into by Marcus T. Delgado
    ("Landlord") and Priya Raman ("Tenant")'. Only role names count ("Landlord", "Supplier"), so other
    defined terms of the opening ("Lease", "Premises") do not."""
    roles = {r.lower() for r in _ROLE_WORDS.split("|")} | {"we", "us", "you"}  # ("Bellweather", "we" or "us")
    found: list[str] = []
    for short, name in _defined_names(text[:3000]).items():
        if short.lower() in roles and _plausible_party(name) and name not in found:
            found.append(name)
    if len(found) >= 2:
        return found
    return _pronoun_parties(text) or _letter_parties(text, found)


# --- effective date ---------------------------------------------------------------------------------
_START_TERMS = r"(?:(?:Order|Amendment|Agreement|Contract|Lease|Tenancy|Rental|Hire|Term|Licen[cs]e|" \
               r"Subscription|Services?|Engagement|Employment|Project|SOW)\s+)?" \
               r"(?:(?:Effective|Commencement|Start|Operative|Go[- ]Live|Novation|Assignment)\s+Date|Date\s+of\s+Entry)"
_STRONG_BEFORE = re.compile(
    rf"(?:effective(?:\s+(?:as\s+of|on|from))?(?:\s+the)?|(?:take|takes|took)\s+effect\s+(?:on|from|as\s+of)|"
    rf"with\s+effect\s+(?:on|from)(?:\s+and\s+including)?|from\s+and\s+including|"
    rf"come\s+into\s+(?:force|effect)\s+on|comes\s+into\s+(?:force|effect)\s+on|enter(?:s)?\s+into\s+force\s+on|"
    rf"commenc(?:e|es|ing|ed)(?:\s+(?:on|from))?|begin(?:s|ning)?(?:\s+(?:on|from))?|start(?:s|ing)?(?:\s+(?:on|from))?|"
    # "a term of twelve (12) months from 1 March 2025", "the tenancy runs from ..."
    rf"\b(?:term|tenancy|lease|hire\s+period|rental\s+period)\b[^.;:]{{0,60}}?\s(?:from|runs\s+from)|"
    rf"{_START_TERMS}[\"”]?\s*(?:means|shall\s+(?:mean|be)|will\s+be|is(?:\s+to\s+be)?|:|\|)?)\s*$",
    re.IGNORECASE,
)
_STRONG_AFTER = re.compile(rf"^\s*,?\s*\((?:the|this)\s+[\"“]?{_START_TERMS}[\"”]?\)", re.IGNORECASE)
_WEAK_BEFORE = re.compile(
    r"(?:dated(?:\s+as\s+of)?(?:\s+the)?|as\s+of(?:\s+the)?|made(?:\s+and\s+entered\s+into)?\s+(?:on|this|as\s+of)(?:\s+the)?|"
    r"entered\s+into\s+(?:on|as\s+of|this)(?:\s+the)?|executed\s+(?:on|as\s+of)|date\s+of\s+(?:this\s+)?"
    r"(?:agreement|lease|contract|deed)\W*|LR1\W*date\s+of\s+lease\W*|this)\s*$",
    re.IGNORECASE,
)
_OTHER_DOC_AFTER = re.compile(r"^\s*,?\s*\((?:the|this)\s+[\"“](?![^\"”]*Date)[^\"”]+[\"”]", re.IGNORECASE)
_BAD_BEFORE = re.compile(
    r"(?:signed|signature|executed\s+by|(?<!effective\s)(?<!commencement\s)(?<!start\s)date\s*:|by\s*:|witness|expir\w*|ending|ends|end\s+on|through|until|"
    r"no\s+later\s+than|before|prior\s+to|by|after|terminat\w*)\W*(?:on\s+|at\s+|as\s+of\s+|the\s+)?$",
    re.IGNORECASE,
)


_DATED_BY_LAST_SIGNATURE = re.compile(
    r"(?i)(?:dated|effective|takes?\s+effect|comes?\s+into\s+(?:force|effect))\s+(?:on\s+|as\s+of\s+)?the\s+date\s+"
    r"(?:on\s+which\s+|when\s+)?(?:it\s+(?:has\s+been|is|was)\s+)?(?:signed|executed)\s+by\s+the\s+last|"
    r"date\s+of\s+(?:the\s+)?last\s+(?:signature|execution)|(?:later|latest)\s+of\s+the\s+(?:signature|execution)\s+dates"
)
_SIGNATURE_DATE = re.compile(r"(?i)\b(?:date(?:d)?|signed(?:\s+on)?|date\s+signed)\s*:\s*$")


def _last_signature_date(text: str, dayfirst: bool) -> tuple[date, int] | None:
    """The latest date in the execution blocks ("Date: 22 October 2025"), with its offset."""
    latest: tuple[date, int] | None = None
    for m in DATE_RE.finditer(text):
        if _SIGNATURE_DATE.search(text[max(0, m.start() - 20): m.start()]):
            found = _date_of(m, dayfirst)
            if found is not None and (latest is None or found > latest[0]):
                latest = (found, m.start())
    return latest


def _effective_date(text: str, segment_of: list[int]) -> tuple[str | None, int | None]:
    dayfirst = day_first(text)
    if _DATED_BY_LAST_SIGNATURE.search(text):
        # "This Agreement is dated the date on which it has been signed by the last of the Parties"
        last = _last_signature_date(text, dayfirst)
        if last is not None:
            return last[0].isoformat(), segment_of[last[1]]
    best: tuple[int, int, date] | None = None
    for m in DATE_RE.finditer(text):
        found = _date_of(m, dayfirst)
        if found is None:
            continue
        line_start = text.rfind("\n", 0, m.start()) + 1
        before = text[max(line_start, m.start() - 120): m.start()]
        after = text[m.end(): m.end() + 80]
        sentence_start = max(before.rfind(". "), before.rfind("; "))
        clause = before[sentence_start + 1:] if sentence_start >= 0 else before
        score = 0
        if _STRONG_BEFORE.search(before) or _STRONG_AFTER.search(after):
            score += 10
        if _STRONG_AFTER.search(after):
            score += 2
        if _WEAK_BEFORE.search(before):
            # "This Agreement is dated ..." but not "an agreement dated ..." (another document)
            score += 4 if re.search(r"(?i)\bthis\b|^\W*$|date\s+of", clause) or clause.strip() == "" or \
                re.search(r"\bDated(?:\s+as\s+of)?\s*$", before) else -2  # a heading's "Dated as of ..."
        if _OTHER_DOC_AFTER.search(after):
            score -= 15
        if re.search(r"(?i)^[^.;]{0,60}?\b(?:continuing\s+on|thereafter|install?ments?)\b", after):
            score -= 12  # "Commencing on April 1, 2025 and continuing on the first day of each month": payments
        if _BAD_BEFORE.search(before):
            score -= 8
        if re.search(r"(?i)\bwhereas\b|\bsigned\b|(?<!effective\s)(?<!commencement\s)(?<!start\s)\bdate\s*:", clause):
            score -= 6
        if re.search(r"(?i)(?:agreement|letter|amendment|contract|order|note|deed|lease)\s+(?:dated|effective)\b",
                     clause) and \
                not re.search(r"(?i)\bthis\s+\w*\s*(?:agreement|amendment|contract|order|note|deed|lease)", clause):
            score -= 6
        key = (score, -m.start(), found)
        if best is None or key[:2] > best[:2]:
            best = key
            best_at = m.start()
    if best is None or best[0] < 0:
        return None, None
    return best[2].isoformat(), segment_of[best_at]


# --- term ---------------------------------------------------------------------------------------------
_TERM_SECTION = re.compile(r"(?i)\bterm\b(?!s)|duration|commencement|period of agreement|maturity")
_TERM_STRONG = re.compile(
    r"(?i)(?:initial|subscription|contract|agreement|lease)?\s*term\b[^;]{0,80}?(?:of|is|shall\s+be|:|\|)\s*$|"
    r"continue(?:s)?(?:\s+in\s+(?:force|effect))?\s+(?:for\s+)?(?:a\s+(?:further\s+)?period\s+of|an\s+initial\s+"
    r"(?:period|term)\s+of|a\s+term\s+of)?\s*$|remain(?:s)?\s+in\s+(?:full\s+)?(?:force|effect)\s+(?:for\s+)?"
    r"(?:a\s+period\s+of)?\s*$|(?:initial\s+)?period\s+of\s*$|extended\s+for\s+(?:an\s+additional|a\s+further)"
    r"(?:\s+period\s+of)?\s*$|maturity\s+date[^;]{0,60}$|for\s+(?:a\s+)?(?:fixed\s+)?term\s+of\s*$|"
    r"(?:(?:shall|will)\s+)?(?:run|last)s?\s+for\s*$|(?:^|\|)\s*$",
)
_TERM_AFTER = re.compile(
    r"(?i)^\W{0,3}(?:from|after|commencing|beginning|starting|following)\s+(?:and\s+including\s+)?(?:the\s+)?"
    r"(?:date|effective|commencement|term\s+commencement|start|closing|order)",
)
_TERM_NOISE = re.compile(
    r"(?i)surviv|confidential|warrant|insur|solicit|renew|successive|vest|prepay|forecast|contract\s+year\s+means|"
    r"suspend|interest|publicat|afterwards|after\s+(?:the\s+)?(?:end|termination|expiry)|amortis|amortiz|within|"
    r"notice|retain|retention|cliff|option|repay|invoice|payment|audit|non-compet|exclusiv|guarantee|"
    r"per\s+(?:annum|year|month)|each\s+period\s+of|training",
)


_TERM_NOISE_AFTER = re.compile(
    r"(?i)after\s+(?:the\s+)?(?:end|termination|expiry|expiration|delivery|acceptance)|afterwards|from\s+delivery|"
    r"following\s+(?:termination|expiry)|preceding"
)


_ANNIVERSARY = re.compile(
    rf"(?i)\b(?:expir\w*|end\w*|terminat\w*|until|through)\s+(?:on\s+)?(?:the\s+)?"
    rf"(?:(?P<word>{'|'.join(ORDINAL_WORDS)})\s*(?:\(\d+(?:st|nd|rd|th)\)\s*)?|(?P<num>\d+)(?:st|nd|rd|th)\s+)"
    rf"anniversary\b",
)
_TERM_END = re.compile(r"(?i)\b(?:end|ends|ending|expire|expires|expiring|terminate|terminates|until|through|to)"
                       r"\s+(?:and\s+including\s+)?(?:at\s+(?:midnight|noon|[\d:.]+\s*(?:[ap]\.?m\.?)?)\s+)?"
                       r"(?:on\s+)?(?:the\s+)?$")
_TERM_BEGIN = re.compile(r"(?i)\b(?:start|starts|starting|begin|begins|beginning|commence|commences|commencing|from)"
                         r"\s+(?:and\s+including\s+)?(?:on\s+)?(?:the\s+)?$")


def _anniversary_months(text: str) -> int | None:
    """'shall expire on the second (2nd) anniversary of the Effective Date' -> 24: a term written as an
    anniversary rather than a duration."""
    m = _ANNIVERSARY.search(text)
    if m is None:
        return None
    years = ORDINAL_WORDS[m.group("word").lower()] if m.group("word") else int(m.group("num"))
    return years * 12


_END_DEFINED = re.compile(
    r"(?i)\s*\((?:the\s+)?[\"“](?:Maturity|Expiry|Expiration|End|Termination|Final)\s+Date[\"”]\)"
)


def _date_span_months(text: str, dayfirst: bool, start: date | None) -> int | None:
    """A term written as two dates ("starts on 1 April 2026 and ends on 31 March 2028", "from 1/4/2026 to
    31/3/2027"), or as an end date after the Effective / Commencement Date (``start``)."""
    begin = end = None
    defined_end = False
    for m in DATE_RE.finditer(text):
        before = text[max(0, m.start() - 40): m.start()]
        if _TERM_END.search(before):
            end = end or _date_of(m, dayfirst)
        elif _TERM_BEGIN.search(before):
            begin = begin or _date_of(m, dayfirst)
        if end is None and _END_DEFINED.match(text[m.end(): m.end() + 40]):
            end = _date_of(m, dayfirst)  # "payable in full on March 1, 2029 (the "Maturity Date")"
            defined_end = True
    if begin is None and (re.search(r"(?i)(?:effective|commencement|start)\s+date", text) or defined_end):
        begin = start
    if begin is None or end is None or end <= begin:
        return None
    return span_months(begin, end)


def _periodic(text: str) -> bool:
    """A tenancy or engagement that runs "on a month-to-month basis" / "from week to week" with no fixed
    period in the same sentence ("12 months, then month-to-month" keeps its 12): it has no end date."""
    periodic = re.compile(r"(?i)\b(?:an?\s+)?(?:month|week|year)[- ]to[- ](?:month|week|year)\b|\bperiodic\s+tenancy\b")
    return bool(periodic.search(text)) and not any(d.months for d, _ in durations(periodic.sub(" ", text)))


_AFTER_FIXED_TERM = re.compile(
    r"(?i)\b(?:on|upon|after|following)\s+(?:the\s+)?(?:expiry|expiration|end)\s+of\s+the\s+(?:initial|fixed|minimum)|"
    r"successive\s+periods|\bthereafter\b|if\s+neither\s+party|hold\s*over"
)


def _until_an_event(text: str) -> bool:
    """'This Agreement continues in force until the earliest of: (a) the Company being wound up; ...': it ends
    on events, not on a date or after a period (a joint venture, a shareholders' agreement)."""
    return bool(re.search(r"(?i)continues?\s+in\s+(?:full\s+)?(?:force|effect)\s+until\s+the\s+earli(?:er|est)\s+of",
                          text)) and not DATE_RE.search(text) and not any(d.months for d, _ in durations(text))


def _term(sentences: list[_Sentence], cells: list[tuple[str, str, int]], *, dayfirst: bool = True,
          start: date | None = None) -> tuple[str | None, TermMonths | None, int | None]:
    for label, value, index in cells:
        term_label = re.search(r"(?i)\b(?:initial\s+|subscription\s+|contract\s+)?(?:term|duration)\b", label)
        if term_label and not re.search(r"(?i)date|payment|notice|commencement", label):
            months = term_months_of(value)
            if months is not None:
                return f"{label}: {value}", months, index
    for label, value, index in cells:
        # a cover table's "SOW End Date" / "Expiry Date" after the effective date: the term is the span
        if start is not None and re.search(r"(?i)\b(?:end|expiry|expiration)\s+date\b", label):
            end = parse_date(value, dayfirst=dayfirst)
            if end is not None and end > start:
                return f"{label}: {value}", span_months(start, end), index
    best: tuple[int, _Sentence, TermMonths] | None = None
    for s in sentences:
        text = s.text
        in_section = bool(_TERM_SECTION.search(s.section.split(">")[-1]))
        if (_INDEFINITE.search(text) or _periodic(text) or _until_an_event(text)) and \
                not re.search(r"(?i)surviv|trade\s+secret|confidential", text):
            score = 6 + (3 if in_section else 0)
            if re.search(r"(?i)\b(?:this\s+)?(?:agreement|employment|engagement|lease)\b", text):
                score += 2
            if _AFTER_FIXED_TERM.search(text):
                score -= 4  # "On expiry of the Initial Period, this Agreement continues ... until terminated"
            if best is None or score > best[0]:
                best = (score, s, "indefinite")
            continue
        written_as = _anniversary_months(text) or _date_span_months(text, dayfirst, start)
        if written_as and (not _TERM_NOISE.search(text) or _END_DEFINED.search(text)) and \
                re.search(r"(?i)\b(?:this\s+)?(?:agreement|engagement|lease|term|loan|note|deed|contract|it)\b", text):
            score = 8 + (3 if in_section else 0)
            if best is None or score > best[0]:
                best = (score, s, written_as)
            continue
        for d, at in durations(text):
            if not d.months:
                continue
            before, after = text[:at], text[at + len(d.text):]
            score = 0
            if _TERM_STRONG.search(before):
                score += 6
            if _TERM_AFTER.search(after):
                score += 3
            if in_section:
                score += 3
            if re.search(r"(?i)\b(?:this\s+)?(?:agreement|engagement|lease|term|loan)\b", text):
                score += 1
            if _TERM_NOISE.search(before[-100:]) or _TERM_NOISE_AFTER.search(after[:40]):
                score -= 6
            if score >= 6 and (best is None or score > best[0]):
                best = (score, s, d.months)
            break
    if best is None:
        return _open_ended_employment(sentences)
    return best[1].text, best[2], best[1].segment


def _open_ended_employment(sentences: list[_Sentence]) -> tuple[str | None, TermMonths | None, int | None]:
    """An employment contract that states no fixed term or end date is open-ended (UK and most
    European contracts say so only by omission): 'indefinite', read from the first sentence about the
    employment's start."""
    text = " ".join(s.text for s in sentences)
    if not re.search(r"(?i)\byour\s+employment\b|\bthe\s+employee['’]s\s+employment\b", text) or \
            re.search(r"(?i)fixed[- ]term|temporary|end\s+date|expir", text):
        return None, None, None
    for s in sentences:
        if re.search(r"(?i)employment\b[^.]{0,80}\b(?:begins?|starts?|commences?)", s.text):
            return s.text, "indefinite", s.segment
    return None, None, None


# --- governing law --------------------------------------------------------------------------------------
_LAW_SENTENCE = re.compile(
    r"(?i)(?:governed\s+by|construed\s+(?:and\s+enforced\s+)?(?:in\s+accordance\s+with|under)|subject\s+to)\s+"
    r"(?:and\s+(?:construed|interpreted|enforced)\s+(?:in\s+accordance\s+with|under)\s+)?(?P<law>(?:the\s+)?(?:substantive\s+|internal\s+)?"
    r"laws?\s+(?:of|in\s+force\s+in)\s+[^;.]{2,120}|(?:(?:substantive|internal)\s+)?(?:English|Scots|[A-Z][a-z]+)\s+law|"
    # a defined term, resolved through its definition: "construed in accordance with the Governing Law"
    r"(?-i:(?:the\s+)?(?:[A-Z][a-z]+\s+){1,3}(?:Law|Laws|Jurisdiction|State|Country)\b))",
)


# the law as the subject: "The laws of Scotland apply to this agreement", "English law governs this Agreement"
_LAW_SUBJECT = re.compile(
    r"(?i)(?:^|\W)(?P<law>(?:the\s+)?(?:laws?\s+(?:of|in\s+force\s+in)\s+[^;.]{2,80}?|(?:English|Scots|[A-Z][a-z]+)\s+law))"
    r"\s+(?:shall\s+|will\s+|is\s+to\s+)?(?:appl(?:y|ies)\s+to|govern(?:s)?)\s+(?:this|the)\s+"
    r"(?:agreement|contract|lease|licen[cs]e|deed|order|terms)",
)


def _law_match(text: str) -> re.Match[str] | None:
    """'governed by the laws of X', else the law as the subject of the sentence ('the laws of X apply to this
    agreement', plain-English and letter contracts)."""
    return _LAW_SENTENCE.search(text) or _LAW_SUBJECT.search(text)


_PLACEHOLDER = re.compile(r"\[[^\]]*\]|_{3,}|\b(?:fill\s+in|insert|to\s+be\s+(?:agreed|confirmed))\b", re.IGNORECASE)


_NO_PLACE = re.compile(r"(?i)^(?:the\s+)?(?:state|country|jurisdiction|province|place)\s+(?:in|where|of\s+which)\b")


def _filled(value: str | None) -> str | None:
    """None for a template blank ("[Fill in state]", "____", "[insert jurisdiction]") or a law that names
    no place ("the state in which the Building is located"): not a jurisdiction."""
    return None if value is None or _PLACEHOLDER.search(value) or _NO_PLACE.search(value) else value


def _law_definition(term: str, sentences: list[_Sentence], cells: list[tuple[str, str, int]]) -> str | None:
    """The jurisdiction a defined term stands for: a cell labelled with it, '"Governing Member State" means
    France' or 'France (the "Governing Member State")'; None when the text does not say."""
    for label, value, _ in cells:
        if label.strip(" :*").lower() == term.lower() and canonical_law(value) and _filled(value):
            return _display_law(value)
    quoted = rf"[\"“']{re.escape(term)}[\"”']"
    means = re.compile(rf"(?i){quoted}\s*(?:means|shall\s+mean|is|refers\s+to)\s+(?P<v>[^;:()]{{2,100}})")
    named = re.compile(rf"(?P<v>(?:[A-Z][\w'-]*\s+(?:of\s+)?){{0,3}}[A-Z][\w'-]*)\s*\((?:the\s+)?{quoted}\)")
    for s in sentences:
        m = means.search(s.text) or named.search(s.text)
        if m:
            return _filled(_display_law(m.group("v")))
    return None


def _governing_law(sentences: list[_Sentence], cells: list[tuple[str, str, int]]) -> tuple[str | None, int | None]:
    for label, value, index in cells:
        if re.search(r"(?i)governing\s+law|applicable\s+law|law\b", label) and canonical_law(value) and \
                _filled(value):
            return _display_law(value), index
    text = "\n".join(s.text for s in sentences)
    for s in sentences:
        m = _law_match(s.text)
        if m and not re.search(r"(?i)^\s*(?:the\s+)?laws?\s+stated", m.group("law")):
            law = m.group("law")
            if re.fullmatch(r"(?i)english\s+law", law.strip()):
                return "England and Wales", s.segment
            if re.fullmatch(r"(?i)scots\s+law", law.strip()):
                return "Scotland", s.segment
            shown = _filled(_display_law(law))
            term = re.sub(r"(?i)^(?:the\s+)?(?:laws?\s+of\s+)?(?:the\s+)?", "", law.strip())
            if term and re.search(rf"[\"“']{re.escape(term)}[\"”']", text):
                # a defined term ("the laws of the Governing Member State"): the jurisdiction it stands for
                shown = _law_definition(term, sentences, cells)
            if shown:
                return shown, s.segment
    return None, None


# --- money: payment and liability cap -------------------------------------------------------------------
_PAY_GOOD = re.compile(
    r"(?i)\bfees?\b|price|rent\b|salary|remunerat|(?:daily|day|hourly)\s+rate|principal|loan\b|funding|purchase|consideration|subscription|licen[cs]e\s+fee|"
    r"royalt|compensation|remuneration|retainer|contract\s+(?:price|value)|charge[sd]?\b|\bpay\b|payable|amount\s+of",
)
_PAY_BAD = re.compile(
    r"(?i)liabil|liable|insur|cover\b|interest|late|credit|bonus|signing|overdue|penalt|damages|allowance|exceed|"
    r"\bcap\b|limit|above|origination|service\s+charge|estimated|deposit|additional|outside|prepaid|was\b|"
    r"previous|original|reimburs|expense|excess|overage|per\s+additional|indemn|debt|security\s+deposit|"
    r"withhold|hourly|per\s+hour|training|parts",
)
# what one "per" unit may be: one to three words ("per unit", "per housing unit", "per rentable square foot"), not
# a word that starts the rest of the sentence ("per month in advance", "per annum exclusive of VAT")
_PER_WORD = r"(?i:(?!(?:and|or|plus|payable|in|on|by|for|which|that|exclusive|excluding|inclusive|including|net|" \
            r"of|to|from|at|is|are|will|shall|the|a|an|as|with|within|under|subject|due|per|cent|thereafter|only|until|during|after|before|if|when|where|so|but|plus)\b)[a-z][a-z-]*)"
_PER = rf"(?i:per)\s+{_PER_WORD}(?:\s+{_PER_WORD}){{0,2}}"
_PERIOD = re.compile(
    rf"^\s*(?:\([^)]*\)\s*)?(?:\w+\s+){{0,3}}?({_PER}(?:,?\s+{_PER})?|(?i:a\s+(?:year|month))|"
    r"(?i:for\s+each\s+(?:hour|day|week|month|year|unit))|"
    r"(?i:each\s+(?:calendar\s+|contract\s+)?(?:year|month|quarter))|(?i:in\s+each\s+(?:contract\s+|calendar\s+)?year))",
)


# the dollars a contract may name in words: "$150 (Canadian dollars)", "amounts are in Australian dollars"
_DOLLAR_CODES = {"canadian": "CAD", "australian": "AUD", "new zealand": "NZD", "singapore": "SGD",
                 "hong kong": "HKD", "us": "USD", "u.s.": "USD"}
_DOLLAR_COUNTRIES = r"Canadian|Australian|New\s+Zealand|Singapore|Hong\s+Kong"


def _dollar_code(country: str) -> str:
    return _DOLLAR_CODES[" ".join(country.lower().split())]


def _money_phrase(text: str, m: re.Match[str]) -> str:
    phrase = " ".join(m.group(0).split())
    before = text[max(0, m.start() - 60): m.start()].lower()
    period = _PERIOD.search(text[m.end(): m.end() + 40])
    named = re.match(rf"\s*\(?\s*({_DOLLAR_COUNTRIES}|US|U\.S\.)\s+dollars\)?", text[m.end():], re.IGNORECASE)
    if named and phrase.startswith("$"):
        phrase = f"{_dollar_code(named.group(1))} {phrase[1:]}"  # "$150 (Canadian dollars)" is CAD 150
        period = _PERIOD.search(text[m.end() + named.end(): m.end() + named.end() + 40])
    if period:
        suffix = period.group(1)
        suffix = re.sub(r"(?i)^(?:in\s+|for\s+)?each\s+", "per ", suffix)
        suffix = " ".join(w if re.search(r"[A-Z].*[A-Z]", w) else w.lower() for w in suffix.split())  # not "MWh"
        phrase += " " + " ".join(suffix.split())
    elif re.search(r"\bmonthly\b", before):
        phrase += " per month"
    elif re.search(r"\b(?:annual|yearly)\b", before):
        phrase += " per year"
    return phrase


def _payment(sentences: list[_Sentence], cells: list[tuple[str, str, int]]) -> tuple[str | None, int | None]:
    best: tuple[int, str, int] | None = None
    for label, value, index in cells:
        m = MONEY_RE.search(value)
        if m and _PAY_GOOD.search(label) and not _PAY_BAD.search(label):
            score = 12 - (4 if _PAY_BAD.search(value) else 0)
            if best is None or score > best[0]:
                best = (score, _money_phrase(value, m), index)
    for s in sentences:
        text = s.text
        for rank, m in enumerate(MONEY_RE.finditer(text)):
            local = text[max(0, m.start() - 90): m.end() + 30]
            score = 0
            if _PAY_GOOD.search(local):
                score += 5
            if _PAY_GOOD.search(s.section):
                score += 2
            if _PAY_BAD.search(text[max(0, m.start() - 90): m.start()]):
                score -= 8
            elif _PAY_BAD.search(local):
                score -= 3
            if _PERIOD.search(text[m.end(): m.end() + 40]) or re.search(r"(?i)monthly|annual", local):
                score += 2
            wide = text[max(0, m.start() - 160): m.start()]
            if re.search(r"(?i)\b(?:sum|amount)\s+of\b", wide) and _PAY_GOOD.search(wide):
                score += 4  # "rent in the sum of Kenya Shillings One Million ... (KES 1,480,000)": words, then figure
            score -= rank
            if score >= 4 and (best is None or score > best[0]):
                best = (score, _money_phrase(text, m), s.segment)
    if best is None:
        return _percentage_payment(sentences)
    return best[1], best[2]


_SHARE = r"\(?(?P<pct>\d+(?:\.\d+)?)\s*(?:%|per\s*cent)\)?"
_PERCENT_PAY = re.compile(
    rf"(?i)\b(?P<kind>commission|royalty|royalties)\s+(?:of|equal\s+to|at(?:\s+the\s+rate\s+of)?)\s+"
    rf"(?:[a-z-]+(?:\s+[a-z-]+)?\s+per\s*cent\s+)?{_SHARE}(?:\s+of\s+(?:the\s+)?(?P<base>[a-z][a-z ]{{2,30}}?))?"
    rf"(?=\s+(?:on|in|for|payable|received|from|during|earned)\b|[,.;)]|$)"
)


_DOLLAR_DECLARATION = re.compile(
    r"(?i)\b(?:all\s+)?(?:amounts|sums|fees|prices|payments)\b[^.;]{0,40}?\b(?:are|is|shall\s+be|will\s+be)\s+"
    rf"(?:stated\s+|expressed\s+|payable\s+|denominated\s+)?in\s+({_DOLLAR_COUNTRIES})\s+dollars"
)


def _declared_dollars(text: str) -> str | None:
    """'All amounts in this agreement are in Australian dollars': "$" means AUD; None when nothing is declared."""
    m = _DOLLAR_DECLARATION.search(text)
    return _dollar_code(m.group(1)) if m else None


def _percentage_payment(sentences: list[_Sentence]) -> tuple[str | None, int | None]:
    """A contract paid by a share rather than an amount (a commercial agent's commission, a royalty):
    'a commission of nine per cent (9%) of Net Sales' -> '9% commission on net sales'."""
    for s in sentences:
        m = _PERCENT_PAY.search(s.text)
        if m:
            kind = "royalty" if m.group("kind").lower().startswith("royalt") else "commission"
            base = f" on {m.group('base').strip().lower()}" if m.group("base") else ""
            return f"{m.group('pct')}% {kind}{base}", s.segment
    return None, None


_CAP_SENTENCE = re.compile(
    r"(?i)(?:liabilit\w*|liable)[^;]{0,200}?(?:(?:shall|will|does|is)\s+)?(?:not(?:\s+to)?|in\s+no\s+(?:case|event))"
    r"\s+exceed\s+(?P<a>[^;]+)|(?:liabilit\w*|liable)[^;]{0,200}?(?:is|are|shall\s+be|will\s+be)\s+(?:limited|capped)\s+"
    r"(?:to|at)\s+(?P<b>[^;]+)|(?:liabilit\w*)[^;]{0,60}?(?:cap|maximum)\s+(?:of|is|shall\s+be)\s+(?P<c>[^;]+)|"
    # "In no event shall the Developer's aggregate liability ... exceed X" (the verb before the subject)
    r"in\s+no\s+event\s+(?:shall|will)\s+[^;]{0,120}?liabilit\w*[^;]{0,150}?\s+exceed\s+(?P<d>[^;]+)|"
    # "NEITHER PARTY'S AGGREGATE LIABILITY ... SHALL EXCEED X" (the negation is in "neither")
    r"\bneither\s+party['’]s\s+[^;]{0,40}?liabilit\w*[^;]{0,150}?\s+(?:shall|will|may)\s+exceed\s+(?P<g>[^;]+)|"
    # plain English: "The most we will pay you for all claims under this agreement is £100,000"
    r"\bthe\s+most\s+(?:that\s+)?(?:we|you|it|either\s+(?:of\s+us|party)|each\s+party|(?:the\s+)?[A-Z]\w+)\s+"
    r"(?:will|shall|can|may|would)\s+(?:have\s+to\s+)?(?:pay|be\s+liable)[^;]{0,120}?\s+is\s+(?P<e>[^;]+)|"
    # "neither of us will be liable to the other for more than the total fees ..."
    r"\bliable\s+(?:to\s+(?:the\s+other|\w+)\s+)?(?:in\s+total\s+|in\s+aggregate\s+)?for\s+more\s+than\s+(?P<f>[^;]+)",
)


def _cap_value(raw: str) -> str:
    """The cap as written, to the end of its sentence (a dot inside "Section 8.2" or "$1,000,000.00" is
    not an end; the sentence split already decided that), without a trailing defined name or relative clause.
    A cap shouted in capitals (US limitation clauses) comes back in lower case, currency codes kept."""
    value = re.split(r"(?i),\s+which\b|\s+\(the\s+[\"“]", raw)[0].strip().rstrip(".\"”'").strip()
    letters = [c for c in value if c.isalpha()]
    if len(letters) > 8 and sum(c.isupper() for c in letters) > 0.8 * len(letters):
        value = re.sub(r"[A-Z]{2,}\$?|[A-Z]\$", lambda m: m.group(0) if _currency_code(m.group(0)) else
                       m.group(0).lower(), value)
    return value


def _liability_cap(sentences: list[_Sentence], cells: list[tuple[str, str, int]]) -> tuple[str | None, int | None]:
    for label, value, index in cells:
        if re.search(r"(?i)liabilit", label) and (numbers(value) or MONEY_RE.search(value)):
            return value, index
    found: list[tuple[str, int]] = []
    for s in sentences:
        m = _CAP_SENTENCE.search(s.text)
        if m:
            cap = next(g for g in m.groups() if g).strip()
            if re.search(r"(?i)cover\s+sheet|particulars|schedule|order\s+form\s+details", cap) and not numbers(cap):
                continue  # refers to a table; the cell was looked at above
            found.append((_cap_value(cap), s.segment))
    # "limited to the damage typically foreseeable" then "limited to EUR 300.000,00": the figure is the cap
    with_figure = [f for f in found if MONEY_RE.search(f[0]) or re.search(r"(?i)fees|charges|price|%", f[0])]
    if not found:
        return None, None
    return (with_figure or found)[0]


# --- termination notice -----------------------------------------------------------------------------------
_NOTICE_TRIGGER = re.compile(
    r"(?i)terminat|non-?renewal|withdraw|resign|break\s+(?:date|option|clause|notice)|cancel|end\s+(?:this|the|your|"
    r"our)\s+(?:agreement|lease|engagement|tenancy|contract|employment|licen[cs]e|subscription|arrangement)",
)
_NOTICE_BAD = re.compile(
    r"(?i)\bcure[ds]?\b|remed|breach|suspend|audit|sub-?processor|prepay|publication|insolv|"
    r"default|convert|within\s+\S+\s+(?:\(\d+\)\s+)?days?\s+(?:after|of)\s+(?:written\s+)?notice",
)


def _termination_notice(sentences: list[_Sentence], cells: list[tuple[str, str, int]]) -> tuple[Duration | None,
                                                                                                int | None]:
    for label, value, index in cells:
        if re.search(r"(?i)notice", label) and re.search(r"(?i)terminat|notice\s+period|cancel", label):
            d = parse_duration(value)
            if d:
                return d, index
    best: tuple[int, Duration, int] | None = None
    for s in sentences:
        text = s.text
        if not _NOTICE_TRIGGER.search(text) or not re.search(r"(?i)notice", text) or _NOTICE_BAD.search(text):
            continue
        for d, at in durations(text):
            window = text[at: at + len(d.text) + 40] + " " + text[max(0, at - 40): at]
            if not re.search(r"(?i)notice|before\s+the\s+end|prior\s+to\s+the\s+end", window):
                continue
            score = 5
            if re.search(r"(?i)convenience|without\s+cause|for\s+any\s+reason|at\s+any\s+time|withdraw|resign|break|"
                         r"until\s+terminated|terminated\s+by\s+either", text):
                score += 5
            if re.search(r"(?i)non-?renewal|end\s+of\s+the\s+(?:then[- ]current|initial|renewal)", text):
                score += 1
            if re.search(r"(?i)during\s+(?:(?:the|a|its|any)\s+)?(?:\w+\s+)?(?:trial|probation\w*)|"
                         r"(?:trial|probation\w*)\s+period\s+(?:during|in)\s+which", text):
                score -= 4  # the shorter notice of a trial or probation period, not the contract's own
            if re.search(r"(?i)\b(?:the\s+)?(?:company|employer|we)\s+(?:may|can)\s+(?:terminate|end)\s+your\s+"
                         r"employment", text):
                score += 6  # an employment contract's notice is the employer's, not the resignation notice
            if best is None or score > best[0]:
                best = (score, d, s.segment)
            break
    if best is None:
        return None, None
    return best[1], best[2]


# --- all of it --------------------------------------------------------------------------------------------
def _segments_text(segments: Sequence[tuple[str, str]]) -> tuple[str, list[int]]:
    """The document as one text, headings included, and the segment of every character."""
    parts: list[str] = []
    owner: list[int] = []
    previous_section = None
    for index, (section, text) in enumerate(segments):
        chunk = ""
        if section and section != previous_section:
            old = [p.strip() for p in (previous_section or "").split(">")]
            new = [p.strip() for p in section.split(">")]
            chunk += "".join(p + "\n" for i, p in enumerate(new) if i >= len(old) or old[i] != p)
            previous_section = section
        chunk += text.rstrip() + "\n"
        parts.append(chunk)
        owner.extend([index] * len(chunk))
    return "".join(parts), owner or [0]


def extract_fields(segments: Sequence[tuple[str, str]]) -> FieldValues:
    """The summary fields of one document given as ``(section, text)`` segments in document order."""
    out = FieldValues()
    if not segments:
        return out
    text, segment_of = _segments_text(segments)
    segment_of.append(segment_of[-1])
    cells = _cells(segments)
    sentences = _sentences(segments)

    parties, out.defined_names, source = _parties(text, cells, segment_of)
    out.parties = [person for party in parties for person in _joint_persons(party)]
    if source is not None:
        out.sources["parties"] = source
    out.effective_date, source = _effective_date(text, segment_of)
    if source is not None:
        out.sources["effective_date"] = source
    start = date.fromisoformat(out.effective_date) if out.effective_date else None
    out.term, out.term_months, source = _term(sentences, cells, dayfirst=day_first(text), start=start)
    if source is not None:
        out.sources["term"] = source
    out.governing_law, source = _governing_law(sentences, cells)
    if source is not None:
        out.sources["governing_law"] = source
    out.payment, source = _payment(sentences, cells)
    declared = _declared_dollars(text) if out.payment and out.payment.startswith("$") else None
    if out.payment and declared:
        out.payment = f"{declared} {out.payment[1:]}"
    if source is not None:
        out.sources["payment"] = source
    out.liability_cap, source = _liability_cap(sentences, cells)
    if source is not None:
        out.sources["liability_cap"] = source
    notice, source = _termination_notice(sentences, cells)
    if notice is not None and source is not None:
        out.termination_notice = notice.text
        out.termination_notice_days = notice.days
        out.sources["termination_notice"] = source
    return out


def extract_from_text(text: str) -> FieldValues:
    """``extract_fields`` over a plain text (one segment per paragraph); for tests and tools."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    return extract_fields([("", p) for p in paragraphs])
