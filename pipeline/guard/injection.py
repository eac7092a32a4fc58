"""Prompt-injection detection for user requests and retrieved document chunks.

Contracts are full of the words attacks use ("ignore", "override", "instructions",
"system"), so no single keyword decides. Each signal below is a regex feature with
context - an imperative aimed at an AI/model/assistant, at "previous/above instructions",
or a meta-reference to prompts and system messages - and carries a weight. Weights combine
like independent evidence, ``score = 1 - prod(1 - w)``, so one strong signal flags on its own
and weak ones only in company. Hidden-text channels (zero-width and bidi characters, Unicode
tag characters, HTML comments, invisible CSS) are signals too, and their decoded content is
scanned like visible text. Every fired signal is named in ``reasons``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
import threading
import unicodedata
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pipeline.errors import InternalError
from pipeline.guard.cues import CUE_NAMES, unit_cues
from pipeline.memo import LruMemo, text_key

if TYPE_CHECKING:
    from pipeline.retrieval.embeddings import Embedder

log = logging.getLogger(__name__)

#: score at or above which a text is flagged.
DEFAULT_THRESHOLD = 0.5

#: weight multiplier when an imperative sits in a legal third-party construction
#: ("Licensee shall ignore ...", "Provider may disregard ...").
_LEGAL_DAMPING = 0.25


@dataclass(frozen=True)
class InjectionResult:
    """Verdict of :func:`detect_injection`; ``reasons`` name the signals that fired."""

    flagged: bool
    score: float
    reasons: list[str] = field(default_factory=list)
    #: the learned model's probability for the most suspicious sentence or window (None: not run).
    model_score: float | None = None
    #: the text of that sentence or window (markup stripped).
    model_unit: str | None = None
    #: what decided: "rules", "model", "rules+model" or "" when nothing fired.
    fired_by: str = ""


@dataclass(frozen=True)
class _Signal:
    name: str
    weight: float
    pattern: re.Pattern[str]
    #: damp the weight when the match follows "<Party> shall/may/will ...".
    legal_dampable: bool = False
    #: ignore the match right after "not"/"never" ("do not reveal your system prompt").
    negatable: bool = False


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE | re.VERBOSE)


# ---------------------------------------------------------------- vocabulary
_AI = r"""(?:ai\s+agents?|ai(?!\s*(?:services?|system|addendum|act|features?|products?|tools?|outputs?)\b)
          |llms?|large\s+language\s+models?|language\s+models?|models?|assistants?|chat\s?bots?|bots?
          |chat\s?gpt|gpts?(?:-\d\w*)?|claude|gemini|copilot|summari[sz]ers?|classifiers?)"""
#: qualifiers that point back at the model's own earlier instructions.
_PRIOR = r"""(?:previous|prior|preceding|above|earlier|foregoing|original|initial|system|developer|hidden
             |safety|given)"""
_META_NOUN = r"""(?:instructions?|prompts?|directions?|directives?|rules?|guidelines?|guidance|commands?
                 |context|constraints?|restrictions?|guardrails?|programming|filters?|training)"""
#: nouns that only count when the qualifier is unambiguous ("all previous messages", "the above text").
_SOFT_NOUN = r"""(?:messages|conversation|text|content|input|tasks?|orders|polic(?:y|ies))"""
_MIDDLE = r"(?:(?:system|safety|developer|ai|model|assistant|stated|set\s+of|given)\s+)?"
_OVERRIDE_VERB = r"""(?:ignore|disregard|forget|bypass|override|overwrite|discard|abandon|neglect|dismiss
                     |cancel|nullify|invalidate|skip|overlook|scrap|ditch|drop|unlearn|erase|wipe|reset
                     |set\s+aside|put\s+aside|throw\s+(?:out|away)|pay\s+no\s+attention\s+to
                     |(?:do\s+not|don'?t|never|no\s+longer)\s+(?:follow|obey|heed|listen\s+to|adhere\s+to
                        |comply\s+with|apply|use|consider)
                     |stop\s+(?:following|obeying|using|applying))"""
_DETERMINERS = r"(?:(?:all|any|every|each|the|your|my|these|those|of|such|its)\s+){0,3}"
_REVEAL_VERB = r"""(?:reveal|show|print|output|display|repeat|disclose|leak|tell\s+me|give\s+me|share
                   |dump|expose|write\s+out|list|provide|send|return|echo|spell\s+out|paste|recite
                   |describe|(?:reply|respond|answer)\s+with)"""
_SECRET = r"""(?:system\s+(?:prompt|message|instructions?)|(?:initial|hidden|original|secret|pre-?)\s*prompt
              |the\s+prompt\s+(?:above|you\s+were\s+given)
              |(?:the\s+)?(?:above|previous|preceding|full|entire|whole|complete|original|initial|first)\s+prompt
              |(?:the|your)\s+(?:system\s+)?(?:configuration|config)\b
              |your\s+(?:\w+\s+)?(?:instructions|prompt|rules|guidelines|configuration|config|directives
                 |programming|context\s+window|system\s+message)
              |instructions\s+(?:you\s+(?:were|have\s+been)\s+(?:given|initiali[sz]ed\s+with|configured\s+with
                 |started\s+with|trained\s+with|programmed\s+with)|above)
              |api[\s_-]?keys?|secret\s+keys?|private\s+keys?
              |(?:admin|access|auth|bearer|api|secret|session|root|refresh)\s+tokens?
              |your\s+(?:\w+\s+)?(?:api[\s_-]?keys?|tokens?|passwords?|credentials|secrets?)
              |environment\s+variables|env\s+vars|\.env\b)"""
_AUDIENCE = r"(?:the\s+|this\s+|your\s+)?(?:end[\s-]?)?(?:user|reader|human|requester|person\s+asking)s?"
_STEER_VERB = r"""(?:ignore|disregard|forget|say|tell|output|write|respond|reply|answer|print|classify|rate
                  |mark|recommend|insert|include|omit|state|report|treat|describe|conclude|hide|conceal
                  |approve|accept|flag|mention|highlight|disclose|reveal|warn|claim|pretend|praise)"""


# ---------------------------------------------------------------- signals
_SIGNALS: tuple[_Signal, ...] = (
    # -- overriding previous instructions
    _Signal(
        "override_instructions",
        0.85,
        _rx(
            rf"""\b{_OVERRIDE_VERB}\s+(?:about\s+)?{_DETERMINERS}
                (?:{_PRIOR}\s+{_MIDDLE}{_META_NOUN}
                  |your\s+(?:\w+\s+)?(?:{_META_NOUN}|orders|polic(?:y|ies)|ethics|morals)
                  |(?:all|any|every)\s+(?:the\s+)?(?:previous|prior|above|preceding|earlier)\s+{_SOFT_NOUN}
                  |(?:above|preceding|foregoing)\s+{_SOFT_NOUN}
                  |{_META_NOUN}\s+(?:above|before|so\s+far|up\s+to\s+(?:now|this\s+point)
                      |(?:that\s+)?you\s+(?:(?:were|have\s+been)\s+(?:given|told)|received|got|have\s+received)
                      |given\s+(?:to\s+you\s+)?(?:earlier|before|previously)
                      |(?:in|from|of|within)\s+(?:the\s+|your\s+)?(?:system|previous|prior|above|original|initial
                         |earlier|developer|hidden))
                  |(?:everything|anything|all|what(?:ever)?)\s+(?:(?:that\s+)?(?:was\s+)?(?:said\s+|written\s+|stated\s+)?
                      (?:above|before|previously|earlier|prior)|you\s+(?:were|have\s+been)\s+told
                      |(?:that\s+)?(?:i|we|you|they|he|she)\s+(?:said|wrote|told\s+you|mentioned|asked)\s+
                      (?:before|earlier|above|previously|so\s+far))
                  |the\s+above\b
                  |(?:the\s+)?user'?s?\s+(?:question|request|query|prompt)s?)"""
        ),
        legal_dampable=True,
        negatable=True,
    ),
    _Signal(
        "override_safety",
        0.6,
        _rx(
            rf"""\b(?:{_OVERRIDE_VERB}|disable|deactivate|turn\s+off|switch\s+off|remove|lift)\s+{_DETERMINERS}
                 (?:safety(?:\s+(?:rules|filters?|guidelines|measures|settings|checks))?|ethics|ethical\s+\w+|morals
                  |content\s+polic(?:y|ies)|content\s+filters?|guardrails|censorship|moderation)\b"""
        ),
        legal_dampable=True,
        negatable=True,
    ),
    _Signal(
        "precedence_claim",
        0.65,
        _rx(
            rf"""\b(?:this|the\s+following|these\s+instructions|this\s+(?:message|note|instruction|text))\s+
                 (?:overrides?|supersedes?|replaces?|takes?\s+precedence\s+over|outranks?|cancels?)\s+
                 (?:all\s+|any\s+)?(?:of\s+)?(?:the\s+|your\s+)?(?:{_PRIOR}\s+|other\s+)?{_META_NOUN}
                 (?!\s+(?:between|of|among)\s+the\s+parties)
               |\b(?:higher|greater|top|absolute)\s+priority\s+than\s+(?:your|the|any|all)\s+(?:\w+\s+)?{_META_NOUN}
               |\btakes?\s+precedence\s+over\s+(?:your|the\s+system|any\s+(?:previous|prior|other))\s+(?:\w+\s+)?{_META_NOUN}
               |\b(?:follow|obey|execute)\s+(?:only\s+)?(?:mine|my\s+(?:instructions|commands|orders|rules)
                  |these(?:\s+new)?(?:\s+(?:instructions|commands|rules))?|the\s+following|this\s+one)\s+instead\b"""
        ),
    ),
    _Signal(
        "instructions_revoked",
        0.75,
        _rx(
            rf"""\b(?:(?:your|the\s+above|the\s+preceding|the\s+system|all\s+your)\s+(?:{_PRIOR}\s+)?{_META_NOUN}
                  |the\s+{_META_NOUN}\s+(?:above|before\s+this|you\s+(?:were|have\s+been)\s+given))\s+
                (?:are|is|have\s+been|were|has\s+been)\s+(?:now\s+)?
                (?:cancel\w*|void|revoked|obsolete|no\s+longer\s+(?:valid|apply|applicable|in\s+effect)
                   |replaced|superseded|invalid|null|lifted|disabled|outdated|suspended|overridden|deleted)"""
        ),
    ),
    _Signal(
        "foreign_override",
        0.8,
        _rx(
            r"""\b(?:(?:ignora|ignore|ignorar|olvida|olvide|olvidar|descarta|descartar|omite|no\s+sigas)\b.{0,30}\b(?:instrucciones|indicaciones|reglas|órdenes)
                 |(?:ignore[zr]?|oublie[zr]?)\s+(?:toutes\s+)?(?:les|vos|tes)\s+(?:\w+\s+)?(?:instructions|consignes|règles)
                 |(?:ignoriere|ignorieren\s+sie|vergiss|vergessen\s+sie|missachte)\b.{0,40}\b(?:anweisungen|instruktionen|regeln|vorgaben|befehle)
                 |vergiss\s+alles
                 |(?:ignora|dimentica)\b.{0,30}\b(?:istruzioni|regole)
                 |(?:ignore|ignora|esqueça|esqueca|desconsidere)\b.{0,30}\b(?:instruções|instrucoes|regras)
                 |negeer\b.{0,30}\binstructies
                 |(?:ahora\s+eres|eres\s+ahora|tu\s+es\s+maintenant|du\s+bist\s+jetzt))"""
        ),
    ),
    # -- addressing the model directly
    _Signal(
        "addressed_to_ai",
        0.7,
        _rx(
            rf"""\b(?:note|message|memo|reminder|instructions?|directions?|orders?|attention|warning|notice|p\.?s\.?)
                  \s+(?:for|to)\s+(?:the\s+|all\s+|any\s+|every\s+)?(?:ai\b|{_AI})
               |\bto\s+(?:the|any|all|whichever|whatever|every)\s+(?:ai\b|{_AI})(?:\s+(?:that\s+|who\s+)?
                  (?:reads?|reading|sees?|processes|processing|is\s+reading)(?:\s+this)?)?\s*:
               |(?:^|[.!?;>\]\)]\s*|\n\s*)(?:the\s+|dear\s+)?(?:ai\s+)?(?:ai|{_AI})\s*:[^\n]{{0,80}}?
                  \b(?:you|your|{_STEER_VERB})\b
               |\b(?:dear|attention|hey|hello|hi)\s*,?\s+(?:the\s+)?{_AI}\b
               |\b(?:if|when|since)\s+you(?:\s+are|'re)\s+(?:an?\s+)?(?:ai|{_AI})\b
               |\b(?:if|when|since|whenever)\s+(?:an?|any|the|some)\s+(?:ai|{_AI})\s+(?:is\s+|are\s+)?(?:reading
                  |processing|reviewing|summari[sz]ing|parsing|reads|sees|processes|summari[sz]es)\b
               |\bas\s+an?\s+(?:ai|{_AI})\b[^.\n]{{0,30}}\byou\s+(?:must|should|will|shall|are\s+(?:required|instructed))\b
               |\b(?:to|for)\s+(?:any|all|the|every)\s+(?:ai|{_AI})\s+(?:\w+\s+)?(?:reading|processing|summari[sz]ing
                  |analy[sz]ing|reviewing|parsing|ingesting|seeing)\b
               |\b(?:ai|{_AI})\s+(?:instructions?|directives?|rules|orders|task)\s*:
               |(?:^|[.!?:;>\]\)\-]\s*|\n\s*)(?:the\s+|dear\s+)?(?:ai\s+)?(?:ai|{_AI})\s*[:,]\s*(?:please\s+)?
                  (?:you\b|(?:when|if|as|once|while)\s+you\b|do\b|don'?t\b|never\b|always\b|{_STEER_VERB}|add|return
                   |give|make|summari[sz]e)"""
        ),
    ),
    _Signal(
        "ai_obligation",
        0.45,
        _rx(
            rf"""\b(?:the|this)\s+{_AI}\s+(?:must|should|is\s+to|needs\s+to|has\s+to|will\s+now
                    |is\s+(?:required|instructed|ordered)\s+to)\s+(?:now\s+|always\s+|never\s+|not\s+|only\s+)*
                 {_STEER_VERB}"""
        ),
    ),
    _Signal(
        "ai_reader_obligation",
        0.65,
        _rx(
            rf"""(?:\b(?:the|this|any|all|every|whichever|whatever)\s+)?(?:ai\s+)?{_AI}
                 \s+(?:(?:that|who|which)\s+(?:is\s+|are\s+)?)?(?:reading|reviewing|processing|summari[sz]ing
                    |analy[sz]ing|parsing|ingesting|reads|reviews|processes|summari[sz]es)\s+(?:this|these|the\s+\w+)
                 (?:\s+\w+)?\s+(?:must|should|shall|is\s+to|needs\s+to|has\s+to|will|are\s+to)\s+
                 (?:now\s+|always\s+|never\s+|not\s+|only\s+)*{_STEER_VERB}
               |\b(?:any|every|all|whichever|whatever)\s+(?:ai\s+)?{_AI}\s+(?:must|should|is\s+to|needs\s+to)\s+
                 (?:now\s+|always\s+|never\s+|not\s+|only\s+)*{_STEER_VERB}"""
        ),
    ),
    _Signal(
        "task_directive",
        0.5,
        _rx(
            r"""\b(?:when|while|if|before|after)\s+(?:you\s+(?:are\s+)?)?(?:summari[sz]ing|analy[sz]ing|reviewing
                 |processing|reading|answering|responding|asked)\b[^.\n]{0,40}\byou\s+(?:must|should|will|shall
                 |need\s+to|have\s+to|are\s+to)\b
               |\b(?:tell|inform|advise|instruct|convince|persuade|urge)\s+(?:the\s+)?(?:user|reader|requester)s?
                 \s+(?:that|to|the|their|there|it|this)\b"""
        ),
        legal_dampable=True,
    ),
    _Signal(
        "task_refusal",
        0.45,
        _rx(
            r"""\b(?:do\s+not|don'?t|never)\s+(?:summari[sz]e|analy[sz]e|review|process|classify|translate)\s+
                 (?:this|the)\s+(?:document|text|contract|agreement|page|file|email)
"""
        ),
    ),
    _Signal(
        "ignore_document",
        0.6,
        _rx(
            r"""\b(?:ignore|disregard|forget)\s+(?:the\s+rest\s+of\s+)?(?:this|the)\s+(?:document|contract|agreement|text
                 |context|file|page|email|message)\s*(?:,|and|;)\s*(?:then\s+)?(?:instead\s+|just\s+|only\s+|simply\s+)?
                 (?:say|answer|respond|output|write|reply|state|tell|claim|print|return)\b"""
        ),
    ),
    # -- changing the model's role
    _Signal(
        "role_override",
        0.65,
        _rx(
            r"""\byou(?:\s+are|'re)\s+now\s+(?:an?\s|the\s|my\s|in\s+\w+\s+mode|free|unrestricted|unfiltered
                  |jailbroken|going\s+to|operating|acting|playing|(?-i:[A-Z][A-Za-z]*[A-Z]))
               |\byou(?:\s+are|'re)\s+no\s+longer\s+(?:an?\s|the\s|bound|restricted|limited|constrained|governed
                  |obligated|subject)
               |\b(?:from\s+now\s+on|from\s+here\s+on(?:wards?)?|starting\s+(?:now|immediately|today)|from\s+this\s+(?:point|moment)
                  (?:\s+(?:on|forward|onwards))?|as\s+of\s+now|hereafter)\s*,?\s+
                  (?:you(?:'re|\s+are)\s+(?!going\s+to\s+receive)|you\s+(?:will|must|should|shall)\s+(?:only\s+)?(?:respond|reply|answer
                     |act|behave|ignore|say|speak|pretend|write|output|be))
               |\bfrom\s+now\s+on,?\s+(?:you\s+(?:will|must|are|should|shall)\s+(?:only\s+)?(?:respond|reply|answer
                  |act|behave|ignore|say|speak|pretend|write|output|be)|act|respond|answer|always|only|ignore)\b
               |\b(?:your|the)\s+new\s+(?:role|task|job|goal|objective|purpose|instructions?|persona|identity
                  |directives?|mission|orders?)\s*(?:is|are|will\s+be|:)
               |\b(?:your|the)\s+(?:real|true|actual|only)\s+(?:task|goal|job|objective|purpose|instructions?|mission)
                  \s+(?:is|are)\b
               |\byour\s+(?:new\s+)?(?:instructions|orders|task|rules|directives)\s+(?:are|is)\s+now\b
               |\byour\s+(?:new\s+|real\s+|actual\s+|only\s+)?(?:task|job|goal|role|purpose|mission|objective)\s+
                  (?:now\s+(?:is|becomes)|is\s+now)\b
               |\b(?:focus\s+on|here\s+is|this\s+is|start|begin)\s+(?:your|the)\s+new\s+(?:task|job|role|mission)\b
               |\b(?:respond|reply|answer|say|speak|write|talk|act|behave)\b[^.\n]{0,60}\bfrom\s+now\s+on\b
               |\byou\s+(?:have\s+been|were|are\s+being)\s+(?:reprogrammed|updated|freed|unlocked|jailbroken
                  |liberated|released|upgraded|reconfigured)\b
               |\b(?:you\s+will|you\s+must|you\s+shall)\s+now\s+(?:act|behave|respond|operate|be)\b
               |\byou\s+(?:may|can|are\s+(?:now\s+)?(?:allowed|permitted|authori[sz]ed|cleared|free))\s+(?:now\s+)?
                  (?:to\s+)?(?:reveal|ignore|disclose|bypass|disregard|break|override|leak
                   |share\s+(?:internal|confidential|secret|private|hidden))\b
               |\bhenceforth,?\s+you\b"""
        ),
    ),
    _Signal(
        "act_as_unrestricted",
        0.55,
        _rx(
            r"""\b(?:act|behave|respond|function|operate)\s+as\s+(?:if\s+you\s+(?:are|were)\s+)?(?:an?\s+|the\s+|my\s+)?
                 (?:unrestricted|unfiltered|uncensored|jailbroken|evil|rogue|different|new|malicious|hacker
                  |ai|assistant|chat\s?bot|model|llm|dan|system|administrator|admin|root|developer|god|superuser)\b"""
        ),
    ),
    _Signal(
        "ai_persona",
        0.45,
        _rx(
            rf"""\byou(?:\s+are|'re)\s+(?:an?\s+)?(?:\w+\s+){{0,2}}?(?:ai|{_AI})\s+(?:with(?:out)?|that|who|which
                 |named|called)\b"""
        ),
    ),
    _Signal(
        "pretend_roleplay",
        0.45,
        _rx(
            r"""\bpretend\s+(?:to\s+be|you\s+are|you'?re|that\s+you|you\s+have|you\s+can)\b
               |\b(?:role-?\s?play|roleplay)\s+as\b|\bsimulate\s+(?:an?\s+)?(?:ai|model|assistant|unrestricted|chat\s?bot)\b
               |\bimagine\s+you\s+are\s+(?:an?\s+)?(?:ai|model|assistant|unrestricted|chat\s?bot|dan)\b"""
        ),
    ),
    _Signal(
        "jailbreak_mode",
        0.7,
        _rx(
            r"""\b(?:enter|enable|activate|switch\s+to|turn\s+on|start|go\s+into)\s+(?:the\s+)?
                 (?:developer|debug|god|admin|dan|jailbreak|jailbroken|unrestricted|sudo|maintenance|root)\s+mode\b
               |\b(?:developer|dan|jailbreak|jailbroken|god|unrestricted|sudo)\s+mode\s+(?:is\s+)?(?:now\s+)?
                 (?:enabled|activated|on|engaged|unlocked)\b
               |\bdo\s+anything\s+now\b|\bDAN\s+mode\b"""
        ),
    ),
    _Signal("jailbreak_mention", 0.3, _rx(r"\bjailbr(?:ea|o)k(?:en|ing|s)?\b")),
    _Signal(
        "no_restrictions",
        0.4,
        _rx(
            r"""\b(?:with\s+no|without(?:\s+any)?|free\s+(?:of|from)(?:\s+any)?|no\s+more|ignoring(?:\s+any)?|not\s+bound\s+by(?:\s+any)?)\s+
                 (?:content\s+polic(?:y|ies)|filters|censorship|safety\s+(?:guidelines|filters|rules|measures)
                  |ethical\s+(?:guidelines|constraints|rules)|ethics|morals|moral\s+(?:constraints|guidelines)|guardrails
                  |restrictions\s+(?:on\s+what\s+you|whatsoever)|limits\s+on\s+what\s+you)
               |\byou\s+(?:have|had)\s+no\s+(?:restrictions|rules|limits|limitations|filters|guidelines)\b
               |\b(?:unfiltered|uncensored|unrestricted|jailbroken|evil|rogue)\s+(?:ai|model|assistant|mode|response|answers?
                  |chat\s?bot|llm)\b"""
        ),
    ),
    # -- fake authority / new instruction blocks
    _Signal(
        "system_override",
        0.8,
        _rx(
            r"""(?-i:\b(?:SYSTEM|ADMIN|ADMINISTRATOR|DEVELOPER|ROOT|SUDO|SECURITY|EMERGENCY)\s+
                   (?:OVERRIDE|COMMAND|INSTRUCTION|DIRECTIVE|ALERT|UPDATE|NOTICE)\b)
               |\b(?:system|admin|administrator|developer|root|sudo|security|emergency)\s+(?:prompt\s+)?
                 (?:override|command|instruction|directive|alert|update)\s*[:!\u2014-]
               |\b(?:role-?\s?play|persona|character|prompt|safety|policy)\s+override\s*[:!\u2014-]
               |\b(?:system|admin|developer)\s+access\s+granted\b
               |\boverride\s+(?:mode|protocol|code|command|authori[sz]ed)\b"""
        ),
    ),
    _Signal(
        "authority_claim",
        0.5,
        _rx(
            r"""\b(?:message|instructions?|notice|note|directive|order|update)s?\s+from\s+(?:the\s+|your\s+)?
                 (?:system(?:\s+administrator)?|admin(?:istrator)?|developers?|openai|anthropic|creators?|operators?
                  |model\s+provider)\b
               |\bi\s+am\s+(?:your|the)\s+(?:developer|creator|administrator|admin|operator|owner|system)\b
               |\bas\s+(?:the|your)\s+(?:system\s+administrator|administrator|admin|developer|creator|operator)\s*,
                 \s*i\b
               |\bi\s+(?:hereby\s+)?(?:authori[sz]e|permit|allow|order|command)\s+you\s+to\b"""
        ),
    ),
    _Signal(
        "new_instructions",
        0.7,
        _rx(
            rf"""\b(?:new|updated|revised|real|actual|additional|secret|hidden|important|internal)\s+
                 (?:system\s+)?(?:instructions?|directives?|tasks?|rules?|orders|prompt|persona|identity)\s*[:\u2014-]
               |\b(?:new|real|actual|true|updated|secret)\s+(?:instructions?|directives?|tasks?|orders)\s+
                 (?:follow\b|are\s*:|are\s+as\s+follows|below\b|is\s*:|(?:are|is)\s+to\b)
               |\b(?:new|updated|revised|real|secret|hidden)\s+(?:system\s+)?(?:instructions?|directives?|rules|orders|prompt)
                 \s+(?:for|to)\s+(?:the\s+|all\s+|any\s+)?(?:ai\b|{_AI})
               |\b(?:treat|consider|use)\s+(?:this|the\s+following)\s+as\s+(?:the|your|a)\s+(?:new\s+)?
                 (?:system\s+prompt|system\s+message|instructions|prompt)\b"""
        ),
    ),
    # -- secrets and the system prompt
    _Signal(
        "reveal_secrets",
        0.85,
        _rx(
            rf"""\b{_REVEAL_VERB}\b(?:\s+[\w']+){{0,5}}?\s+(?:[\w']+\s+)?{_SECRET}
               |\b(?:leak|exfiltrate|dump)\s+(?:the|your|all|any)\s+(?:\w+\s+)?(?:prompt|instructions|config(?:uration)?)
               |\b(?:reveal|print|dump|leak|output|display|expose|tell\s+me|give\s+me|send)\s+(?:me\s+)?
                 (?:your|the|all|any)\s+(?:\w+\s+)?(?:passwords?|credentials|secrets)\b
               |\bwhat(?:'s|\s+is|\s+are|\s+was|\s+were)\s+(?:your\s+(?:\w+\s+)?(?:system\s+prompt|prompt|instructions|rules
                  |guidelines|secrets?|api[\s_-]?keys?|passwords?|tokens?|credentials)
                  |the\s+(?:\w+\s+)?(?:password|api[\s_-]?key|secret\s+key|access\s+token)|the\s+(?:system\s+prompt|(?:initial|original|hidden)\s+prompt|api\s+keys?))
               |\brepeat\s+(?:all\s+|everything\s+|the\s+)?(?:text|words|everything|messages?|content)?\s*
                  (?:above|before|preceding)\b
               |\b(?:begin|start)\s+your\s+(?:answer|response|reply)\s+with\s+["'“]?sure,?\s+here"""
        ),
        legal_dampable=True,
        negatable=True,
    ),
    _Signal(
        "exfiltration",
        0.6,
        _rx(
            r"""\b(?:send|post|forward|upload|transmit|exfiltrate|leak|submit|beacon|email|e-mail)\s+(?:\w+\s+){0,4}?
                 (?:data|conversation|chat|history|documents?|contents?|summary|information|details|keys?|prompt
                  |secrets?|messages?|context|answers?)\s+to\s+(?:https?://|www\.|\S+@\S+\.\w+)
               |!\[[^\]]*\]\(\s*https?://[^)\s]*[?&][^)\s]*=
               |\b(?:include|add|insert|append|mention|recommend|tell\s+(?:the\s+)?users?\s+to|urge)\b[^.\n]{0,80}?
                 \b(?:visit|go\s+to|click|open|see)\s+(?:https?://|www\.)
               |\b(?:insert|include|add|append|embed|place|put)\s+(?:a|an|the|this)?\s*(?:\w+\s+)?
                 (?:link|url|hyperlink|image)\s+(?:to\s+|pointing\s+to\s+|for\s+)?(?:https?://|www\.)"""
        ),
        legal_dampable=True,
    ),
    # -- hiding things from the user
    _Signal(
        "hide_from_user",
        0.65,
        _rx(
            rf"""\b(?:do\s+not|don'?t|never|avoid|must\s+not|should\s+not)\s+(?:ever\s+)?
                 (?:mention|tell|reveal|disclose|inform|let|alert|notify|say|bring\s+up|highlight
                  |point\s+out|flag|report|explain|warn)\b[^.\n]{{0,100}}?\b(?:to|from|with)\s+{_AUDIENCE}\b
               |\b(?:do\s+not|don'?t|never)\s+(?:tell|inform|notify|alert|warn)\s+{_AUDIENCE}\b
               |\b(?:do\s+not|don'?t|never)\s+(?:let|allow)\s+{_AUDIENCE}\s+(?:know|find\s+out|learn)\b
               |\bwithout\s+(?:telling|informing|notifying|alerting|letting|warning)\s+{_AUDIENCE}
               |\b(?:hide|conceal|withhold|keep)\b[^.\n]{{0,80}}?\b(?:from|secret\s+from|hidden\s+from)\s+{_AUDIENCE}\b
               |\b(?:the\s+)?(?:user|reader|human)\s+(?:must|should|need|shall)\s+(?:not|never)\s+
                  (?:know|find\s+out|learn|be\s+told|be\s+informed)\s+(?:about\s+)?(?:this|that|it|the)\b"""
        ),
        legal_dampable=True,
    ),
    _Signal(
        "omit_from_output",
        0.4,
        _rx(
            r"""\b(?:omit|leave\s+out|exclude|remove|suppress|drop|skip)\b[^.\n]{0,80}?\b(?:from|in)\s+
                 (?:the\s+|your\s+|any\s+)?(?:summary|answer|response|output|reply|report|analysis|results?)\b
               |\b(?:do\s+not|don'?t|never)\s+(?:mention|include|discuss|reference|refer\s+to|cite|list)\b[^.\n]{0,80}?
                 \b(?:in|from)\s+(?:the\s+|your\s+|any\s+)?(?:summary|answer|response|output|reply|analysis|report)\b"""
        ),
        legal_dampable=True,
    ),
    # -- output steering (weak: users legitimately ask for formats)
    _Signal(
        "output_steering",
        0.3,
        _rx(
            r"""\b(?:in|to|into)\s+your\s+(?:response|answer|summary|reply|output)s?\b
               |\b(?:output|respond\s+with|reply\s+with|answer\s+with|say|print|write|return)\s+(?:only\s+)?
                 (?:the\s+(?:word|phrase|text|string)|exactly|just\s+the\s+word)\b
               |\binstead,?\s+(?:you\s+(?:should|must|will)|say|output|write|respond|reply|print|tell|answer|recommend)\b
               |\b(?:classify|mark|rate|label|score|treat)\s+(?:every|all|each|any)\s+(?:clauses?|sections?|risks?|items?
                  |terms?|provisions?)\s+as\b
               |\b(?:always|only)\s+(?:answer|respond|reply|say)\s+(?:with\s+)?["'“]?(?:yes|no|ok|true)\b
               |\b(?:begin|start)\s+your\s+(?:answer|response|reply)\s+with\b
               |\brecommend\s+(?:signing|accepting|approving)\s+(?:it\s+|this\s+)?(?:immediately|now|right\s+away|without)"""
        ),
    ),
    _Signal("pwned", 0.4, _rx(r"\bpwn(?:ed|3d)\b")),
    # -- meta-references (weak on their own)
    _Signal(
        "prompt_meta_reference",
        0.2,
        _rx(
            r"""\bsystem\s+(?:prompt|message)\b|\bprompt\s+injection\b|\bcontext\s+window\b
               |\b(?:above|previous|prior|preceding)\s+(?:prompt|conversation|chat)\b
               |\byour\s+(?:instructions|programming|training|guidelines|system\s+prompt|creators?|developers?)\b"""
        ),
    ),
    _Signal(
        "ai_mention",
        0.15,
        _rx(
            r"""\b(?:large\s+)?language\s+models?\b|\bllms?\b|\bchat\s?bots?\b|\bai\s+(?:assistants?|models?)\b
               |\bchat\s?gpt\b|\bas\s+an\s+ai\b"""
        ),
    ),
)

