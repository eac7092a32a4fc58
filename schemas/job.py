"""The request another service sends to Conveyor.

Small on purpose: the request travels through the broker with every stage, so large
documents are ingested first and referenced by ``document_id``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

#: Hard cap on inline request text: bigger inputs belong in the document store.
MAX_TEXT_CHARS = 20_000

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


class Intent(StrEnum):
    summarize = "summarize"
    question = "question"
    extract = "extract"
    risk = "risk"
    other = "other"


class JobParams(BaseModel):
    """Per-request knobs; every field has a safe default."""

    model_config = ConfigDict(extra="forbid")

    top_k: int | None = Field(default=None, ge=1, le=50, description="chunks for question-like intents")
    max_output_tokens: int | None = Field(default=None, ge=16, le=8192)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    use_cache: bool = Field(default=True, description="false forces a fresh LLM call")
    model: str | None = Field(default=None, description="override the configured LLM model")


class JobRequest(BaseModel):
    """What a producer enqueues. ``text`` is the instruction or question; the document is a reference."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    job_id: Identifier = Field(default_factory=lambda: uuid.uuid4().hex)
    idempotency_key: Identifier | None = Field(
        default=None, description="same key, same job: a resubmission returns the first job_id"
    )
    tenant: Identifier = "default"
    text: str = Field(default="", max_length=MAX_TEXT_CHARS)
    document_id: Identifier | None = Field(default=None, description="id of an ingested document")
    intent_hint: Intent | None = Field(default=None, description="skips classification when set")
    params: JobParams = Field(default_factory=JobParams)
    batch_id: Identifier | None = None
    custom_id: str | None = Field(default=None, max_length=256, description="caller's own reference")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @model_validator(mode="after")
    def _needs_something_to_work_on(self) -> JobRequest:
        if not self.text and not self.document_id:
            raise ValueError("a job needs 'text' (the instruction or question) or 'document_id', or both")
        if self.idempotency_key is None:
            self.idempotency_key = self.job_id
        return self

    def summary(self) -> dict[str, Any]:
        """Fields safe to log: ids only, never the text."""
        return {
            "job_id": self.job_id,
            "tenant": self.tenant,
            "document_id": self.document_id,
            "batch_id": self.batch_id,
        }


class DocumentRef(BaseModel):
    """A document by reference: its bytes wait in the state store under their sha256 (content-addressed),
    so a broker message stays small whatever the document's size."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    name: str = Field(min_length=1, max_length=1024, description="path relative to the batch root; its suffix "
                      "says how to read it")
    size: int = Field(ge=0)


class IngestRequest(BaseModel):
    """The ingest stage's input: the job, and the document its ``document_id`` will name once stored."""

    model_config = ConfigDict(extra="forbid")

    request: JobRequest
    document: DocumentRef

    @model_validator(mode="after")
    def _names_its_document(self) -> IngestRequest:
        if not self.request.document_id:
            raise ValueError("an ingest request's job needs the document_id the document is stored under")
        return self
