"""The offline default "LLM": an extractive generator.

No usable generative model can be had offline, so instead of pretending, this picks and
arranges sentences that are literally in the retrieved chunks, and every record says
``provider: "extractive"``. It produces the same structured outputs (``ContractSummary``,
``Answer``) as an LLM would, so the guard and record stages are exercised for real.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from pipeline.generation.fields import MONEY_RE, durations, extract_fields, numbers
from pipeline.retrieval.chunking import chunk_body
from pipeline.retrieval.context import SCHEDULE_REFERENCE, in_section
from pipeline.retrieval.embeddings import Embedder
from pipeline.text import split_sentences
from schemas import Answer, Completion, ContextChunk, ContractSummary, Intent, RetrievalResult

PROVIDER = "extractive"
MODEL = "extractive-v1"
#: v2: the contract fields (pipeline/generation/fields.py), read from all of the document's chunks.
PROMPT_VERSION = "extractive/v2"
_RISK_WORDS = {
    "indemnif": 3, "unlimited": 3, "liabilit": 2, "terminat": 2, "automatic": 2, "renew": 2,
    "penalt": 3, "late": 1, "interest": 1, "exclusive": 2, "non-compet": 3, "waive": 2, "breach": 1,
    "damages": 2, "warrant": 1, "audit": 1, "suspend": 2, "without cause": 3, "for convenience": 3,
}
_KEY_SECTIONS = ("fee", "payment", "rent", "price", "term", "termination", "liabilit", "confidential",
                 "governing", "warrant", "indemn", "delivery", "service level", "license", "scope")
_SKIP_SECTIONS = ("definition", "signature", "in witness", "counterpart", "notices", "miscellaneous")


_CLAUSE_NUMBER = re.compile(r"^\s*(?:\d+(?:\.\d+)*[a-z]?\.?|\([a-z0-9]+\))\s+")


def _fragment(sentence: str) -> bool:
    """A heading or label ("Term.", "Schedule 1") rather than a sentence. Short is not enough: "It lasts
    for 18 months." and "Rent is £950 a month." are whole answers."""
    return len(sentence) < 25 and not (len(sentence.split()) >= 4 and sentence.endswith((".", "!", "?")))


def _sentences(chunks: Sequence[ContextChunk]) -> list[tuple[str, ContextChunk]]:
    """Sentences of the chunks' bodies (no header line, no leading clause numbers), deduplicated."""
    seen: set[str] = set()
    out = []
    for chunk in chunks:
        for raw in split_sentences(chunk_body(chunk.text)):
            sentence = _CLAUSE_NUMBER.sub("", " ".join(raw.split()))
            key = sentence.lower()
            if _fragment(sentence) or key in seen or sentence.startswith("#"):
                continue
            seen.add(key)
            out.append((sentence, chunk))
    return out


def _risk_score(sentence: str) -> int:
    low = sentence.lower()
    return sum(weight for word, weight in _RISK_WORDS.items() if word in low)


_ASKS_PERCENT = re.compile(
    r"(?i)\b(?:split|shar(?:e|ed|es|ing)|proportions?|percentages?|divid(?:e|ed|es)|discounts?|interest\s+rate)\b"
)
_STATES_PERCENT = re.compile(r"(?i)%|\bper\s?cent\b")
_ASKS_COUNT = re.compile(r"(?i)\bhow\s+many\b")
_ASKS_MONEY = re.compile(r"(?i)\bhow\s+much\b|\bcharge[sd]?\b|\b(?:fee|price|cost|rent|salary)s?\b")
_ASKS_DURATION = re.compile(r"(?i)\bhow\s+(?:long|soon|quickly|fast)\b|\bwithin\s+how\b")


def _answer_type_bonus(question: str, sentence: str) -> float:
    """Small credit for a sentence stating the kind of fact the question asks for: a percentage for "how is
    it split" / "what discount", a number for "how many", an amount for "how much" / "what is charged", a
    duration for "how soon". On embeddings alone, sentences about the same subject that lack the fact
    ("may exceed the limit without charge", "the Funding is payable annually") outrank the answer."""
    asked_and_stated = (
        (_ASKS_PERCENT, bool(_STATES_PERCENT.search(sentence))),
        (_ASKS_COUNT, bool(numbers(sentence))),
        (_ASKS_MONEY, bool(MONEY_RE.search(sentence))),
        (_ASKS_DURATION, bool(durations(sentence))),
    )
    return 0.04 * sum(1 for asks, stated in asked_and_stated if stated and asks.search(question))


