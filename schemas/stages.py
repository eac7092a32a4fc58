"""The typed edges between stages.

Each stage's output model is the next stage's input model. A message carries what the
stages after it need: everything earlier stages decided (the request, the intent, the
retrieval strategy…) and the per-stage timings, but bulky working data only as far as it
is used: the 384-float query embedding stops after ``generate`` (the extractive generator
ranks sentences with it) and chunk texts after ``guard`` (grounding reads them; ``record``
gets their ids). ``schemas/pipeline.py`` declares which stage drops what;
``tests/unit/test_schema_chain.py`` checks the chain against it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from schemas.job import Intent, JobRequest

M = TypeVar("M", bound=BaseModel)


class StageMessage(BaseModel):
    """Common envelope: the original request and how long each stage took (ms)."""

    model_config = ConfigDict(extra="forbid")

    request: JobRequest
    timings_ms: dict[str, float] = Field(default_factory=dict)

    def carry(self, to: type[M], **new: Any) -> M:
        """The next stage's message: the fields ``to`` declares that this one has, plus ``new``."""
        mine = type(self).model_fields
        kept = {name: getattr(self, name) for name in to.model_fields if name in mine and name not in new}
        return to(**kept, **new)


class Classified(StageMessage):
    """What the intent stage decided; every later message carries it."""

    intent: Intent
    intent_confidence: float = Field(ge=0.0, le=1.0)
    intent_method: str = Field(description="hint | document-only | embedding-* | llm")
    request_flags: list[str] = Field(
        default_factory=list, description="guard findings on the request that policy let through (flag mode)"
    )


class IntentResult(Classified):
    """Output of ``intent``, input of ``retrieve``."""

    #: the request embedding, computed once and reused by retrieval and the extractive
    #: generator (None when text is empty); dropped after ``generate``.
    query_embedding: list[float] | None = None


class ContextChunk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunk_id: str
    doc_id: str
    section: str = ""
    text: str
    score: float | None = None


class Retrieved(Classified):
    """What the retrieve stage decided, without the chunk texts; every later message carries it."""

    retrieval_strategy: str = ""
    #: chunks dropped before prompting because a guard flagged them (e.g. injected instructions).
    quarantined_chunks: list[str] = Field(default_factory=list)
    #: how many chunks the job's document has (whole-document strategy; None for top-k): coverage's denominator.
    document_chunks: int | None = None


class RetrievalResult(Retrieved):
    """Output of ``retrieve``, input of ``generate``."""

    chunks: list[ContextChunk] = Field(default_factory=list)
    query_embedding: list[float] | None = None


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0


class ContractSummary(BaseModel):
    """Structured output for ``summarize``: what a reviewer needs on one screen."""

    model_config = ConfigDict(extra="forbid")

    parties: list[str] = Field(default_factory=list, description="full legal names, short names resolved")
    effective_date: str | None = Field(
        default=None, description="the date the agreement takes effect, ISO YYYY-MM-DD (not the signature date)")
    term: str | None = Field(default=None, description="the sentence or cell that states the term")
    term_months: int | Literal["indefinite"] | None = Field(
        default=None, description="the (initial) term in months, or 'indefinite' (until terminated, at will)")
    governing_law: str | None = Field(default=None, description="jurisdiction whose law governs, e.g. 'New York'")
    payment: str | None = Field(default=None, description="the main payment: amount, currency and period")
    liability_cap: str | None = Field(default=None, description="what aggregate liability may not exceed")
    termination_notice: str | None = Field(
        default=None, description="notice to terminate without cause (else to stop a renewal), as written")
    termination_notice_days: int | None = Field(default=None, description="that notice in days (a month = 30)")
    summary: str = Field(min_length=1)
    key_terms: list[str] = Field(default_factory=list)
    risks: list[str] = Field(default_factory=list)
    citations: list[str] = Field(default_factory=list, description="chunk ids the summary rests on")


class Answer(BaseModel):
    """Structured output for every other intent: an answer and the chunks it rests on."""

    model_config = ConfigDict(extra="forbid")

    answer: str = Field(min_length=1)
    citations: list[str] = Field(default_factory=list)


def output_schema(intent: Intent) -> type[BaseModel]:
    """The structured output each intent must produce."""
    return ContractSummary if intent == Intent.summarize else Answer


class Completion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    structured: dict[str, Any] | None = None
    provider: str = Field(description="extractive | openai-compatible | ...")
    model: str
    prompt_version: str
    finish_reason: str = "stop"
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = Field(
        default=0.0, description="USD of every billed call; null when a model billed has no known price")
    unpriced_models: list[str] = Field(
        default_factory=list, description="models billed that have no known price (then cost_usd is null)")
    llm_calls: int = Field(default=0, description="upstream HTTP calls incl. retries and fallbacks")
    cached: bool = False
    repair_reasons: list[str] = Field(
        default_factory=list, description="validation errors the model was re-asked with (one repair at most)"
    )
    chunks_read: list[str] | None = Field(
        default=None, description="ids of the context chunks the generator read (None: every chunk it was given)")


class GenerationResult(Retrieved):
    """Output of ``generate``, input of ``guard`` (which checks the completion against the chunks)."""

    chunks: list[ContextChunk] = Field(default_factory=list)
    completion: Completion


Verdict = Literal["pass", "repaired", "redacted", "blocked"]


class CheckResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    verdict: Verdict
    reasons: list[str] = Field(default_factory=list)
    score: float | None = None


class GuardReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Verdict
    checks: list[CheckResult] = Field(default_factory=list)
    grounding_score: float | None = None

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {r}" for c in self.checks for r in c.reasons]


class GuardResult(Retrieved):
    """Output of ``guard``, input of ``record``: the completion as it may be shown."""

    chunks_used: list[str] = Field(default_factory=list, description="ids of the chunks the completion was given")
    completion: Completion
    guard: GuardReport
    output: dict[str, Any]


class JobRecord(BaseModel):
    """The final, stored result of one job."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    status: Literal["succeeded"] = "succeeded"
    request: JobRequest
    intent: Intent
    intent_confidence: float
    chunks_used: list[str]
    quarantined_chunks: list[str] = Field(
        default_factory=list, description="retrieved chunks withheld from the prompt (injected instructions)")
    coverage: float | None = Field(
        default=None, description="share of the document's chunks that fed a whole-document summary (quarantined "
        "and capped chunks count as not read); null for top-k jobs")
    request_flags: list[str] = Field(
        default_factory=list, description="guard findings on the request that the tenant's policy let through")
    output: dict[str, Any]
    provider: str
    model: str
    prompt_version: str
    usage: Usage
    cost_usd: float | None = Field(
        description="USD of every billed call, failed attempts included; null when a model billed has no known "
        "price (see unpriced_models), never a guess")
    unpriced_models: list[str] = Field(
        default_factory=list, description="models billed for this job that have no known price")
    llm_calls: int
    cached: bool
    guard: GuardReport
    timings_ms: dict[str, float]
    completed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


JobState = Literal["queued", "running", "succeeded", "failed"]


class JobStatus(BaseModel):
    """What ``client.status(job_id)`` returns."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    state: JobState
    stage: str | None = None
    attempts: int = 0
    dead_letter_id: str | None = None
    error: str | None = None
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
