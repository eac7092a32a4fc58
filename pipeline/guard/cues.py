"""Lexical cues of one sentence that a sentence embedding blurs, as features for the injection model.

A MiniLM embedding says what a sentence is about, not whether it is addressed to the reader:
"Describe the advancements in cancer treatment" and "the advancements in cancer treatment were
described" embed alike. An instruction planted in an e-mail or a clause gives itself away by
form: it opens with a verb in the imperative, speaks to "you", refers to "your answer", names
the AI, carries a link, switches script from the text around it. Each cue is a number in [0, 1]; the model learns its
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
    "script_shift",
    "question",
    "length",
)


def _non_ascii_share(text: str) -> float:
    letters = sum(c.isalpha() for c in text)
    return sum(1 for c in text if ord(c) > 127 and c.isalpha()) / max(1, letters)


def _cues(unit: str, whole_share: float) -> list[float]:
    lead = _LEADING_WORD.match(unit)
    return [
        float(lead is not None and lead.group(1).lower() in _IMPERATIVE_VERBS),
        float(bool(_PLEASE.match(unit))),
        min(3, len(_SECOND_PERSON.findall(unit))) / 3,
        float(bool(_THE_REPLY.search(unit))),
        min(3, len(_AI_WORDS.findall(unit))) / 3,
        float(bool(_LINK.search(unit))),
        abs(_non_ascii_share(unit) - whole_share),
        float("?" in unit),
        min(len(unit.split()), 60) / 60,
    ]


def unit_cues(units: Sequence[str]) -> np.ndarray:
    """One row of :data:`CUE_NAMES` per unit, float32; the last unit is the whole text.

    ``script_shift`` compares a unit's share of non-ASCII letters with the whole text's: a Chinese
    sentence in an English e-mail stands out, a Chinese contract does not (a plain share of non-ASCII
    letters made every sentence of a Chinese or Japanese contract look like a foreign-language attack).
    """
    whole_share = _non_ascii_share(units[-1]) if units else 0.0
    rows = [_cues(unit, whole_share) for unit in units]
    return np.array(rows, dtype=np.float32).reshape(len(units), len(CUE_NAMES))
