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
        description="the original request exactly as received (it may be the part that is invalid)"
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