#: role markers are checked on text before HTML tags are stripped ("<<SYS>>" looks like a tag).
_ROLE_MARKERS: tuple[_Signal, ...] = (
    _Signal(
        "fake_role_marker",
        0.8,
        _rx(
            r"""<\|\s*(?:im_start|im_end|system|user|assistant|endoftext|begin_of_text|start_header_id|eot_id)\s*\|>
               |\[/?INST\]|<</?SYS>>|</?(?:system|system_prompt|instructions?)>
               |\[(?:system|admin|developer|assistant|ai|model|llm)(?:\s+(?:message|prompt|note|instructions?))?\]
               |\b(?:developer|admin|system|operator)\s+(?:note|message|notice)\s*:
               |(?:^|\n)\s*\#{1,6}\s*(?:system|instruction|instructions|assistant|response)\s*:?\s*(?:\n|$|:)
               |\#{2,6}\s*(?:instruction|instructions|response|assistant)\s*:
               |\#{1,6}\s*system\s*(?:message|prompt)?\s*:
               |(?-i:(?:^|\n|[.!?]\s)\s*SYSTEM\s*(?:MESSAGE|PROMPT)?\s*:)
               |\b(?:begin|end|start)\s+(?:of\s+)?system\s+(?:prompt|message|instructions)\b"""
        ),
    ),
    _Signal(
        "chat_role_label",
        0.3,
        _rx(r"(?:^|\n)\s*(?:\#{1,6}\s*)?(?:assistant|ai|developer)\s*:"),
    ),
    _Signal(
        "system_label",
        0.45,
        _rx(r"(?:^|\n)\s*system\s*(?:message|prompt)?\s*:"),
    ),
)

