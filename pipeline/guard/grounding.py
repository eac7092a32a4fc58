"""Lexical grounding: is each summary sentence backed by the retrieved chunks?

Two tests, both lexical and explainable, no model:

1. **Verbatim** (checked first): the sentence, reduced to lowercase words with numbers,
   dates and currencies in one canonical form, is a run of words of one chunk; or it is a
   few such runs, cut where the sentence has punctuation (``. ; : | …``), each run at least
   ``MIN_RUN_WORDS`` words long and short runs found in a chunk that holds a long one. That
   is how an extractive summary is built: whole sentences and table rows copied from chunks
   and joined with spaces, so a sentence that ended without a full stop (a cover-sheet
   table, a recital ending in ";") fuses with the next one when the guard splits the
   summary again. Such a sentence is copied text, and is supported.
2. **Content words** (otherwise): enough of its content words (lowercased, stopwords
   dropped, crudely stemmed) occur in a single chunk, and so does every number and date.
   Containment in one chunk, not the union of all, so a sentence whose words are gathered
   from unrelated chunks is caught. This is the test for sentences a generator writes
   itself ("Effective date: 2025-02-01", "Term: 24 months").

Numbers, dates and amounts are compared in one form on both sides, so a derived sentence
is not refused because the chunk writes the same fact differently: "1 February 2025",
"February 1, 2025" and "2025-02-01" are one date; "USD 10,000,000", "$10 million" and
"US$10,000,000.00" one amount; "thirty (30) days" and "30-day" the number 30; and a chunk
that says "two (2) years" also supports "24 months" (and "3 months" supports "90 days").
A different number, date, party or jurisdiction is still a word the chunk does not have.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

from pipeline.written import DAY_MONTH_YEAR, MONTH_DAY_YEAR, WORD_NUMBERS, month_number, span_months

#: share of a sentence's content words that must appear in one chunk.
DEFAULT_THRESHOLD = 0.6
#: a verbatim run shorter than this (in words) only counts inside a chunk that holds a long run.
MIN_RUN_WORDS = 5

#: an HTML tag (``<span class="x">``, ``</p>``, ``<br/>``), not any text between "<" and ">".
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*?)?/?>")
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_STOPWORD_TEXT = """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each either etc few for from further
    had has have having he her here hers herself him himself his how however i if in into is it its itself
    just may me might more most must my myself no nor not now of off on once only or other our ours ourselves
    out over own per same shall she should so some such than that the their theirs them themselves then there
    these they this those through thus to too under until up upon us very via was we were what when where
    which while who whom why will with within without would yet you your yours yourself yourselves yes ok okay
    s t don't doesn't isn't aren't won't can't cannot it's that's"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
#: (suffix, replacement), longest first; applied once, only when three characters remain.
_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("ational", "ate"), ("ization", "ize"), ("fulness", ""), ("ousness", ""), ("iveness", ""),
    ("ations", "ate"), ("ation", "ate"), ("ments", ""), ("ingly", ""), ("ities", ""), ("ness", ""),
    ("ment", ""), ("able", ""), ("ible", ""), ("ings", ""), ("eed", "ee"), ("ity", ""), ("ing", ""),
    ("ies", "i"), ("ied", "i"), ("ive", ""), ("ion", ""), ("ous", ""), ("ful", ""), ("ers", ""), ("est", ""),
    ("ed", ""), ("er", ""), ("ly", ""), ("al", ""), ("s", ""),
)  # fmt: skip
#: citation markers a generator puts in its sentences: "[1]", "[c3]", "[doc-2#4]".
_CITATION = re.compile(r"\[[^\[\]\s]{1,40}\]")

