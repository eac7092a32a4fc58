"""The message contract between stages and with other services (exported to ``schemas/json``)."""

from pydantic import BaseModel

from schemas.deadletter import DeadLetter
from schemas.job import MAX_TEXT_CHARS, Intent, JobParams, JobRequest
from schemas.stages import (
    STAGES,
    Answer,
    CheckResult,
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
    StageMessage,
    Usage,
)

#: stage name -> (input model, output model); the chain test walks this.
STAGE_MODELS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "intent": (JobRequest, IntentResult),
    "retrieve": (IntentResult, RetrievalResult),
    "generate": (RetrievalResult, GenerationResult),
    "guard": (GenerationResult, GuardResult),
    "record": (GuardResult, JobRecord),
}

#: every model exported as JSON Schema for producers in other languages.
EXPORTED_MODELS: dict[str, type[BaseModel]] = {
    "JobRequest": JobRequest,
    "IntentResult": IntentResult,
    "RetrievalResult": RetrievalResult,
    "GenerationResult": GenerationResult,
    "GuardResult": GuardResult,
    "JobRecord": JobRecord,
    "JobStatus": JobStatus,
    "DeadLetter": DeadLetter,
    "ContractSummary": ContractSummary,
    "Answer": Answer,
}

__all__ = [
    "MAX_TEXT_CHARS",
    "STAGES",
    "STAGE_MODELS",
    "EXPORTED_MODELS",
    "Answer",
    "CheckResult",
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
    "StageMessage",
    "Usage",
]
