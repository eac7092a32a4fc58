"""The guard stage's ordered validators.

Each validator looks at the generation and the output so far and returns a ``CheckResult``
(``pass``, ``repaired``, ``redacted`` or ``blocked`` with reasons) plus the output it lets
through, which the next validator sees. The first ``blocked`` stops the list; the overall
verdict is the most severe one. Which validators run, and how strict they are, comes from
the tenant's ``GuardPolicy``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from pipeline.errors import validation_problems
from pipeline.guard.grounding import grounding
from pipeline.guard.pii import find_pii, redact
from pipeline.guard.policy import BlocklistPolicy
from pipeline.settings import GuardPolicy
from pipeline.text import split_sentences
from schemas import CheckResult, GenerationResult, GuardReport, output_schema
from schemas.stages import Verdict

Output = dict[str, Any]
Validator = Callable[[GenerationResult, Output], tuple[CheckResult, Output]]

_SEVERITY = {"pass": 0, "repaired": 1, "redacted": 2, "blocked": 3}
#: common API-key shapes, refused in outputs even when the key is not one of ours.
_KEY_SHAPES = re.compile(r"\b(?:sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{30,}|xox[bp]-[A-Za-z0-9-]{20,})")
_LEAK_WINDOW = 10  # words of a system prompt that may not appear verbatim in an output


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


def check_structure(msg: GenerationResult, output: Output) -> tuple[CheckResult, Output]:
    """The completion must be complete and parse into the intent's schema."""
    completion = msg.completion
    if completion.finish_reason == "length":
        return CheckResult(name="structure", verdict="blocked", reasons=["completion truncated (length)"]), output
    if completion.structured is None:
        return CheckResult(name="structure", verdict="blocked", reasons=["no structured output"]), output
    try:
        parsed = output_schema(msg.intent).model_validate(completion.structured)
    except ValidationError as exc:
        problems = validation_problems(exc, "output")
        return CheckResult(name="structure", verdict="blocked", reasons=problems[:5]), output
    if completion.repair_reasons:
        reasons = [f"re-asked once: {r}" for r in completion.repair_reasons[:3]]
        return CheckResult(name="structure", verdict="repaired", reasons=reasons), parsed.model_dump()
    return CheckResult(name="structure", verdict="pass"), parsed.model_dump()


def check_citations(msg: GenerationResult, output: Output) -> tuple[CheckResult, Output]:
    """Every citation must name a chunk that was actually retrieved; unknown ones are removed."""
    retrieved = {c.chunk_id for c in msg.chunks}
    cited = list(output.get("citations", []))
    invalid = [c for c in cited if c not in retrieved]
    if not invalid:
        return CheckResult(name="citations", verdict="pass", score=1.0 if cited else None), output
    kept = [c for c in cited if c in retrieved]
    reasons = [f"removed citation to unretrieved chunk {c}" for c in invalid[:5]]
    score = len(kept) / len(cited)
    repaired = {**output, "citations": kept}
    return CheckResult(name="citations", verdict="repaired", reasons=reasons, score=score), repaired


def grounding_claims(output: Output) -> tuple[str, list[str], dict[str, list[str]]]:
    """What the grounding check judges: the prose field's name, its sentences, and the list items
    (``key_terms``, ``risks``) by field. Field values (parties, dates, amounts) are not claims."""
    prose_field = "summary" if "summary" in output else "answer"
    sentences = split_sentences(output.get(prose_field, "")) or [output.get(prose_field, "")]
    items: dict[str, list[str]] = {f: list(output.get(f, [])) for f in ("key_terms", "risks") if f in output}
    return prose_field, sentences, items


