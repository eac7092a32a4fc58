"""The message contract between stages and with other services (exported to ``schemas/json``)."""

from pydantic import BaseModel

from schemas.deadletter import DeadLetter
from schemas.job import MAX_TEXT_CHARS, Intent, JobParams, JobRequest
from schemas.pipeline import PIPELINE, QUEUES, STAGES, StageSpec
from schemas.stages import (
    Answer,
    CheckResult,
    Classified,
    Completion,
    ContextChunk,
    ContractSummary,
    GenerationResult,
    GuardReport,
    GuardResult,
    IntentResult,
    JobRecord,
    JobStatus,
    RetrievalResult,
    Retrieved,
    StageMessage,
    Usage,
    output_schema,
)

#: every model exported as JSON Schema for producers in other languages: each stage's
#: input and output, plus what the client reads back.
_EXPORTED: list[type[BaseModel]] = [
    *(m for spec in PIPELINE for m in (spec.input, spec.output)),
    JobStatus,
    DeadLetter,
    ContractSummary,
    Answer,
]
EXPORTED_MODELS: dict[str, type[BaseModel]] = {model.__name__: model for model in _EXPORTED}

__all__ = [
    "MAX_TEXT_CHARS",
    "PIPELINE",
    "QUEUES",
    "STAGES",
    "EXPORTED_MODELS",
    "StageSpec",
    "Answer",
    "CheckResult",
    "Classified",
    "Completion",
    "ContextChunk",
    "ContractSummary",
    "DeadLetter",
    "GenerationResult",
    "GuardReport",
    "GuardResult",
    "Intent",
    "IntentResult",
    "JobParams",
    "JobRecord",
    "JobRequest",
    "JobStatus",
    "RetrievalResult",
    "Retrieved",
    "StageMessage",
    "Usage",
    "output_schema",
]
