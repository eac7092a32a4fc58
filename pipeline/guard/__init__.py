"""Guard stage logic: injection, PII, grounding and policy checks as plain functions.

No Celery and no network here; the guard task wraps these.
"""

from pipeline.guard.grounding import GroundingReport, grounding
from pipeline.guard.injection import InjectionResult, detect_injection
from pipeline.guard.pii import PiiMatch, PiiRedactingFilter, find_pii, redact, scrub_event
from pipeline.guard.policy import BlocklistPolicy
from pipeline.guard.scan import scan_text, split_blocks

__all__ = [
    "BlocklistPolicy",
    "GroundingReport",
    "InjectionResult",
    "PiiMatch",
    "PiiRedactingFilter",
    "detect_injection",
    "find_pii",
    "grounding",
    "redact",
    "scan_text",
    "scrub_event",
    "split_blocks",
]
