"""A job that could not finish, kept whole so it can be inspected and replayed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dead_letter_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    job_id: str
    request: dict[str, Any] = Field(
        description="the original request exactly as received (it may be the part that is invalid); a payload "
        "without a readable request: {_raw: payload} up to 64 KiB of JSON, else {_raw_head, _raw_bytes, _raw_sha256}"
    )
    stage: str = Field(description="the stage that failed; replay re-enters the chain here")
    stage_input: dict[str, Any] = Field(description="the JSON the failed stage received")
    failure_class: str = Field(description="invalid_input, output_invalid, guardrail_blocked, rate_limited, ...")
    retries_exhausted: bool = Field(
        default=False, description="true when a retryable failure outlived the stage's retry budget"
    )
    error_type: str = Field(description="the exception class name")
    error_message: str
    attempts: int = Field(ge=1, description="times the failed stage ran for this job")
    state: Literal["open", "replayed"] = "open"
    replays: int = 0
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    replayed_at: datetime | None = None


class DeadLetterSummary(BaseModel):
    """What ``conveyor dlq list`` shows: small, so a page never reads a letter's request or stage input."""

    model_config = ConfigDict(extra="forbid")

    dead_letter_id: str
    job_id: str
    created_at: datetime
    stage: str
    failure_class: str
    retries_exhausted: bool
    attempts: int
    error_message: str = Field(description="the first 200 characters")
    batch_id: str | None = None
    document_id: str | None = None
    custom_id: str | None = None
    state: Literal["open", "replayed"] = "open"
    replays: int = 0
    replayed_at: datetime | None = None

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterSummary:
        def request_field(name: str) -> str | None:
            value = letter.request.get(name)
            return value if isinstance(value, str) else None

        return cls(
            dead_letter_id=letter.dead_letter_id,
            job_id=letter.job_id,
            created_at=letter.created_at,
            stage=letter.stage,
            failure_class=letter.failure_class,
            retries_exhausted=letter.retries_exhausted,
            attempts=letter.attempts,
            error_message=letter.error_message[:200],
            batch_id=request_field("batch_id"),
            document_id=request_field("document_id"),
            custom_id=request_field("custom_id"),
            state=letter.state,
            replays=letter.replays,
            replayed_at=letter.replayed_at,
        )