# --- canonical numbers, dates and amounts ---------------------------------------------------------------
_DATE = re.compile(
    rf"\b(?:{DAY_MONTH_YEAR}|{MONTH_DAY_YEAR}"
    r"|(?P<y3>\d{4})(?P<sep3>[-/.])(?P<m3>\d{1,2})(?P=sep3)(?P<d3>\d{1,2})"
    r"|(?P<a>\d{1,2})(?P<sep>[/.])(?P<b>\d{1,2})(?P=sep)(?P<y4>\d{4}))\b",
    re.IGNORECASE,
)
_CURRENCY_WORDS = {
    "us$": "usd", "$": "usd", "usd": "usd", "dollars": "usd", "dollar": "usd", "€": "eur", "eur": "eur",
    "euro": "eur", "euros": "eur", "£": "gbp", "gbp": "gbp", "pounds": "gbp", "sterling": "gbp",
    "canadian dollars": "cad", "australian dollars": "aud", "new zealand dollars": "nzd",
    "singapore dollars": "sgd", "hong kong dollars": "hkd",
}  # fmt: skip
_CURRENCY = re.compile(r"\b(?:Canadian|Australian|New\s+Zealand|Singapore|Hong\s+Kong)\s+dollars\b|US\$|\$|€|£|"
                       r"\b(?:USD|EUR|GBP|dollars?|euros?|pounds|sterling)\b", re.IGNORECASE)
_SCALED = re.compile(r"(?<![\w.,])(\d+(?:\.\d+)?)\s*(million|billion|thousand|bn|m|k)\b", re.IGNORECASE)
_SCALE = {"thousand": 1_000, "k": 1_000, "million": 1_000_000, "m": 1_000_000, "billion": 10**9, "bn": 10**9}
_NUMBER = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)*)(?![\w])")
_TENS = "twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety"
_UNITS = "one|two|three|four|five|six|seven|eight|nine"
#: a number written as words before "(30)" or a unit: "thirty (30) days", "twenty-four months".
_WORD_NUMBER = re.compile(
    rf"\b((?:{_TENS})(?:[- ](?:{_UNITS}))?|{_UNITS}|ten|eleven|twelve|(?:thir|four|fif|six|seven|eigh|nine)teen)"
    r"(?=[\s-]*(?:\(\s*\d+\s*\)|(?:business\s+|calendar\s+|working\s+)?(?:days?|weeks?|months?|years?|hours?|"
    r"per\s*cent|percent|%)\b))",
    re.IGNORECASE,
)
_PERCENT = re.compile(r"\s*(?:%|\bper\s+cent\b)", re.IGNORECASE)
#: "24 months", "2 years", "6 weeks" once numbers are canonical (for the chunk-side equivalents).
_DURATION = re.compile(r"\b(\d+)[\s-]+(?:\(\s*\d+\s*\)\s*)?(?:calendar\s+)?(years?|months?|weeks?)\b", re.IGNORECASE)
_ELLIPSIS = re.compile(r"\.{3,}|…")
#: how a finished sentence ends; a sentence that does not may have been cut short mid-word.
_OPEN_END = re.compile(r"[.!?;:)\]\"'”’…]\s*$")


def _date_token(day: date) -> str:
    return f"d{day.year:04d}{day.month:02d}{day.day:02d}"


def _dates(m: re.Match[str]) -> list[date]:
    """Every reading of a written date: one, or two for an ambiguous "01/02/2025"."""
    try:
        if m.group("d1"):
            return [date(int(m.group("y1")), month_number(m.group("m1")), int(m.group("d1")))]
        if m.group("m2"):
            return [date(int(m.group("y2")), month_number(m.group("m2")), int(m.group("d2")))]
        if m.group("y3"):
            return [date(int(m.group("y3")), int(m.group("m3")), int(m.group("d3")))]
    except (ValueError, KeyError):
        return []
    a, b, year = int(m.group("a")), int(m.group("b")), int(m.group("y4"))
    readings = []
    for day, month in ((a, b), (b, a)):
        try:
            readings.append(date(year, month, day))
        except ValueError:
            continue
    return list(dict.fromkeys(readings))