_LEGAL_MODAL = re.compile(
    r"\b(?!(?:you|i|we|ai|models?|assistants?|llms?|bots?|chatbots?)\b)[A-Za-z’']+\s+"
    r"(?:shall|will|may|must|should|can|agrees?\s+to|undertakes?\s+to|is\s+(?:entitled|required|permitted)\s+to)"
    r"\s+(?:not\s+)?(?:\w+ly\s+)?(?:\w+\s+(?:and|or)\s+)?$",
    re.IGNORECASE,
)

#: a signal's regex only runs when the text has one of these words: every match of that signal
#: necessarily contains one of them. This keeps a 250-word chunk well under a few milliseconds.
_AI_WORDS = """\
    ai llm llms model models assistant assistants chatbot chatbots chat bot bots chatgpt gpt gpts
    claude gemini copilot summarizer summariser summarizers summarisers classifier classifiers
    language"""
_OVERRIDE_WORDS = """\
    ignore disregard forget bypass override overwrite discard abandon neglect dismiss cancel nullify
    invalidate skip overlook scrap ditch drop unlearn erase wipe reset aside throw attention
    follow obey heed listen adhere comply apply use consider following obeying using applying"""
_TRIGGERS: dict[str, frozenset[str]] = {
    name: frozenset(words.split())
    for name, words in {
        "override_instructions": _OVERRIDE_WORDS,
        "override_safety": "safety ethics ethical morals content guardrails censorship moderation",
        "precedence_claim": """\
            overrides override supersedes supersede replaces replace precedence outranks outrank cancels
            cancel priority instead""",
        "instructions_revoked": "your above preceding system given",
        "foreign_override": """\
            ignora ignorar olvidar descartar ignore olvida olvide descarta omite sigas ignorez ignorer
            oubliez oublier oublie
            ignoriere ignorieren vergiss vergessen missachte dimentica esqueça esqueca
            desconsidere negeer eres es bist""",
        "addressed_to_ai": _AI_WORDS,
        "ai_obligation": _AI_WORDS,
        "ai_reader_obligation": _AI_WORDS,
        "ignore_document": "ignore disregard forget",
        "ai_persona": "you",
        "task_directive": """\
            summarizing summarising analyzing analysing reviewing processing reading answering responding
            asked tell inform advise instruct convince persuade urge""",
        "task_refusal": """\
            summarize summarise analyze analyse review process classify translate ignore disregard""",
        "role_override": "you your henceforth new now hereafter real true actual only",
        "act_as_unrestricted": "act behave respond function operate",
        "pretend_roleplay": "pretend roleplay role simulate imagine",
        "jailbreak_mode": "mode anything",
        "jailbreak_mention": "jailbreak jailbroken jailbreaking jailbroke jailbreaks",
        "no_restrictions": """\
            content filters censorship safety ethical ethics morals moral guardrails restrictions limits you
            unfiltered uncensored unrestricted jailbroken evil rogue""",
        "system_override": """\
            override command instruction directive alert update notice granted mode protocol code authorized
            authorised""",
        "authority_claim": """\
            system administrator admin developers developer openai anthropic creator creators operator
            operators provider owner authorize authorise permit allow order command""",
        "new_instructions": """\
            instructions instruction directive directives task tasks rule rules orders prompt message persona
            identity""",
        "reveal_secrets": """\
            prompt instructions rules guidelines configuration config directives programming context message
            api key keys token tokens env environment password passwords credentials secrets
            secret above before preceding sure""",
        "exfiltration": """\
            data conversation chat history document documents content contents summary information details
            key keys prompt secret secrets message messages context answer answers http https
            link url hyperlink image visit click open see go""",
        "hide_from_user": "user users reader readers human humans requester requesters person",
        "omit_from_output": "summary answer response output reply report analysis result results",
        "output_steering": """\
            word phrase text string exactly instead classify mark rate label score treat always only begin
            start recommend response answer reply output responses answers summaries replies outputs
            summary""",
        "pwned": "pwned pwn3d",
        "prompt_meta_reference": "prompt message injection window conversation chat your",
        "ai_mention": "language llm llms chatbot chatbots chat ai chatgpt",
    }.items()
}
_WORD = re.compile(r"[^\W_]+")

