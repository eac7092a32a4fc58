"""Stage 4: may this completion reach the user? An ordered list of small validators."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.errors import GuardrailBlocked, OutputInvalid
from pipeline.validators import run_validators
from schemas import GenerationResult, GuardResult

if TYPE_CHECKING:
    from pipeline.resources import Resources


def run_guard(msg: GenerationResult, res: Resources) -> GuardResult:
    report, output = run_validators(msg)
    if report.verdict == "blocked":
        reasons = "; ".join(report.reasons) or "blocked"
        structural = any(c.name == "structure" and c.verdict == "blocked" for c in report.checks)
        error = OutputInvalid if structural else GuardrailBlocked
        raise error(f"guard blocked the output: {reasons}", details={"guard": report.model_dump()})
    return GuardResult(**dict(msg), guard=report, output=output)
