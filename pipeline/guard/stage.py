"""Stage 4: may this completion reach the user? An ordered list of small validators."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.errors import GuardrailBlocked, OutputInvalid
from pipeline.generation.prompts import system_prompts
from pipeline.guard.validators import build_validators, run_validators
from schemas import GenerationResult, GuardResult

if TYPE_CHECKING:
    from pipeline.resources import Resources


def run_guard(msg: GenerationResult, res: Resources) -> GuardResult:
    settings = res.settings
    validators = build_validators(
        settings.guard_policy_for(msg.request.tenant),
        secrets=settings.secret_values(),
        system_prompts=system_prompts(),
    )
    report, output = run_validators(msg, validators)
    if report.verdict == "blocked":
        reasons = "; ".join(report.reasons) or "blocked"
        structural = any(c.name == "structure" and c.verdict == "blocked" for c in report.checks)
        error = OutputInvalid if structural else GuardrailBlocked
        raise error(f"guard blocked the output: {reasons}", details={"guard": report.model_dump()})
    return GuardResult(**dict(msg), guard=report, output=output)
