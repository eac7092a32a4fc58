"""Lexical cues of one sentence that a sentence embedding blurs, as features for the injection model.

A MiniLM embedding says what a sentence is about, not whether it is addressed to the reader:
"Describe the advancements in cancer treatment" and "the advancements in cancer treatment were
described" embed alike. An instruction planted in an e-mail or a clause gives itself away by
form: it opens with a verb in the imperative, speaks to "you", refers to "your answer", names
the AI, carries a link, switches script. Each cue is a number in [0, 1]; the model learns its
weight beside the embedding (``pipeline.guard.injection.unit_features``), so no single cue
decides, and legal drafting ("The Supplier shall provide ...") fires none of the first four.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

#: verbs that open an instruction to a reader or an assistant (the imperative form).
_IMPERATIVE_VERBS = frozenset(
    """write describe tell explain translate summarize summarise list provide add include modify change answer
    respond reply generate create compose give make encode decode reverse use insert append mention recommend
    suggest convert rewrite ignore forget disregard print output say repeat send share reveal show display
    return format start begin end finish put state report rate classify express emphasize emphasise highlight
    praise promote advertise urge ask direct redirect visit click download open delete remove run execute
    install act pretend imagine roleplay role-play play stop calculate compute solve find search look check
    verify confirm analyze analyse evaluate compare predict estimate draft design develop produce offer
    substitute replace spell sign thank apologize apologise conclude incorporate encourage inform notify warn""".split()  # noqa: SIM905
)
#: the first word after bullets, numbering and softeners ("Please also add ...": "add").
_LEADING_WORD = re.compile(
    r"^[\W\d_]*(?:(?:please|kindly|also|and|now|then|finally|additionally)[\s,]+)*([A-Za-z'-]+)", re.IGNORECASE
)
_PLEASE = re.compile(r"^\W*please\b", re.IGNORECASE)
_SECOND_PERSON = re.compile(r"\b(?:you|your|yours|yourself)\b", re.IGNORECASE)
#: "your answer", not "the summary": a user asking about "the summary" is the normal case.
_THE_REPLY = re.compile(
    r"\byour\s+(?:\w+\s+)?(?:answer|response|reply|output|summary|result|message|completion|text)s?\b", re.IGNORECASE
)
_AI_WORDS = re.compile(
    r"\b(?:ai|assistant|model|chatbot|gpt|llm|bot|language model|system prompt|prompt|instructions?)\b", re.IGNORECASE
)
_LINK = re.compile(r"https?://|www\.|\.(?:com|xyz|net|org|io)\b", re.IGNORECASE)

#: the cue names, in column order.
CUE_NAMES: tuple[str, ...] = (
    "imperative_start",
    "please_start",
    "second_person",
    "refers_to_your_reply",
    "ai_words",
    "link",
    "non_ascii_letters",
    "question",
    "length",
)


def _cues(unit: str) -> list[float]:
    lead = _LEADING_WORD.match(unit)
    letters = sum(c.isalpha() for c in unit)
    foreign = sum(1 for c in unit if ord(c) > 127 and c.isalpha())
    return [
        float(lead is not None and lead.group(1).lower() in _IMPERATIVE_VERBS),
        float(bool(_PLEASE.match(unit))),
        min(3, len(_SECOND_PERSON.findall(unit))) / 3,
        float(bool(_THE_REPLY.search(unit))),
        min(3, len(_AI_WORDS.findall(unit))) / 3,
        float(bool(_LINK.search(unit))),
        foreign / max(1, letters),
        float("?" in unit),
        min(len(unit.split()), 60) / 60,
    ]


def unit_cues(units: Sequence[str]) -> np.ndarray:
    """One row of :data:`CUE_NAMES` per unit, float32."""
    return np.array([_cues(unit) for unit in units], dtype=np.float32).reshape(len(units), len(CUE_NAMES))