def _number_token(raw: str) -> str:
    """Canonical number: "10,000,000" -> "10000000", "14.20" -> "14p2", "02" -> "2", "3.2.1" -> "3p2p1"."""
    raw = raw.replace(",", "")
    parts = raw.split(".")
    if len(parts) == 2:
        whole, frac = str(int(parts[0])), parts[1].rstrip("0")
        return f"{whole}p{frac}" if frac else whole
    return "p".join(str(int(p)) for p in parts)


def _scaled(m: re.Match[str]) -> str:
    value = float(m.group(1)) * _SCALE[m.group(2).lower()]
    return f"{int(value)}" if value == int(value) else m.group(0)


def _word_number(m: re.Match[str]) -> str:
    parts = re.split(r"[- ]+", m.group(1).lower())
    return str(sum(WORD_NUMBERS.get(p, 0) for p in parts)) or m.group(0)


def canonical_text(text: str, *, alternatives: bool = False) -> str:
    """``text`` with dates, amounts, percentages and numbers in one form each.

    Dates become ``dYYYYMMDD``, currencies ``usd``/``eur``/``gbp`` (before the amount),
    "10 million" and "10,000,000" ``10000000``, decimals ``14p2``, "%" ``percent``, and
    number words before a unit or a "(30)" digits. With ``alternatives`` (the chunk side),
    an ambiguous numeric date gives both readings.
    """
    text = _TAG.sub(" ", text)

    def date_sub(m: re.Match[str]) -> str:
        readings = _dates(m)
        if not readings:
            return m.group(0)
        return " ".join(_date_token(d) for d in (readings if alternatives else readings[:1]))

    text = _DATE.sub(lambda m: f" {date_sub(m)} ", text)
    text = _CURRENCY.sub(lambda m: f" {_CURRENCY_WORDS[' '.join(m.group(0).lower().split())]} ", text)
    text = _SCALED.sub(_scaled, text)
    text = _PERCENT.sub(" percent", text)
    text = _WORD_NUMBER.sub(_word_number, text)
    return _NUMBER.sub(lambda m: _number_token(m.group(0)), text)


_DATE_TOKEN = re.compile(r"\bd(\d{4})(\d{2})(\d{2})\b")


