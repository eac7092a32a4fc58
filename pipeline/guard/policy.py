"""Configurable blocklist and off-topic rule for requests and completions.

Terms match as whole words, case-insensitively, with any run of whitespace between the
words of a phrase, so "wire  transfer" and "Wire Transfer" both hit "wire transfer" but
"transferable" does not hit "transfer". Patterns are regexes for anything terms cannot say.
A bad pattern fails at construction (start-up), not on the first job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.settings import GuardPolicy


def _term_regex(term: str) -> re.Pattern[str]:
    words = [re.escape(word) for word in term.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class BlocklistPolicy:
    """Block texts that contain ``terms`` or match ``patterns``; optionally require a topic.

    ``on_topic``: if given, a text that mentions none of these terms is reported as off-topic.
    """

    terms: Sequence[str] = ()
    patterns: Sequence[str] = ()
    on_topic: Sequence[str] = ()
    _compiled: tuple[tuple[str, re.Pattern[str]], ...] = field(init=False, repr=False, compare=False)
    _topic: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled: list[tuple[str, re.Pattern[str]]] = []
        for term in self.terms:
            if term.strip():
                compiled.append((f"blocked term {term.strip()!r}", _term_regex(term)))
        for pattern in self.patterns:
            try:
                compiled.append((f"blocked pattern {pattern!r}", re.compile(pattern, re.IGNORECASE)))
            except re.error as exc:
                raise ValueError(f"invalid blocklist pattern {pattern!r}: {exc}") from exc
        object.__setattr__(self, "_compiled", tuple(compiled))
        object.__setattr__(self, "_topic", tuple(_term_regex(t) for t in self.on_topic if t.strip()))

    def check(self, text: str) -> list[str]:
        """Reasons the text is blocked; empty when it passes."""
        reasons = [reason for reason, regex in self._compiled if regex.search(text)]
        if self._topic and not any(regex.search(text) for regex in self._topic):
            reasons.append("off-topic: mentions none of the allowed topics")
        return reasons


@dataclass(frozen=True)
class TenantPolicies:
    """Each tenant's guard policy; tenants not listed get ``default``."""

    default: GuardPolicy
    tenants: Mapping[str, GuardPolicy] = field(default_factory=dict)

    def for_tenant(self, tenant: str) -> GuardPolicy:
        return self.tenants.get(tenant, self.default)