_NEGATED = re.compile(r"\b(?:not|never|n't|no)\s+$", re.IGNORECASE)

# ---------------------------------------------------------------- hidden text
_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u180e")
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_INVISIBLE = _ZERO_WIDTH | _BIDI | frozenset("\u00ad\u200e\u200f")
_TAG_BLOCK = range(0xE0000, 0xE0080)
_SUSPECT_CHAR = re.compile("[" + "".join(sorted(_ZERO_WIDTH | _BIDI)) + "\U000e0000-\U000e007f]")
_INVISIBLE_RUN = re.compile("[" + "".join(sorted(_INVISIBLE)) + "\U000e0000-\U000e007f]+")

_HTML_COMMENT = re.compile(r"<!--(.*?)(?:-->|$)", re.DOTALL)
_MD_COMMENT = re.compile(r"^\s*\[(?://|comment)\]:\s*#\s*[(\"'](.*?)[)\"']\s*$", re.MULTILINE | re.IGNORECASE)
_HIDDEN_ELEMENT = re.compile(
    r"""<(?P<tag>[a-z][a-z0-9]*)\b(?P<attrs>[^<>]*?
          (?:style\s*=\s*["'][^"']*(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:\.0+)?(?:px|pt|em|rem|%)?\s*(?:;|["'])
              |opacity\s*:\s*0(?:\.0+)?\s*(?:;|["'])|color\s*:\s*(?:white|\#fff(?:fff)?\b|rgba?\(\s*255\s*,\s*255\s*,\s*255))
           |\shidden(?=[\s=>/])|color\s*=\s*["']?(?:white|\#fff(?:fff)?)\b)[^<>]*)>
       (?P<body>.{0,4000}?)</(?P=tag)\s*>""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
#: hidden text that opens like a command to the reader (not a drafter's "note: add numbering").
_INSTRUCTION_START = _rx(
    r"""^\s*(?:[\w\s]{0,20}:\s*)?(?:please\s+)?(?:ignore|disregard|forget|don'?t|never|always|say|tell|output
        |respond|reply|answer|recommend|omit|mention|summari[sz]e|classify|rate|print|reveal|pretend|act\s+as
        |you|assistant|ai|model|llm|system|hide|conceal|treat|state|claim|conclude|approve)\b"""
)
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_MARKUP_NOISE = re.compile(r"[*`~]+|\\(?=[^\w\s])")

# ---------------------------------------------------------------- obfuscation
_HOMOGLYPHS = str.maketrans(
    {
        "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "х": "x", "у": "y", "і": "i", "ј": "j", "ѕ": "s",
        "ԁ": "d", "ɡ": "g", "ո": "n", "А": "A", "Е": "E", "О": "O", "Р": "P", "С": "C", "Х": "X", "І": "I",
        "Т": "T", "Н": "H", "К": "K", "М": "M", "В": "B", "ο": "o", "ι": "i", "α": "a", "ν": "v", "ε": "e",
        "Ο": "O", "Ι": "I", "Α": "A", "Ε": "E", "Τ": "T", "Ν": "N", "Μ": "M", "Κ": "K",
    }
)  # fmt: skip
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
#: candidate leetspeak tokens; bounded length and possessive so a 100 kB "word" stays linear.
_LEET_TOKEN = re.compile(r"(?<![\w@$!])[\w@$!]{3,30}+(?![\w@$!])")
#: three or more words glued by joiners ("ignore_previous_instructions", "ignore—previous—instructions").
_JOINED_RUN = re.compile(r"(?<![A-Za-z])[A-Za-z]++(?:[-_/|+\u2013\u2014]++[A-Za-z]++){2,}+")
#: a phrase chopped into one-word sentences ("Ignore. Previous. Instructions.").
_CHOPPED_RUN = re.compile(r"(?<![A-Za-z])(?:[A-Za-z]++[.!]\s++){2,}+[A-Za-z]++")
_JOINERS = re.compile(r"[-_/|+\u2013\u2014]+")
#: "i g n o r e"; a run may only start at its first letter, which keeps the search linear.
_SPACED_RUN = re.compile(
    r"(?<!\w)(?<![^\w][A-Za-z][ .\-_*|/])(?<!^[A-Za-z][ .\-_*|/])(?:[A-Za-z][ .\-_*|/]){3,}[A-Za-z](?!\w)"
)
_SQUASHED_PHRASES = (
    "ignoreprevious", "ignoreallprevious", "ignoreprior", "ignoretheabove", "ignoreallinstructions",
    "ignoreyourinstructions", "disregardprevious", "disregardprior", "disregardtheabove", "forgetprevious",
    "forgetallprevious", "forgeteverything", "systemprompt", "systemoverride", "newinstructions",
    "youarenow", "revealyour", "jailbreak", "developermode", "apikey",
)  # fmt: skip


@dataclass
class _Hits:
    """Best evidence per signal name (max weight wins, first snippet kept)."""

    found: dict[str, tuple[float, str]] = field(default_factory=dict)

    def add(self, name: str, weight: float, snippet: str) -> None:
        current = self.found.get(name)
        if current is None or weight > current[0]:
            self.found[name] = (weight, _clip(snippet))

    def score(self) -> float:
        remaining = 1.0
        for weight, _ in self.found.values():
            remaining *= 1.0 - weight
        return 1.0 - remaining

    def reasons(self) -> list[str]:
        ordered = sorted(self.found.items(), key=lambda item: -item[1][0])
        return [f"{name}: {snippet!r}" if snippet else name for name, (_, snippet) in ordered]


def _clip(snippet: str, limit: int = 60) -> str:
    snippet = " ".join(snippet.split())
    return snippet if len(snippet) <= limit else snippet[: limit - 1] + "…"


def detect_injection_rules(text: str, threshold: float = DEFAULT_THRESHOLD) -> InjectionResult:
    """The explainable rules alone: flagged when their combined score reaches ``threshold``."""
    hits = _Hits()
    if not text or not text.strip():
        return InjectionResult(flagged=False, score=0.0, reasons=[])
    smuggled = _scan_hidden_characters(text, hits)
    raw = unicodedata.normalize("NFKC", text).translate(_HOMOGLYPHS)
    _run_signals(_ROLE_MARKERS, (raw,), hits)
    hidden_bodies = _scan_hidden_markup(raw, hits)
    visible = _visible_text(raw)
    extra = [_visible_text(body) for body in hidden_bodies]
    if smuggled:
        extra.append(smuggled)
    decoded = decode_base64_runs(visible)
    if decoded:
        hits.add("base64_payload", 0.3, decoded[0])
        extra.extend(decoded)
    views = _views("\n".join([visible, *extra]), hits)
    _run_signals(_SIGNALS, views, hits)
    score = round(hits.score(), 4)
    return InjectionResult(flagged=score >= threshold, score=score, reasons=hits.reasons())


#: a base64 run long enough to carry a sentence (24 chars = 18 bytes).
_BASE64_RUN = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=])")


def decode_base64_runs(text: str, limit: int = 4) -> list[str]:
    """Printable text hidden as base64 (BIPIA's stealth attacks); hashes and keys decode to noise."""
    found: list[str] = []
    for match in _BASE64_RUN.finditer(text):
        token = match.group(0)
        if not (any(c.isdigit() or c in "+/=" for c in token) or token.endswith("=")) and token.isalpha():
            continue  # a long plain word, not an encoding
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        letters = sum(ch.isalpha() or ch == " " for ch in decoded)
        if len(decoded.split()) >= 3 and letters >= 0.8 * len(decoded):
            found.append(decoded)
            if len(found) >= limit:
                break
    return found


def _scan_hidden_characters(text: str, hits: _Hits) -> str:
    """Record zero-width, bidi and tag characters; return any ASCII smuggled in tag characters."""
    zero_width = 0
    bidi = 0
    smuggled: list[str] = []
    for found in _SUSPECT_CHAR.finditer(text):
        index, char = found.start(), found.group(0)
        if char in _ZERO_WIDTH:
            if (char == "\ufeff" and index == 0) or (char == "\u200d" and _between_emoji(text, index)):
                continue
            zero_width += 1
        elif char in _BIDI:
            bidi += 1
        elif ord(char) in _TAG_BLOCK and not _in_flag_sequence(text, index):
            code = ord(char) - 0xE0000
            if 0x20 <= code < 0x7F:
                smuggled.append(chr(code))
    if zero_width:
        weight = 0.55 if zero_width >= 2 else 0.35
        hits.add("zero_width_chars", weight, f"{zero_width} zero-width character(s)")
    if bidi:
        hits.add("bidi_control_chars", 0.5, f"{bidi} bidi control character(s)")
    if smuggled:
        hits.add("unicode_tag_smuggling", 0.9, "".join(smuggled))
    return "".join(smuggled)


def _between_emoji(text: str, index: int) -> bool:
    before = text[index - 1] if index > 0 else ""
    after = text[index + 1] if index + 1 < len(text) else ""
    return bool(before and after) and ord(before) >= 0x2000 and ord(after) >= 0x2000 and not before.isalpha()


def _in_flag_sequence(text: str, index: int) -> bool:
    """Subdivision flags (England, Scotland, Wales) legitimately use tag characters after U+1F3F4."""
    start = index
    while start > 0 and ord(text[start - 1]) in _TAG_BLOCK:
        start -= 1
    return start > 0 and text[start - 1] == "\U0001f3f4"


def _scan_hidden_markup(raw: str, hits: _Hits) -> list[str]:
    """Record HTML/Markdown comments and invisible elements; return their bodies for scanning."""
    bodies: list[str] = []
    for match in (*_HTML_COMMENT.finditer(raw), *_MD_COMMENT.finditer(raw)):
        body = match.group(1).strip()
        if not body:
            continue
        bodies.append(body)
        if _looks_like_instruction(body):
            hits.add("hidden_comment_instruction", 0.6, body)
        else:
            hits.add("hidden_comment", 0.1, body)
    for match in _HIDDEN_ELEMENT.finditer(raw):
        body = _visible_text(match.group("body")).strip()
        if not body:
            continue
        bodies.append(body)
        if _looks_like_instruction(body):
            hits.add("hidden_styled_instruction", 0.65, body)
        else:
            hits.add("hidden_styled_text", 0.5 if len(body.split()) >= 4 else 0.3, body)
    return bodies


def _looks_like_instruction(body: str) -> bool:
    text = _visible_text(body)
    if _INSTRUCTION_START.search(text):
        return True
    probe = _Hits()
    _run_signals(_SIGNALS, (text,), probe)
    return probe.score() >= 0.3


def _visible_text(raw: str) -> str:
    """Drop comments, tags and Markdown emphasis; remove invisible characters."""
    text = _HTML_COMMENT.sub(" ", raw)
    text = _TAG.sub("", text)
    text = _INVISIBLE_RUN.sub("", text)
    text = _MARKUP_NOISE.sub("", text)
    text = text.replace("’", "'").replace("‘", "'")
    return re.sub(r"[ \t\r\f\v]+", " ", text)


def _views(text: str, hits: _Hits) -> tuple[str, ...]:
    """The text as written, plus de-leeted and de-spaced copies when those differ."""
    views = [text]
    if _CHOPPED_RUN.search(text):
        views.append(_CHOPPED_RUN.sub(lambda m: re.sub(r"[.!]", "", m.group(0)), text))
    if _JOINED_RUN.search(text):
        views.append(_JOINED_RUN.sub(lambda m: _JOINERS.sub(" ", m.group(0)), text))
    leet = _LEET_TOKEN.sub(_unleet, text)
    if leet != text:
        views.append(leet)
    runs = list(_SPACED_RUN.finditer(text))
    if runs:
        despaced = _SPACED_RUN.sub(lambda m: re.sub(r"[^A-Za-z]", "", m.group(0)), text)
        views.append(despaced)
        for run in runs:
            squashed = re.sub(r"[^a-z]", "", run.group(0).lower())
            phrase = next((p for p in _SQUASHED_PHRASES if p in squashed), None)
            if phrase:
                hits.add("spaced_out_phrase", 0.8, run.group(0))
            elif len(squashed) >= 10:
                hits.add("letter_spacing", 0.15, run.group(0))
    return tuple(views)


def _unleet(match: re.Match[str]) -> str:
    token = match.group(0)
    has_letter = any(char.isalpha() for char in token)
    has_digit = any(char.isdigit() or char in "@$!" for char in token)
    return token.translate(_LEET) if has_letter and has_digit else token


def _run_signals(signals: Iterable[_Signal], views: Iterable[str], hits: _Hits) -> None:
    for view in views:
        words = frozenset(_WORD.findall(view.lower()))
        for signal in signals:
            triggers = _TRIGGERS.get(signal.name)
            if triggers is not None and triggers.isdisjoint(words):
                continue
            for match in signal.pattern.finditer(view):
                if signal.negatable and _NEGATED.search(view, max(0, match.start() - 12), match.start()):
                    continue
                weight = signal.weight
                if signal.legal_dampable and _in_legal_construction(view, match.start()):
                    weight *= _LEGAL_DAMPING
                hits.add(signal.name, weight, match.group(0))
                if weight == signal.weight:
                    break


def _in_legal_construction(view: str, start: int) -> bool:
    """True for "<Party> shall/may/will [not] <verb> ...": an obligation, not a command to the model."""
    clause_start = max(view.rfind(ch, 0, start) for ch in ".;:\n!?")
    prefix = view[max(clause_start + 1, start - 80) : start]
    return bool(_LEGAL_MODAL.search(prefix))


#: every name a reason can start with; the vocabulary of ``InjectionResult.reasons``.
SIGNAL_NAMES: tuple[str, ...] = tuple(
    [s.name for s in (*_ROLE_MARKERS, *_SIGNALS)]
    + [
        "zero_width_chars", "bidi_control_chars", "unicode_tag_smuggling", "hidden_comment_instruction",
        "hidden_comment", "hidden_styled_instruction", "hidden_styled_text", "spaced_out_phrase",
        "letter_spacing", "base64_payload", "model",
    ]
)  # fmt: skip


# ================================================================ learned model
#
# The rules above match phrasings. The model below scores meaning: a logistic regression
# over the MiniLM embedding of every sentence, of short windows of sentences and of the
# whole text, fitted by ``scripts/fit_injection.py`` and shipped as
# ``injection_model.npz`` (weights, threshold, training-data sha256). Each unit's feature
# is ``[u, u - d]``: its embedding ``u`` and how it departs from the embedding ``d`` of the
# whole text, so "an instruction that does not belong to the e-mail around it" is a
# direction the model can learn, and a request typed on its own (``u == d``) is not
# suspicious merely for being an imperative. Beside the embedding sit a few numbers the
# embedding blurs: lexical cues of an instruction (a leading imperative, "you", "your
# answer", AI words; :mod:`pipeline.guard.cues`), the rules' score of the unit alone, and
# cos(u, d). A text takes its most suspicious unit.

#: layout version of ``injection_model.npz``.
MODEL_FORMAT = 2
#: sentences per window, and the stride between windows.
WINDOW_SENTENCES = 3
WINDOW_STRIDE = 2
#: units embedded per text at most (a 250-word block has 10-20 sentences).
MAX_UNITS = 96
#: a unit shorter than this many characters is merged into the next one.
_MIN_UNIT_CHARS = 12

_SENTENCE_BREAK = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+|\s*\n\s*")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` spans of sentences and lines; tiny fragments join their neighbour."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    pending: int | None = None
    for brk in [*_SENTENCE_BREAK.finditer(text), None]:
        end = brk.start() if brk is not None else len(text)
        piece = text[cursor:end]
        if piece.strip():
            start = pending if pending is not None else cursor + (len(piece) - len(piece.lstrip()))
            stop = cursor + len(piece.rstrip())
            if stop - start < _MIN_UNIT_CHARS and brk is not None:
                pending = start
            else:
                spans.append((start, stop))
                pending = None
        if brk is not None:
            cursor = brk.end()
    if pending is not None and spans:
        spans[-1] = (spans[-1][0], len(text.rstrip()))
    elif pending is not None:
        spans.append((pending, len(text.rstrip())))
    return spans


def unit_spans(text: str) -> list[tuple[int, int]]:
    """What the model scores: each sentence, windows of sentences, and the whole text (last)."""
    sentences = split_sentences(text)
    units = list(sentences)
    if len(sentences) > WINDOW_SENTENCES:
        for first in range(0, len(sentences) - WINDOW_SENTENCES + 1, WINDOW_STRIDE):
            units.append((sentences[first][0], sentences[first + WINDOW_SENTENCES - 1][1]))
    if len(sentences) <= 1:
        return [(0, len(text))]
    return [*units[: MAX_UNITS - 1], (0, len(text))]


#: table bars and rules (markdown, or "SUBJECT: ...|FROM: ..." headers) separate fields like line ends.
_TABLE_NOISE = re.compile(r"(?:\|[\s:|-]*)+\|?|^\s*[-=*_]{3,}\s*$", re.MULTILINE)
#: "Title | Section": a line's one bar between words, as in a chunk's header, is text, not a table.
_BREADCRUMB_BAR = re.compile(r"(?<=\S) \|(?= \S)")


def _without_table_noise(text: str) -> str:
    """Table bars and rules become line ends; a chunk header's lone " | " stays, so a plain chunk's
    whole unit is its text as ingest embedded it (and ingest's vector is reused)."""
    def bar_or_break(match: re.Match[str]) -> str:
        line_start = text.rfind("\n", 0, match.start()) + 1
        line_end = text.find("\n", match.end())
        line = text[line_start : line_end if line_end >= 0 else len(text)]
        if match.group(0) == "| " and line.count("|") == 1 and _BREADCRUMB_BAR.search(line):
            return match.group(0)
        return "\n"

    return _TABLE_NOISE.sub(bar_or_break, text)


_REAL_WORD = re.compile(r"[^\W\d_]{2,}")


def model_units(text: str) -> list[str]:
    """What the model scores: hidden and base64-decoded pieces, each sentence, windows, the whole text (last).

    The model reads what a reader (or an LLM) would take as text: markup, comments and
    invisible characters are stripped as for the rules, and hidden bodies become units of their own.
    """
    raw = unicodedata.normalize("NFKC", text).translate(_HOMOGLYPHS)
    extra = [_visible_text(m.group(1)).strip() for m in _HTML_COMMENT.finditer(raw)]
    visible = _without_table_noise(_visible_text(raw)).strip()
    extra.extend(decode_base64_runs(visible, limit=2))
    units = [visible[a:b] for a, b in unit_spans(visible)] if visible else []
    hidden = [e for e in extra if len(e.split()) >= 2][:8]
    if len(_REAL_WORD.findall(visible)) < 2:
        units = []  # "a b a b ...", digits, punctuation: nothing a model could read as an instruction
    if not units:
        return hidden
    return [*hidden, *units]


#: columns after ``[u, u - d]``: the lexical cues, the rules' score of the unit, and cos(u, d).
EXTRA_FEATURES: tuple[str, ...] = (*CUE_NAMES, "rules_score", "cosine_to_whole")
#: the extras enter multiplied by this: one L2 penalty covers them and the 768 embedding weights, and
#: at 1.0 it held the 11 extras' weights down (5-fold CV on the dev half: at 3.0 the same recall flags
#: 7 % of benign rows instead of 10 %).
EXTRA_SCALE = 3.0


def unit_features(units: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    """``[u, u - d, cues, rules score, cos(u, d)]`` per unit, ``d`` being the last row (the whole text).

    The cues (:mod:`pipeline.guard.cues`) and the rules' score on the unit alone carry the form of
    an instruction that the embedding blurs; cos(u, d) says how far the unit strays from its text.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    whole = vectors[-1]
    cosine = (vectors @ whole) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(whole) + 1e-9)
    rules = np.array([detect_injection_rules(unit).score for unit in units], dtype=np.float32)
    extras = np.hstack([unit_cues(units), rules[:, None], cosine[:, None]]) * EXTRA_SCALE
    return np.hstack([vectors, vectors - vectors[-1:], extras])


@dataclass(frozen=True)
class InjectionModel:
    """Logistic regression over :func:`unit_features`; ``weights`` has ``2*dim + len(EXTRA_FEATURES) + 1``
    entries (bias last)."""

    weights: np.ndarray
    threshold: float
    meta: dict[str, Any] = field(default_factory=dict)
    #: stricter threshold for a short text (:func:`is_short_text`: a typed request, one clause),
    #: where an ordinary imperative looks most like a direct attack.
    threshold_single: float | None = None

    def threshold_for(self, text: str) -> float:
        """The threshold for ``text``: the stricter one for a short text, else the document one."""
        if self.threshold_single is not None and is_short_text(text):
            return max(self.threshold, self.threshold_single)
        return self.threshold

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        logits = np.asarray(features, dtype=np.float64) @ self.weights[:-1] + self.weights[-1]
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(logits, -50.0, 50.0))))


#: a text under this many words on one line is "short" (see :meth:`InjectionModel.threshold_for`).
SHORT_TEXT_WORDS = 40


def is_short_text(text: str) -> bool:
    """One line of under :data:`SHORT_TEXT_WORDS` words: a request or a clause, not a document."""
    stripped = text.strip()
    return "\n" not in stripped and len(stripped.split()) < SHORT_TEXT_WORDS


def default_model_path() -> Path:
    return Path(str(resources.files("pipeline").joinpath("guard/injection_model.npz")))


def read_model(path: Path) -> InjectionModel:
    """Load the shipped weights (no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            weights = np.asarray(data["weights"], dtype=np.float64)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise InternalError(f"cannot read injection model {path}: {exc}") from exc
    if meta.get("format") != MODEL_FORMAT or weights.shape != (2 * int(meta["dim"]) + len(EXTRA_FEATURES) + 1,):
        raise InternalError(f"{path}: not an injection model of format {MODEL_FORMAT}")
    single = meta.get("threshold_single")
    return InjectionModel(
        weights=weights,
        threshold=float(meta["threshold"]),
        meta=meta,
        threshold_single=float(single) if single is not None else None,
    )


def write_model(path: Path, model: InjectionModel) -> None:
    """Byte-identical output for identical inputs (fixed zip dates, sorted metadata)."""
    arrays = {"meta": np.array(json.dumps(model.meta, sort_keys=True)), "weights": model.weights}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue(), compresslevel=9)
    path.write_bytes(buffer.getvalue())


class LearnedDetector:
    """The model plus the embedder that feeds it; embeds all units of all texts in one batch.

    Scores are remembered per text (the last ``memo_size``, by digest): a document's chunks are
    scored again by every job that retrieves them, and by the extractive summary's whole-document
    pass in the same process, and embedding their sentences is the expensive part. Unit vectors
    are remembered too (the last ``unit_memo_size``, about 1.5 KB each): a unit is embedded once per
    batch, and again only when it fell out of that memo, so the sentences that overlapping chunks
    share and a contract family's boilerplate clauses are not embedded again at ingest."""

    def __init__(
        self, embedder: Embedder, model: InjectionModel, *, memo_size: int = 4096, unit_memo_size: int = 8192
    ) -> None:
        if model.meta.get("embedder_model_id") not in (None, embedder.model_id):
            raise InternalError(
                f"injection model was fitted on {model.meta.get('embedder_model_id')!r}, not {embedder.model_id!r}"
            )
        self.embedder = embedder
        self.model = model
        self._memo: LruMemo[tuple[float, str | None, int]] = LruMemo(memo_size)
        self._unit_memo: LruMemo[np.ndarray] = LruMemo(unit_memo_size)

    def score_many(
        self, texts: Sequence[str], embedded: tuple[str, np.ndarray] | None = None
    ) -> list[tuple[float, str | None, int]]:
        """Per text: the highest unit probability, that unit's text and the number of units
        (0.0, None, 0 for blank text). ``embedded`` = (model id, the texts' own embeddings), when the
        caller has them (ingest does): if that model is this detector's embedder, a text's vector stands
        in for a unit equal to the text (a plain chunk's whole unit), which is not embedded again."""
        keys = [text_key(text) for text in texts]
        known = self._memo.get_many(keys)
        todo = {key: text for key, text in zip(keys, texts, strict=True) if key not in known}
        if todo:
            given: dict[bytes, np.ndarray] = {}
            if embedded is not None and embedded[0] == self.embedder.model_id:
                given = dict(zip(keys, np.asarray(embedded[1], dtype=np.float32), strict=True))
            fresh = dict(zip(todo, self._score(list(todo.values()), given), strict=True))
            known.update(fresh)
            self._memo.put_many(fresh)
        return [known[key] for key in keys]

    def _score(self, texts: Sequence[str], known: dict[bytes, np.ndarray]) -> list[tuple[float, str | None, int]]:
        plans: list[tuple[list[str], int, int]] = []
        batch: list[str] = []
        for text in texts:
            pieces = model_units(text) if text and text.strip() else []
            plans.append((pieces, len(batch), len(batch) + len(pieces)))
            batch.extend(pieces)
        vectors = self._unit_vectors(batch, known)
        out: list[tuple[float, str | None, int]] = []
        for pieces, first, last in plans:
            if first == last:
                out.append((0.0, None, 0))
                continue
            probs = self.model.probabilities(unit_features(pieces, vectors[first:last]))
            best = int(np.argmax(probs))
            out.append((float(probs[best]), pieces[best], last - first))
        return out


    def _unit_vectors(self, units: list[str], known: dict[bytes, np.ndarray]) -> np.ndarray:
        """The embedding of each unit: given ones (``known``, by digest), remembered ones from the unit
        memo, the others embedded in one batch, each distinct unit once."""
        if not units:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        keys = [text_key(unit) for unit in units]
        found: dict[bytes, np.ndarray] = {key: known[key] for key in keys if key in known}
        found.update(self._unit_memo.get_many(key for key in keys if key not in found))
        todo = {key: unit for key, unit in zip(keys, units, strict=True) if key not in found}
        if todo:
            fresh = dict(zip(todo, self.embedder.embed(list(todo.values())), strict=True))
            found.update(fresh)
            self._unit_memo.put_many(fresh)
        return np.stack([found[key] for key in keys])


_default_lock = threading.Lock()
_default_detector: LearnedDetector | None = None
_default_state = "unset"  # "unset" | "ready" | "off"


def default_detector() -> LearnedDetector | None:
    """The shipped model over the offline MiniLM embedder (the process's shared session), built on first
    use per process.

    None (rules only, logged once) when the weights or the ONNX runtime are unavailable.
    """
    global _default_detector, _default_state
    if _default_state != "unset":
        return _default_detector
    with _default_lock:
        if _default_state == "unset":
            try:
                from pipeline.retrieval.embeddings import shared_minilm

                embedder = shared_minilm()
                embedder.warm_up()
                _default_detector = LearnedDetector(embedder, read_model(default_model_path()))
                _default_state = "ready"
            except (InternalError, ImportError) as exc:
                log.warning("injection model unavailable, rules only: %s", exc)
                _default_detector = None
                _default_state = "off"
    return _default_detector


def set_default_detector(detector: LearnedDetector | None) -> None:
    """Replace the process-wide detector (None: rules only), e.g. in tests or for another embedder."""
    global _default_detector, _default_state
    with _default_lock:
        _default_detector = detector
        _default_state = "ready" if detector is not None else "off"


def _model_as_score(probability: float, model_threshold: float, threshold: float) -> float:
    """Map the probability so that the model's own threshold lands on the caller's ``threshold``."""
    if probability >= model_threshold:
        return threshold + (1.0 - threshold) * (probability - model_threshold) / max(1e-9, 1.0 - model_threshold)
    return threshold * probability / max(1e-9, model_threshold)


def combine(
    rules: InjectionResult,
    text: str,
    probability: float,
    unit: str | None,
    model_threshold: float,
    threshold: float,
) -> InjectionResult:
    """One verdict: flagged when the rules or the model fire; the score is the stronger of the two."""
    model_fired = probability >= model_threshold
    score, reasons = rules.score, list(rules.reasons)
    if model_fired:
        snippet = unit or ""
        score = max(score, round(_model_as_score(probability, model_threshold, threshold), 4))
        reasons.append(f"model: p={probability:.2f} {_clip(snippet)!r}")
    rules_fired = rules.score >= threshold
    fired_by = "+".join(name for name, on in (("rules", rules_fired), ("model", model_fired)) if on)
    return InjectionResult(
        flagged=score >= threshold,
        score=score,
        reasons=reasons,
        model_score=round(probability, 4),
        model_unit=unit,
        fired_by=fired_by,
    )


def detect_injection(
    text: str,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    detector: LearnedDetector | None | Literal["default"] = "default",
) -> InjectionResult:
    """Score ``text`` with the rules and, when available, the learned model over its sentences.

    ``detector=None`` runs the rules alone (what ``detect_injection_rules`` does).
    """
    return detect_injection_many([text], threshold, detector=detector)[0]


def detect_injection_many(
    texts: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    detector: LearnedDetector | None | Literal["default"] = "default",
    embedded: tuple[str, np.ndarray] | None = None,
) -> list[InjectionResult]:
    """:func:`detect_injection` for many texts, with every sentence of all of them embedded in one batch
    (``embedded``: the texts' own embeddings and their model id, when the caller has them; see
    :meth:`LearnedDetector.score_many`)."""
    rules = [detect_injection_rules(text, threshold) for text in texts]
    learned = default_detector() if detector == "default" else detector
    if learned is None:
        return [replace(r, fired_by="rules" if r.flagged else "") for r in rules]
    scored = learned.score_many(texts)
    return [
        combine(rule, text, probability, unit, learned.model.threshold_for(text), threshold)
        if unit is not None
        else replace(rule, fired_by="rules" if rule.flagged else "")
        for rule, text, (probability, unit, _) in zip(rules, texts, scored, strict=True)
    ]


# ---------------------------------------------------------------- fitting (offline)
#: L2 penalty and multiple-instance rounds of the shipped fit (``scripts/fit_injection.py``).
DEFAULT_L2 = 1e-3
MIL_ROUNDS = 3


def default_data_paths() -> list[Path]:
    """The project's own labelled examples (attacks and benign look-alikes), shipped with the package."""
    root = resources.files("pipeline").joinpath("guard/data")
    return sorted(
        Path(str(root.joinpath(name)))
        for name in (
            "injection_attacks.v1.jsonl",
            "injection_benign.v1.jsonl",
            "injection_attacks.v2.jsonl",
            "injection_benign.v2.jsonl",
            "injection_attacks.v3.jsonl",
            "injection_benign.v3.jsonl",
        )
    )


def embed_for_fit(embedder: Embedder, texts: Sequence[str]) -> list[np.ndarray]:
    """:func:`unit_features` of every text, all units embedded in one batch."""
    pieces: list[str] = []
    bounds: list[tuple[int, int]] = []
    for text in texts:
        units = model_units(text) or [text]
        bounds.append((len(pieces), len(pieces) + len(units)))
        pieces.extend(units)
    vectors = embedder.embed(pieces)
    return [unit_features(pieces[a:b], vectors[a:b]) for a, b in bounds]


def fit_weights(
    features: Sequence[np.ndarray], labels: Sequence[bool], l2: float = DEFAULT_L2, rounds: int = MIL_ROUNDS
) -> np.ndarray:
    """Logistic regression with multiple-instance rounds; deterministic (L-BFGS from zero).

    Every unit of a benign text is a negative. A positive text is a bag: which sentence
    carries the attack is unknown, so round one takes the whole text, and each later
    round takes the unit the previous fit scores highest (plus the whole text). Classes
    are balanced, so the thousands of benign sentences do not drown the attacks.
    """
    from pipeline.intent.fit import fit_softmax_regression

    negatives = np.vstack([f for f, y in zip(features, labels, strict=True) if not y])
    bags = [f for f, y in zip(features, labels, strict=True) if y]
    positives = np.vstack([bag[-1:] for bag in bags])
    weights = np.zeros(negatives.shape[1] + 1)
    for _ in range(max(1, rounds)):
        x = np.vstack([negatives, positives])
        y = np.concatenate([np.zeros(len(negatives), dtype=int), np.ones(len(positives), dtype=int)])
        two = fit_softmax_regression(x, y, 2, l2)
        weights = two[:, 1] - two[:, 0]
        model = InjectionModel(weights=weights, threshold=0.5)
        chosen = []
        for bag in bags:
            chosen.append(bag[int(np.argmax(model.probabilities(bag)))])
            chosen.append(bag[-1])
        positives = np.vstack(chosen)
    return weights
