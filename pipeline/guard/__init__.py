"""Guard stage logic: injection, PII, grounding and policy checks as plain functions.

No Celery and no network here; the guard task wraps these. The names below are loaded from
their modules on first use, so that importing one light module of the package (``policy``,
which the settings and the composition root need) does not load the injection model's numpy
and weights into a producer that only enqueues jobs. The ``grounding`` function is not among
them: once its module is imported, ``pipeline.guard.grounding`` names the module (import it from
``pipeline.guard.grounding``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.guard.grounding import GroundingReport
    from pipeline.guard.injection import InjectionResult, detect_injection
    from pipeline.guard.pii import PiiMatch, PiiRedactingFilter, find_pii, redact, scrub_event
    from pipeline.guard.policy import BlocklistPolicy
    from pipeline.guard.scan import scan_text, split_blocks

_HOME = {
    "GroundingReport": "grounding",
    "InjectionResult": "injection", "detect_injection": "injection",
    "PiiMatch": "pii", "PiiRedactingFilter": "pii", "find_pii": "pii", "redact": "pii", "scrub_event": "pii",
    "BlocklistPolicy": "policy",
    "scan_text": "scan", "split_blocks": "scan",
}

__all__ = [
    "BlocklistPolicy",
    "GroundingReport",
    "InjectionResult",
    "PiiMatch",
    "PiiRedactingFilter",
    "detect_injection",
    "find_pii",
    "redact",
    "scan_text",
    "scrub_event",
    "split_blocks",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
