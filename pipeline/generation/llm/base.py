"""Value types and interfaces shared by every LLM provider.

Pydantic models (not dataclasses) because responses are cached and recorded as JSON,
and a frozen model gives that round trip for free. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import ProviderRejected

Role = Literal["system", "user", "assistant", "tool"]


class ChatMessage(BaseModel):
    """One chat turn, in the OpenAI wire shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str


class LLMRequest(BaseModel):
    """What a stage asks of a model; ``model=None`` means the provider's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    messages: Sequence[ChatMessage] = Field(min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    json_mode: bool = False
    timeout_s: float | None = Field(default=None, gt=0)
    #: part of the cache key, so a new prompt template never serves an old answer.
    prompt_version: str = ""
    #: per-request switch for the response cache (e.g. a re-run that must hit the model).
    use_cache: bool = True
    #: who the call is billed to, for usage accounting only (not sent, not in the cache key).
    tenant: str = ""


class LLMResponse(BaseModel):
    """A completion plus the accounting the record stage needs.

    ``calls`` counts upstream HTTP calls made for this answer, retries and fallbacks
    included (0 on a cache hit). Token counts and ``cost_usd`` add up every billed call,
    not only the one that answered. ``cost_usd`` is None when any billed call was for a model
    with no known price (named in ``unpriced_models``): a partial sum would look like the bill.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    model: str
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    calls: int = 1
    cost_usd: float | None = 0.0
    cached: bool = False
    provider: str = ""
    #: models billed for this answer that have no known price (then ``cost_usd`` is None).
    unpriced_models: tuple[str, ...] = ()
    #: True when the upstream sent no usage block and tokens were counted locally.
    usage_estimated: bool = False
    #: every model asked, in order, the answering one last (fallbacks make this > 1).
    models_tried: tuple[str, ...] = ()

    @property
    def cost_known(self) -> bool:
        return self.cost_usd is not None


class ContextOverflow(ProviderRejected):
    """The prompt does not fit the model's context window; a bigger model may take it.

    Also flagged as ``details["context_overflow"] = True`` for code that only sees the
    base class (e.g. after a dead-letter round trip).
    """

    def __init__(self, message: str, *, details: dict[str, object] | None = None) -> None:
        super().__init__(message, details={**(details or {}), "context_overflow": True})


def is_context_overflow(exc: BaseException) -> bool:
    """True for a context-window rejection, whichever way it was flagged."""
    return isinstance(exc, ContextOverflow) or (
        isinstance(exc, ProviderRejected) and bool(exc.details.get("context_overflow"))
    )


@runtime_checkable
class LLMProvider(Protocol):
    """Anything that turns an LLMRequest into an LLMResponse or a ConveyorError."""

    def complete(self, request: LLMRequest) -> LLMResponse: ...

    def close(self) -> None: ...


@runtime_checkable
class RateLimiter(Protocol):
    """Blocks until a call of ``tokens`` fits the budget; returns the seconds waited.

    Raises ``pipeline.errors.Requeue`` when the slot is further away than ``max_wait_s``.
    """

    def acquire(self, tokens: int = 0, *, block: bool = True, max_wait_s: float | None = None) -> float: ...


@runtime_checkable
class CallObserver(Protocol):
    """Told about each upstream call and each rate-limit wait, so the worker can export metrics
    without this layer importing a metrics library. Implementations must be cheap and must not raise.

    ``status`` is ``ok``, the error's failure class (``rate_limited``, ``timeout`` ...) or ``cache_hit``
    (answered from the response cache: no upstream call, nothing billed); tokens and cost are what
    that one call billed. ``cost_usd`` is None when the model has no known price (not 0: unknown).
    """

    def llm_call(self, *, model: str, status: str, tenant: str, prompt_tokens: int, completion_tokens: int,
                 cost_usd: float | None) -> None: ...

    def ratelimit_wait(self, seconds: float) -> None: ...


@runtime_checkable
class ResponseStore(Protocol):
    """A response cache: ``get`` returns None on a miss (or when the store is down)."""

    def get(self, request: LLMRequest, model: str) -> LLMResponse | None: ...

    def put(self, request: LLMRequest, model: str, response: LLMResponse) -> None: ...
