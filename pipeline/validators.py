"""The guard stage's ordered validators.

Each validator looks at the generation and the output so far and returns a ``CheckResult``
(``pass``, ``redacted``, ``repaired`` or ``blocked`` with reasons) plus the output it lets
through, which the next validator sees. The first ``blocked`` stops the list. The overall
verdict is the most severe one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from schemas import Answer, CheckResult, ContractSummary, GenerationResult, GuardReport, Intent

Output = dict[str, Any]
Validator = Callable[[GenerationResult, Output], tuple[CheckResult, Output]]

_SEVERITY = {"pass": 0, "repaired": 1, "redacted": 2, "blocked": 3}


def output_schema(intent: Intent) -> type[BaseModel]:
    """The structured output each intent must produce."""
    return ContractSummary if intent == Intent.summarize else Answer


def check_structure(msg: GenerationResult, output: Output) -> tuple[CheckResult, Output]:
    """The completion must be complete and parse into the intent's schema."""
    completion = msg.completion
    if completion.finish_reason == "length":
        return CheckResult(name="structure", verdict="blocked", reasons=["completion truncated (length)"]), output
    if completion.structured is None:
        return CheckResult(name="structure", verdict="blocked", reasons=["no structured output"]), output
    schema = output_schema(msg.intent)
    try:
        parsed = schema.model_validate(completion.structured)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'output'}: {e['msg']}" for e in exc.errors()]
        return CheckResult(name="structure", verdict="blocked", reasons=problems[:5]), output
    return CheckResult(name="structure", verdict="pass"), parsed.model_dump()


def check_citations(msg: GenerationResult, output: Output) -> tuple[CheckResult, Output]:
    """Every citation must name a chunk that was actually retrieved; unknown ones are removed."""
    retrieved = {c.chunk_id for c in msg.chunks}
    cited = list(output.get("citations", []))
    invalid = [c for c in cited if c not in retrieved]
    if not invalid:
        return CheckResult(name="citations", verdict="pass", score=1.0 if cited else None), output
    kept = [c for c in cited if c in retrieved]
    score = len(kept) / len(cited)
    repaired = {**output, "citations": kept}
    reasons = [f"removed citation to unretrieved chunk {c}" for c in invalid[:5]]
    return CheckResult(name="citations", verdict="repaired", reasons=reasons, score=score), repaired


DEFAULT_VALIDATORS: tuple[Validator, ...] = (check_structure, check_citations)


def run_validators(
    msg: GenerationResult, validators: tuple[Validator, ...] = DEFAULT_VALIDATORS
) -> tuple[GuardReport, Output]:
    output: Output = dict(msg.completion.structured or {})
    checks: list[CheckResult] = []
    for validator in validators:
        check, output = validator(msg, output)
        checks.append(check)
        if check.verdict == "blocked":
            break
    verdict = max((c.verdict for c in checks), key=_SEVERITY.__getitem__, default="pass")
    grounding = next((c.score for c in checks if c.name == "grounding"), None)
    return GuardReport(verdict=verdict, checks=checks, grounding_score=grounding), output
