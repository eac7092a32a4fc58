"""Batches: many items, one status, per-item results keyed by ``custom_id`` (OpenAI Batch's shape)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.job import Identifier, Intent, JobParams

DEFAULT_INSTRUCTION = "Summarize this contract."


class ManifestLine(BaseModel):
    """One line of a ``--manifest FILE.jsonl``: an item, with its document as a path or as text."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    custom_id: str = Field(min_length=1, max_length=256)
    document: str | None = Field(default=None, description="path, relative to the manifest's folder")
    text: str | None = Field(default=None, description="the document's text inline, instead of a path")
    instruction: str | None = Field(default=None, max_length=20_000, description="default: the batch's")
    intent: Intent | None = None
    params: JobParams = Field(default_factory=JobParams)

    @model_validator(mode="after")
    def _one_document(self) -> ManifestLine:
        if (self.document is None) == (self.text is None):
            raise ValueError("give exactly one of 'document' (a path) and 'text'")
        return self


class BatchItem(BaseModel):
    """What the batch keeps per item: enough to report it without reading its job."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str
    job_id: str
    document_id: str
    path: str | None = None
    identity: str = Field(description="sha256 of custom_id, content, prompt version, model and params")


BatchState = Literal["running", "cancelled"]


class BatchInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: Identifier
    tenant: Identifier = "default"
    source: str = Field(description="the folders or manifest it was made from")
    instruction: str = DEFAULT_INSTRUCTION
    intent: Intent | None = Intent.summarize
    state: BatchState = "running"
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    cancelled_at: datetime | None = None


class BatchStatus(BaseModel):
    """``conveyor batch status``: counts by state and failure class, throughput, usage so far."""

    model_config = ConfigDict(extra="forbid")

    batch: BatchInfo
    items: int
    succeeded: int
    failed: int
    pending: int
    failures: dict[str, int] = Field(default_factory=dict, description="open dead letters by failure class")
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = Field(default=0.0, description="USD of the jobs whose cost is known")
    unpriced_jobs: int = Field(
        default=0, description="jobs whose cost is unknown (a model with no known price): not in cost_usd")
    elapsed_s: float = 0.0

    @property
    def cost_label(self) -> str:
        """``$0.0123``, or ``$0.0123 (+2 unpriced)`` when some jobs' cost is unknown (never counted as 0)."""
        text = f"${self.cost_usd:.4f}"
        return f"{text} (+{self.unpriced_jobs} unpriced)" if self.unpriced_jobs else text

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def finished(self) -> bool:
        return self.pending == 0

    @property
    def label(self) -> str:
        if self.batch.state == "cancelled":
            return "cancelled" if self.finished else "cancelling"
        if not self.finished:
            return "running"
        return "completed" if self.failed == 0 else "completed_with_errors"