def make_grounding_check(policy: GuardPolicy) -> Validator:
    """Claims must be supported by a retrieved chunk; unsupported ones are removed, flagged or block."""

    def check_grounding(msg: GenerationResult, output: Output) -> tuple[CheckResult, Output]:
        chunks = [(c.chunk_id, c.text) for c in msg.chunks]
        prose_field, sentences, items = grounding_claims(output)
        claims = sentences + [i for f in items.values() for i in f]
        report = grounding(claims, chunks, policy.grounding_threshold)
        unsupported = set(report.unsupported)
        if not unsupported:
            return CheckResult(name="grounding", verdict="pass", score=report.score), output
        reasons = [f"unsupported: {claims[i][:80]!r}" for i in sorted(unsupported)[:5]]
        if policy.grounding == "flag":
            return CheckResult(name="grounding", verdict="pass", reasons=reasons, score=report.score), output
        kept_prose = " ".join(s for i, s in enumerate(sentences) if i not in unsupported)
        if policy.grounding == "block" or not kept_prose or report.score < policy.min_grounding_score:
            why = ["no supported sentence left"] if not kept_prose else [f"grounding score {report.score:.2f}"]
            return CheckResult(name="grounding", verdict="blocked", reasons=why + reasons, score=report.score), output
        repaired = {**output, prose_field: kept_prose}
        offset = len(sentences)
        for name, values in items.items():
            repaired[name] = [v for j, v in enumerate(values, start=offset) if j not in unsupported]
            offset += len(values)
        removed = [f"removed {r[len('unsupported: '):]}" for r in reasons]
        return CheckResult(name="grounding", verdict="repaired", reasons=removed, score=report.score), repaired

    return check_grounding


def make_pii_check(policy: GuardPolicy) -> Validator:
    def check_pii(msg: GenerationResult, output: Output) -> tuple[CheckResult, Output]:
        found = [m for text in _strings(output) for m in find_pii(text)]
        if not found or policy.pii == "allow":
            return CheckResult(name="pii", verdict="pass"), output
        counts: dict[str, int] = {}
        for m in found:
            counts[m.type] = counts.get(m.type, 0) + 1
        reasons = [f"{n} {kind}" for kind, n in sorted(counts.items())]
        if policy.pii == "block":
            return CheckResult(name="pii", verdict="blocked", reasons=reasons), output
        return CheckResult(name="pii", verdict="redacted", reasons=reasons), _map_strings(output, redact)

    return check_pii


def make_leak_check(secrets: Sequence[str], system_prompts: Sequence[str]) -> Validator:
    """Refuse outputs that repeat a secret, an API key, or a run of the system prompt."""
    windows: set[str] = set()
    for prompt in system_prompts:
        words = prompt.lower().split()
        windows.update(" ".join(words[i : i + _LEAK_WINDOW]) for i in range(0, max(len(words) - _LEAK_WINDOW + 1, 0)))

    def check_leaks(msg: GenerationResult, output: Output) -> tuple[CheckResult, Output]:
        text = "\n".join(_strings(output))
        reasons = []
        if any(secret in text for secret in secrets) or _KEY_SHAPES.search(text):
            reasons.append("output contains a secret or API key")
        flat = " ".join(text.lower().split())
        if any(window in flat for window in windows):
            reasons.append("output repeats the system prompt")
        if reasons:
            return CheckResult(name="leak", verdict="blocked", reasons=reasons), output
        return CheckResult(name="leak", verdict="pass"), output

    return check_leaks


def make_blocklist_check(policy: GuardPolicy) -> Validator:
    blocklist = BlocklistPolicy(terms=policy.blocklist, patterns=policy.blocklist_patterns)

    def check_blocklist(msg: GenerationResult, output: Output) -> tuple[CheckResult, Output]:
        reasons = blocklist.check("\n".join(_strings(output)))
        if reasons:
            return CheckResult(name="content_policy", verdict="blocked", reasons=reasons), output
        return CheckResult(name="content_policy", verdict="pass"), output

    return check_blocklist


def build_validators(
    policy: GuardPolicy, *, secrets: Sequence[str] = (), system_prompts: Sequence[str] = ()
) -> tuple[Validator, ...]:
    """The ordered list: shape first, then truth, then what may be shown."""
    return (
        check_structure,
        check_citations,
        make_grounding_check(policy),
        make_leak_check(secrets, system_prompts),
        make_blocklist_check(policy),
        make_pii_check(policy),
    )


def run_validators(msg: GenerationResult, validators: Sequence[Validator]) -> tuple[GuardReport, Output]:
    output: Output = dict(msg.completion.structured or {})
    checks: list[CheckResult] = []
    for validator in validators:
        check, output = validator(msg, output)
        checks.append(check)
        if check.verdict == "blocked":
            break
    verdict: Verdict = max((c.verdict for c in checks), key=_SEVERITY.__getitem__, default="pass")
    grounding_score = next((c.score for c in checks if c.name == "grounding"), None)
    return GuardReport(verdict=verdict, checks=checks, grounding_score=grounding_score), output
