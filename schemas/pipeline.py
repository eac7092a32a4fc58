"""The stage table: the one place a stage is named.

Routing, the chain, the worker's queue lists, warm-up and the JSON Schema export all read
``PIPELINE``; a producer in any language needs only the task and queue names below (they
are a public contract: deployments route on them). ``drops`` names the fields of the
previous message a stage consumes and does not pass on, so each message carries what the
stages after it need and nothing more (``tests/unit/test_schema_chain.py`` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from schemas.job import IngestRequest, JobRequest
from schemas.stages import GenerationResult, GuardResult, IntentResult, JobRecord, RetrievalResult


@dataclass(frozen=True)
class StageSpec:
    name: str
    task: str
    queue: str
    input: type[BaseModel]
    output: type[BaseModel]
    drops: tuple[str, ...] = ()


#: a batch item's document, stored by reference, is read, chunked, embedded and stored here; the
#: chain of a job whose document is already ingested starts at ``intent``.
INGEST = StageSpec("ingest", "conveyor.ingest", "ingest", IngestRequest, JobRequest, drops=("document",))
INTENT = StageSpec("intent", "conveyor.intent", "intent", JobRequest, IntentResult)
RETRIEVE = StageSpec("retrieve", "conveyor.retrieve", "retrieve", IntentResult, RetrievalResult)
GENERATE = StageSpec("generate", "conveyor.generate", "llm", RetrievalResult, GenerationResult,
                     drops=("query_embedding",))
GUARD = StageSpec("guard", "conveyor.guard", "guard", GenerationResult, GuardResult, drops=("chunks",))
RECORD = StageSpec("record", "conveyor.record", "record", GuardResult, JobRecord)

#: the chain, in order.
PIPELINE: tuple[StageSpec, ...] = (INGEST, INTENT, RETRIEVE, GENERATE, GUARD, RECORD)
STAGES: tuple[str, ...] = tuple(spec.name for spec in PIPELINE)
QUEUES: tuple[str, ...] = tuple(spec.queue for spec in PIPELINE)


def stage(name: str) -> StageSpec:
    """The spec of stage ``name``; ValueError naming the stages for anything else."""
    for spec in PIPELINE:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")


def stages_from(name: str) -> tuple[StageSpec, ...]:
    """The rest of the chain, starting at stage ``name`` (where a replay or re-queue re-enters)."""
    return PIPELINE[PIPELINE.index(stage(name)) :]


def next_stage(spec: StageSpec) -> StageSpec | None:
    """The stage after ``spec``; None after the last."""
    index = PIPELINE.index(spec)
    return PIPELINE[index + 1] if index + 1 < len(PIPELINE) else None


def stages_for_queues(queues: set[str] | list[str] | tuple[str, ...]) -> tuple[StageSpec, ...]:
    """The stages a worker consuming ``queues`` runs."""
    return tuple(spec for spec in PIPELINE if spec.queue in set(queues))
