"""The one error tree of Conveyor.

Every failure a stage can raise is one of these. Foreign exceptions (httpx, qdrant,
pydantic, onnxruntime…) are translated at the boundary with ``raise X(...) from exc``
so that the Celery side only has to ask one question: retry, or dead-letter? HTTP status
codes and httpx exceptions have one table for every client: pipeline/http_errors.py.

    ConveyorError
    ├── RetryableError                 Celery retries these (capped backoff + jitter)
    │   ├── RateLimited                 upstream 429; carries retry_after (Retry-After)
    │   ├── ProviderUnavailable         5xx, 409, connection refused/reset, store unreachable
    │   ├── StageTimeout                upstream call (or its 408) or stage exceeded its time budget
    │   └── Interrupted                 the embedded worker stopped before the job finished
    └── PermanentError                 straight to the dead-letter store, never retried
        ├── InvalidInput                the request itself is wrong (schema, size, unknown doc)
        ├── ProviderRejected            other 4xx (and a 429 for spent quota), refusal, context overflow
        ├── OutputInvalid               completion does not parse into the intent's schema
        ├── GuardrailBlocked            a guard validator blocked the output or the request
        ├── InternalError               a bug: anything not translated above
        ├── Cancelled                   its batch was cancelled before the job started (replayable)
        ├── DeliveryLimitExceeded       delivered more times than the broker allows (RabbitMQ): a
        │                               message under which workers keep dying, stopped before it runs
        └── MalformedMessage            a broker message no task can run: not JSON, not [args, kwargs, embed],
            │                           no task headers (workers/consumer.py dead-letters it, raw body kept)
            ├── UnknownTask             names a task no worker registers
            ├── DisallowedContent       content type outside accept_content (pickle, yaml…); never decoded
            └── OversizedMessage        body over the message size limit; never decoded

Outside the tree stands ``Requeue(delay_s)``: not a failure but "not yet" (our own shared
rate limiter has no slot within the allowed wait). No retry layer, fallback or error
translation acts on it; the worker puts the job back on its queue with that countdown,
without spending the stage's retry budget (arq's ``Retry(defer=...)``).

``failure_class`` is the stable string stored on a dead letter and used in metrics; a
retryable error that outlives its retry budget keeps its class and is marked
``retries_exhausted`` on the dead letter.
"""

from __future__ import annotations

from pydantic import ValidationError


class ConveyorError(Exception):
    """Base of every error Conveyor raises on purpose."""

    failure_class = "error"
    retryable = False

    def __init__(self, message: str, *, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})


class RetryableError(ConveyorError):
    """Transient: the same call may succeed later."""

    failure_class = "retryable"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        #: seconds the upstream asked us to wait (Retry-After), if it said.
        self.retry_after = retry_after


class RateLimited(RetryableError):
    failure_class = "rate_limited"


class ProviderUnavailable(RetryableError):
    failure_class = "provider_unavailable"


class StageTimeout(RetryableError):
    failure_class = "timeout"


class Interrupted(RetryableError):
    failure_class = "interrupted"


class PermanentError(ConveyorError):
    """Retrying cannot help; the job goes to the dead-letter store."""

    failure_class = "permanent"


class InvalidInput(PermanentError):
    failure_class = "invalid_input"


class ProviderRejected(PermanentError):
    failure_class = "provider_rejected"


class OutputInvalid(PermanentError):
    failure_class = "output_invalid"


class GuardrailBlocked(PermanentError):
    failure_class = "guardrail_blocked"


class InternalError(PermanentError):
    failure_class = "internal_error"


class Cancelled(PermanentError):
    failure_class = "cancelled"


class DeliveryLimitExceeded(PermanentError):
    failure_class = "delivery_limit"


class MalformedMessage(PermanentError):
    failure_class = "malformed_message"


class UnknownTask(MalformedMessage):
    failure_class = "unknown_task"


class DisallowedContent(MalformedMessage):
    failure_class = "content_disallowed"


class OversizedMessage(MalformedMessage):
    failure_class = "oversized_message"


class Requeue(Exception):
    """Put the job back on its stage's queue in ``delay_s`` seconds; a signal, never dead-lettered.

    ``details`` carries what the attempt already made upstream before the signal (a billed first
    answer before its repair, a failed primary before the fallback), as an error's details do, so
    the job's record still counts those calls."""

    def __init__(self, delay_s: float, reason: str, details: dict[str, object] | None = None) -> None:
        super().__init__(f"re-queue in {delay_s:.3f}s: {reason}")
        self.delay_s = max(0.0, float(delay_s))
        self.reason = reason
        self.details: dict[str, object] = dict(details or {})


def validation_problems(exc: ValidationError, root: str) -> list[str]:
    """``field.path: message`` per pydantic error (``root`` names an error on the whole object)."""
    return [f"{'.'.join(map(str, e['loc'])) or root}: {e['msg']}" for e in exc.errors()]
