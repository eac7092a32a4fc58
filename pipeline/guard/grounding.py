"""Lexical grounding: is each summary sentence backed by one retrieved chunk?

A sentence counts as supported when enough of its content words (lowercased, stopwords
dropped, crudely stemmed; numbers kept verbatim) occur in a single chunk. Containment in
one chunk, not the union of all, so a sentence stitched from unrelated chunks is caught.
No model: cheap enough to run on every completion, and every verdict can be explained.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

#: share of a sentence's content words that must appear in one chunk.
DEFAULT_THRESHOLD = 0.6

_TAG = re.compile(r"<[^<>]+>")
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


@dataclass(frozen=True)
class GroundingReport:
    """``score`` = supported / total; ``support`` maps sentence index to its best chunk id."""

    score: float
    unsupported: list[int] = field(default_factory=list)
    support: dict[int, Hashable] = field(default_factory=dict)


def stem(word: str) -> str:
    """Crude suffix stripping: enough to match "terminated"/"termination"/"terminates"."""
    word = word.lower().replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    if word.isdigit() or len(word) <= 3:
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


def content_terms(text: str) -> set[str]:
    """Stemmed content words of ``text`` (HTML tags ignored, stopwords dropped)."""
    terms: set[str] = set()
    for token in _TOKEN.findall(_TAG.sub(" ", text)):
        lowered = token.lower().replace("’", "'")
        if lowered in _STOPWORDS or (len(lowered) == 1 and not lowered.isdigit()):
            continue
        terms.add(stem(lowered))
    return terms


def grounding(
    summary_sentences: Sequence[str],
    chunks: Iterable[tuple[Hashable, str]],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    strict_numbers: bool = True,
) -> GroundingReport:
    """Score how many sentences are supported by a single retrieved chunk.

    With ``strict_numbers`` every number in a sentence must also be in its supporting chunk:
    "60 days" is not grounded by a chunk that says "30 days", however many words agree.
    Citation markers ("[c3]") are ignored. A sentence with no content words (e.g. "Yes.")
    asserts nothing and counts as supported; no sentences at all scores 1.0.
    """
    indexed = [(chunk_id, content_terms(text)) for chunk_id, text in chunks]
    unsupported: list[int] = []
    support: dict[int, Hashable] = {}
    supported = 0
    for index, sentence in enumerate(summary_sentences):
        terms = content_terms(_CITATION.sub(" ", sentence))
        if not terms:
            supported += 1
            continue
        numbers = {term for term in terms if term.isdigit()} if strict_numbers else set()
        best_id, best_ratio = None, 0.0
        for chunk_id, chunk_terms in indexed:
            if not numbers <= chunk_terms:
                continue
            ratio = len(terms & chunk_terms) / len(terms)
            if ratio > best_ratio:
                best_id, best_ratio = chunk_id, ratio
        if best_ratio >= threshold and best_ratio > 0:
            supported += 1
            support[index] = best_id
        else:
            unsupported.append(index)
    total = len(summary_sentences)
    return GroundingReport(
        score=round(supported / total, 4) if total else 1.0, unsupported=unsupported, support=support
    )
