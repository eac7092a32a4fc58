"""Stage 4: may this completion reach the user? An ordered list of small validators."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.errors import GuardrailBlocked, OutputInvalid
from pipeline.guard.policy import TenantPolicies
from pipeline.guard.validators import Validator, build_validators, run_validators
from schemas import GenerationResult, GuardResult


class GuardStage:
    """Run the tenant's validators; a blocked verdict ends the job in the dead-letter store.

    Validators are built once per tenant policy here (a blocklist compiles its regexes),
    not per job.
    """

    def __init__(self, policies: TenantPolicies, *, secrets: Sequence[str], system_prompts: Sequence[str]) -> None:
        self._default = build_validators(policies.default, secrets=secrets, system_prompts=system_prompts)
        self._by_tenant = {
            tenant: build_validators(policy, secrets=secrets, system_prompts=system_prompts)
            for tenant, policy in policies.tenants.items()
        }

    def warm_up(self) -> None:
        """Nothing to load: the validators were built with the stage."""

    def validators_for(self, tenant: str) -> tuple[Validator, ...]:
        return self._by_tenant.get(tenant, self._default)

    def __call__(self, msg: GenerationResult) -> GuardResult:
        report, output = run_validators(msg, self.validators_for(msg.request.tenant))
        if report.verdict == "blocked":
            reasons = "; ".join(report.reasons) or "blocked"
            structural = any(c.name == "structure" and c.verdict == "blocked" for c in report.checks)
            error = OutputInvalid if structural else GuardrailBlocked
            raise error(f"guard blocked the output: {reasons}", details={"guard": report.model_dump()})
        read = msg.completion.chunks_read
        used = [c.chunk_id for c in msg.chunks] if read is None else list(read)
        return msg.carry(GuardResult, chunks_used=used, guard=report, output=output)