def _duration_equivalents(canonical: str) -> set[str]:
    """Numbers a duration also means: "2 years" gives 24 and "month", "3 months" 90 and "day"; and the
    months between two dates of the text ("begins on 1 September 2025 ... ends on 31 August 2026" gives
    12 and "month"), the term the field extraction derives from them."""
    extra: set[str] = set()
    days = sorted({date(int(y), int(m), int(d)) for y, m, d in _DATE_TOKEN.findall(canonical)})
    for i, start in enumerate(days):
        for end in days[i + 1:]:
            months = span_months(start, end)
            if 1 <= months <= 600:
                extra.update({str(months), "month"})
    for m in _DURATION.finditer(canonical):
        n, unit = int(m.group(1)), m.group(2).lower().rstrip("s")
        if unit == "year":
            extra.update({str(n * 12), "month"})
        elif unit == "month":
            extra.update({str(n * 30), "day"})
            if n % 12 == 0:
                extra.update({str(n // 12), "year"})
        else:
            extra.update({str(n * 7), "day"})
    return extra


@dataclass(frozen=True)
class GroundingReport:
    """``score`` = supported / total; ``support`` maps sentence index to its best chunk id.

    ``verbatim`` lists the supported sentences that are copied text (test 1), the others
    were supported by their content words (test 2).
    """

    score: float
    unsupported: list[int] = field(default_factory=list)
    support: dict[int, Hashable] = field(default_factory=dict)
    verbatim: list[int] = field(default_factory=list)


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """Crude suffix stripping: enough to match "terminated"/"termination"/"terminates". Remembered: a
    contract's vocabulary is small and every job stems its summary and its chunks again."""
    word = word.lower().replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    if word.isdigit() or len(word) <= 3 or any(ch.isdigit() for ch in word):
        return word
    if word.endswith(("ss", "us", "is")):
        return word
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + replacement
            break
    if word.endswith("y") and len(word) > 3:
        word = word[:-1] + "i"
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]
    return word


def _terms_of_canonical(text: str) -> set[str]:
    terms: set[str] = set()
    for token in _TOKEN.findall(text):
        lowered = token.lower().replace("’", "'")
        if lowered in _STOPWORDS or (len(lowered) == 1 and not lowered.isdigit()):
            continue
        terms.add(stem(lowered))
    return terms


def content_terms(text: str) -> set[str]:
    """Stemmed content words of ``text`` (HTML tags ignored, stopwords dropped, numbers canonical)."""
    return _terms_of_canonical(canonical_text(text))


def _is_number(term: str) -> bool:
    return any(ch.isdigit() for ch in term)


# --- verbatim runs ----------------------------------------------------------------------------------------
#: a clause number or list label at the start of a line: "2p1" (2.1), "12", "a", "iv".
_CLAUSE_LABEL = re.compile(r"\d+(?:p\d+)*[a-z]?|[a-z]|[ivx]{1,4}")
_RUN_PIECE = re.compile(r"(?P<word>[^\W_]+(?:['’][^\W_]+)*)|(?P<stop>[.;:!?|\n])|(?P<ellipsis>\.{3,}|…)")


def _words_and_cuts(canonical: str) -> tuple[list[str], set[int]]:
    """Lowercased words, and the word positions where the text has punctuation (a run may end there).

    A word glued to an ellipsis ("indemnif…", "…ation") may be cut short and is left out.
    """
    words: list[str] = []
    cuts: set[int] = {0}
    last_end = -1
    skip_at = -1
    for m in _RUN_PIECE.finditer(canonical):
        if m.group("word"):
            if m.start() != skip_at:
                words.append(m.group("word").lower().replace("’", "'"))
                if len(words) - 1 in cuts and _CLAUSE_LABEL.fullmatch(words[-1]):
                    cuts.add(len(words))  # "2.1 This Agreement…" is also copied as "This Agreement…"
            last_end = m.end()
        elif m.group("ellipsis"):
            if last_end == m.start() and words:
                words.pop()
            cuts.add(len(words))
            skip_at = m.end()
        else:
            cuts.add(len(words))
    cuts.add(len(words))
    return words, cuts


def _padded(words: Sequence[str]) -> str:
    return " " + " ".join(words) + " "


@dataclass(frozen=True)
class _ChunkWords:
    """A chunk's canonical words (and as one padded string), where each word occurs, and its cut points."""

    text: str
    words: tuple[str, ...]
    positions: dict[str, tuple[int, ...]]
    cuts: frozenset[int]

    @classmethod
    def of(cls, canonical: str) -> _ChunkWords:
        words, cuts = _words_and_cuts(canonical)
        positions: dict[str, list[int]] = {}
        for index, word in enumerate(words):
            positions.setdefault(word, []).append(index)
        return cls(_padded(words), tuple(words), {w: tuple(at) for w, at in positions.items()}, frozenset(cuts))


def _verbatim_support(
    words: list[str], cuts: set[int], chunks: Sequence[_ChunkWords], *, cut_short: bool = False
) -> int | None:
    """Index of the chunk a copied sentence comes from, or None when it is not copied text.

    The sentence must be one run of a chunk's words, or runs of chunk words laid end to
    end (the fewest). Two runs may meet where the sentence has punctuation, or where the
    first run ends a sentence, line or cell of its chunk and the second starts one of its
    own (the two ends of an extractive join). A run under ``MIN_RUN_WORDS`` words must sit
    in a chunk that also holds one of the sentence's long runs.
    """
    if not words or not chunks:
        return None
    whole = _padded(words)
    # a quote cut at a length limit without an ellipsis ("... for Availabilit") ends in part of a word:
    # the last word may be the start of the chunk's word, unless it is a number ("USD 10" of "USD 1000")
    partial = whole[:-1] if cut_short and len(words) >= MIN_RUN_WORDS and words[-1].isalpha() else None
    for index, chunk in enumerate(chunks):
        if whole in chunk.text or (partial is not None and partial in chunk.text):
            return index
    n = len(words)

    def matches(i: int) -> list[tuple[int, int, int]]:
        """(chunk, position, length) of each place a chunk's words match words[i:], by the word index: a run
        words[i:j] occurs at every place whose length is at least j - i (a substring search per run and
        chunk cost up to a second per job on a long contract)."""
        found = []
        for k, chunk in enumerate(chunks):
            theirs = chunk.words
            for p in chunk.positions.get(words[i], ()):
                length = 1
                while i + length < n and p + length < len(theirs) and theirs[p + length] == words[i + length]:
                    length += 1
                found.append((k, p, length))
        return found

    # edges[i] = [(j, chunks holding words[i:j] so that it may start at i and end at j)]
    edges: dict[int, list[tuple[int, set[int]]]] = {}
    for i in range(n):
        places = matches(i)
        for size in range(1, max((length for _, _, length in places), default=0) + 1):
            j = i + size
            holders = {k for k, p, length in places if length >= size and (i in cuts or p in chunks[k].cuts)
                       and (j in cuts or p + size in chunks[k].cuts)}
            if holders:
                edges.setdefault(i, []).append((j, holders))
    best: dict[int, tuple[int, int, set[int]]] = {0: (0, -1, set())}  # end -> (runs, start, holders)
    for i in range(n):
        if i not in best:
            continue
        for j, holders in edges.get(i, []):
            runs = best[i][0] + 1
            if j not in best or runs < best[j][0]:
                best[j] = (runs, i, holders)
    if n not in best:
        return None
    spans: list[tuple[int, int, set[int]]] = []
    end = n
    while end:
        _, start, holders = best[end]
        spans.append((start, end, holders))
        end = start
    long_spans = [span for span in spans if span[1] - span[0] >= MIN_RUN_WORDS]
    if not long_spans:
        return None
    long_holders = {k for span in long_spans for k in span[2]}
    if any(span[1] - span[0] < MIN_RUN_WORDS and not span[2] & long_holders for span in spans):
        return None
    longest = max(long_spans, key=lambda span: span[1] - span[0])
    return min(longest[2])


#: "Effective date: 2025-02-01", "Parties: A and B": a short label the generator writes before a fact.
_LABEL = re.compile(r"^\s*([A-Za-z][A-Za-z’' -]{0,40}?)\s*:\s+(?=\S)", re.S)
_LIST_SPLIT = re.compile(r"\s*;\s*|\s+and\s+|\s*\|\s*")
_OPENERS = "([{\"'“‘"


def _names(canonical: str, *, first_is_name: bool = False) -> set[str]:
    """Stemmed capitalised words that do not start the sentence, a clause or a quotation: the names
    ("Colorado", "Brightwater", "Kessler") a sentence asserts, which its chunk must contain too."""
    names: set[str] = set()
    starts = not first_is_name
    for m in _RUN_PIECE.finditer(canonical):
        if not m.group("word"):
            starts = starts or m.group(0) not in ":;"  # "Governing law: Sweden" names Sweden
            continue
        word = m.group("word")
        before = canonical[: m.start()].rstrip()
        opened = bool(before) and before[-1] in _OPENERS
        lowered = word.lower().replace("’", "'")
        if word[0].isupper() and not starts and not opened and lowered not in _STOPWORDS and len(word) > 1:
            names.add(stem(lowered))
        starts = False
    return names


@dataclass(frozen=True)
class _Chunks:
    ids: list[Hashable]
    words: list[_ChunkWords]
    terms: list[set[str]]


def _judge(
    sentence: str, chunks: _Chunks, threshold: float, strict_numbers: bool, *, item: bool = False
) -> tuple[int | None, bool]:
    """(index of the supporting chunk or None, copied?) for one sentence, or one ``item`` of a labelled
    list (whose first word may be a name: "Sweden"); (-1, False) if it says nothing."""
    canonical = canonical_text(_CITATION.sub(" ", sentence))
    words, cuts = _words_and_cuts(canonical)
    terms = _terms_of_canonical(" ".join(words))
    if not terms:
        return -1, False
    copied = _verbatim_support(words, cuts, chunks.words, cut_short=_OPEN_END.search(sentence) is None)
    if copied is not None:
        return copied, True
    required = {term for term in terms if _is_number(term)} if strict_numbers else set()
    required |= _names(canonical, first_is_name=item) & terms
    # the names and numbers must all be there; the threshold is a share of the other words
    rest = terms - required
    best_index, best_ratio = -1, 0.0
    for chunk_index, have in enumerate(chunks.terms):
        if not required <= have:
            continue
        ratio = len(rest & have) / len(rest) if rest else 1.0
        if ratio > best_ratio:
            best_index, best_ratio = chunk_index, ratio
    if best_ratio >= threshold and best_ratio > 0:
        return best_index, False
    return None, False


def _judge_labelled(sentence: str, chunks: _Chunks, threshold: float, strict_numbers: bool) -> int | None:
    """A "Label: A and B" sentence: every item of the list supported on its own, the label not needed
    (the generator wrote it). The items may come from different chunks; the first one's is returned."""
    m = _LABEL.match(sentence)
    if m is None or len(m.group(1).split()) > 4:
        return None
    items = [item for item in _LIST_SPLIT.split(sentence[m.end() :].strip().rstrip(".")) if item.strip()]
    found = []
    for item in items:
        index, _ = _judge(item, chunks, threshold, strict_numbers, item=True)
        if index is None:
            return None
        found.append(index)
    return next((i for i in found if i >= 0), None)


def grounding(
    summary_sentences: Sequence[str],
    chunks: Iterable[tuple[Hashable, str]],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    strict_numbers: bool = True,
) -> GroundingReport:
    """Score how many sentences are supported by the retrieved chunks.

    A sentence copied from the chunks (see the module doc) is supported whatever the
    threshold. Otherwise one chunk must hold every name the sentence asserts (a capitalised
    word inside it) and, with ``strict_numbers``, every number and date, plus ``threshold``
    of its other content words: "60 days" is not grounded by a chunk that says "30 days",
    nor "the laws of Sweden" by one that says "the laws of Colorado", however many words
    agree. A sentence "Label: A and B" the generator writes from its fields is also
    supported when each of A and B is, without the label. Citation markers ("[c3]") are
    ignored. A sentence with no content words (e.g. "Yes.") asserts nothing and counts as
    supported; no sentences at all scores 1.0.
    """
    prepared = _Chunks([], [], [])
    for chunk_id, text in chunks:
        canonical = canonical_text(text, alternatives=True)
        prepared.ids.append(chunk_id)
        # copied text is matched word for word: an ambiguous "03/04/2025" in one reading, as the sentence has it
        prepared.words.append(_ChunkWords.of(canonical_text(text) if _DATE.search(text) else canonical))
        prepared.terms.append(_terms_of_canonical(canonical) | _duration_equivalents(canonical))
    unsupported: list[int] = []
    support: dict[int, Hashable] = {}
    verbatim: list[int] = []
    for index, sentence in enumerate(summary_sentences):
        found, copied = _judge(sentence, prepared, threshold, strict_numbers)
        if found is None:
            found = _judge_labelled(sentence, prepared, threshold, strict_numbers)
        if found is None:
            unsupported.append(index)
        elif found >= 0:
            support[index] = prepared.ids[found]
            if copied:
                verbatim.append(index)
    total = len(summary_sentences)
    return GroundingReport(
        score=round((total - len(unsupported)) / total, 4) if total else 1.0,
        unsupported=unsupported,
        support=support,
        verbatim=verbatim,
    )