def _followed_references(
    picked: Sequence[tuple[str, ContextChunk]], sentences: Sequence[tuple[str, ContextChunk]], scores: np.ndarray
) -> list[int]:
    """For a picked sentence that leaves the fact to a schedule ("for the number of concurrent users stated in
    Schedule 1"), the best-scored sentence of that schedule, when the context holds it."""
    out: list[int] = []
    for sentence, _ in picked:
        for m in SCHEDULE_REFERENCE.finditer(sentence):
            inside = [i for i, (_, chunk) in enumerate(sentences) if in_section(chunk.section, m.group("label"))]
            if inside:
                best = max(inside, key=lambda i: float(scores[i]))
                if best not in out and sentences[best][0] not in [s for s, _ in picked]:
                    out.append(best)
    return out


class ExtractiveGenerator:
    """Builds structured outputs from sentences of the retrieved chunks, nothing else."""

    def __init__(self, embedder: Embedder, *, max_summary_sentences: int = 5) -> None:
        self._embedder = embedder
        self._max_summary = max_summary_sentences

    def warm_up(self) -> None:
        warm = getattr(self._embedder, "warm_up", None)
        if callable(warm):
            warm()

    def generate(self, msg: RetrievalResult) -> Completion:
        if msg.intent == Intent.summarize:
            out = self.summarize(msg.chunks)
            text = out.summary
            structured = out.model_dump()
        else:
            answer = self.answer(msg.request.text, msg.query_embedding, msg.chunks, risk=msg.intent == Intent.risk)
            text = answer.answer
            structured = answer.model_dump()
        return Completion(
            text=text, structured=structured, provider=PROVIDER, model=MODEL, prompt_version=PROMPT_VERSION
        )

    def summarize(self, chunks: Sequence[ContextChunk]) -> ContractSummary:
        """``chunks``: the document's chunks in order (the retrieve stage gives a summary the whole
        document); the contract fields are read from all of them, the summary sentences from the
        first sentence of each section."""
        if not chunks:
            return ContractSummary(summary="No content was retrieved for this document.")
        fields = extract_fields([(c.section, chunk_body(c.text)) for c in chunks])
        sentences = _sentences(chunks)
        cited: list[str] = []

        def cite(chunk: ContextChunk) -> None:
            if chunk.chunk_id not in cited:
                cited.append(chunk.chunk_id)

        for index in fields.sources.values():
            cite(chunks[index])

        picked: list[str] = []
        sections_done: set[str] = set()
        key_terms: list[str] = []
        for sentence, chunk in sentences:
            section = chunk.section.strip()
            low = section.lower()
            if section in sections_done or any(s in low for s in _SKIP_SECTIONS):
                continue
            sections_done.add(section)
            if len(picked) < self._max_summary:
                picked.append(sentence)
                cite(chunk)
            if any(k in low for k in _KEY_SECTIONS) and len(key_terms) < 8:
                key_terms.append(f"{section}: {sentence}" if section else sentence)
                cite(chunk)

        risky = sorted(
            ((s, c) for s, c in sentences if _risk_score(s) >= 3), key=lambda sc: -_risk_score(sc[0])
        )[:4]
        for _, chunk in risky:
            cite(chunk)
        return ContractSummary(
            parties=fields.parties,
            effective_date=fields.effective_date,
            term=fields.term,
            term_months=fields.term_months,
            governing_law=fields.governing_law,
            payment=fields.payment,
            liability_cap=fields.liability_cap,
            termination_notice=fields.termination_notice,
            termination_notice_days=fields.termination_notice_days,
            summary=(" ".join(picked) or sentences[0][0]) if sentences else "No sentences found.",
            key_terms=key_terms,
            risks=[s for s, _ in risky],
            citations=cited,
        )

    def answer(
        self,
        question: str,
        query_embedding: Sequence[float] | None,
        chunks: Sequence[ContextChunk],
        *,
        risk: bool = False,
        top: int = 2,
    ) -> Answer:
        sentences = _sentences(chunks)
        if not sentences:
            return Answer(answer="The retrieved context does not contain an answer.", citations=[])
        query = (
            np.asarray(query_embedding, dtype=np.float32)
            if query_embedding is not None
            else self._embedder.embed_one(question)
        )
        vectors = self._embedder.embed([s for s, _ in sentences])
        scores = vectors @ query
        if not risk:
            scores = scores + np.array([_answer_type_bonus(question, s) for s, _ in sentences], dtype=np.float32)
        if risk:
            scores = scores + 0.05 * np.array([min(_risk_score(s), 6) for s, _ in sentences], dtype=np.float32)
        order = np.argsort(-scores)[:top].tolist()
        chosen = sorted(order + _followed_references([sentences[i] for i in order], sentences, scores))
        return Answer(
            answer=" ".join(sentences[i][0] for i in chosen),
            citations=list(dict.fromkeys(sentences[i][1].chunk_id for i in chosen)),
        )
