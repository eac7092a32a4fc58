"""The concerns around every stage run, one small class each (dramatiq's middleware shape).

A stage run is a ``Delivery``; a middleware is ``(delivery, call_next) -> output model``
and owns one concern. ``default_middleware(settings)`` lists them outermost first:

    LogContext       job_id, stage, batch_id and tenant on every log line the run emits; the ids on
                     the run's trace span when tracing is on (workers/tracing.py)
    Metrics          Prometheus: the run's duration, queue wait and outcome; retries, dead letters,
                     guard verdicts by check (``workers/metrics.py``)
    DeadLetter       a ConveyorError that comes out ends the job: dead letter, then re-raise
    RequeueOnSignal  ``Requeue``: back on the stage's queue with its countdown, retries untouched
    StageRetry       a RetryableError with retries left: Celery retry, capped jittered backoff
    ValidatePayload  JSON -> the stage's input model, or InvalidInput
    SkipFinished     a job that already has a record, or a stage the job has moved past, is
                     acknowledged and not run again
    StopCancelled    a job of a cancelled batch that has not started (ingest, intent) ends as a
                     ``cancelled`` dead letter; one that is past them finishes
    TrackStatus      the job's status says running, at this stage and attempt; the output is
                     checkpointed as the next stage's input, so ``conveyor reconcile`` can
                     re-enqueue a stalled job exactly where it stopped
    CountAttempts    upstream calls, tokens and cost of failed attempts reach the record too
    Timing           the stage's wall time on the message (``timings_ms``) and in the log
    TranslateErrors  soft time limit -> StageTimeout; anything untranslated -> InternalError

The order is the contract: a RetryableError that comes out of StageRetry was out of
retries, so DeadLetter marks it ``retries_exhausted``; a ``Requeue`` is handled outside
StageRetry, so it can never spend the retry budget; Metrics sits outside all of them, so it
sees what each run came to. Adding a concern is adding one class to the list.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from celery import Task
from celery.exceptions import Ignore, Retry, SoftTimeLimitExceeded
from pydantic import BaseModel, ValidationError

from pipeline.backoff import backoff_delay
from pipeline.errors import (
    Cancelled,
    ConveyorError,
    InternalError,
    InvalidInput,
    ProviderUnavailable,
    Requeue,
    RetryableError,
    StageTimeout,
    validation_problems,
)
from pipeline.generation.llm.pricing import merge_models
from pipeline.settings import Settings
from pipeline.wiring import Components
from schemas import Completion, GenerationResult, GuardResult, JobRequest, JobStatus, StageMessage, StageSpec, Usage
from schemas.pipeline import STAGES, next_stage
from workers import metrics, tracing
from workers.chain import send_job
from workers.deadletters import original_request, write_dead_letter
from workers.logcontext import log_context

log = logging.getLogger("conveyor.tasks")


@dataclass
class Delivery:
    """One run of one stage on one message, as the middleware sees it."""

    spec: StageSpec
    payload: Any
    task: Task
    components: Components
    #: the payload as the stage's input model, once ValidatePayload has run.
    message: BaseModel | None = None

    @property
    def attempt(self) -> int:
        return int(self.task.request.retries or 0) + 1

    @property
    def request(self) -> JobRequest:
        msg = self.message
        if isinstance(msg, JobRequest):
            return msg
        request = getattr(msg, "request", None)
        if not isinstance(request, JobRequest):
            raise InternalError(f"{self.spec.name}: the request is read before the payload was validated")
        return request


Handler = Callable[[Delivery], BaseModel]


class Middleware(Protocol):
    def __call__(self, delivery: Delivery, call_next: Handler) -> BaseModel: ...


def run_stage(delivery: Delivery) -> BaseModel:
    """The innermost handler: the stage callable on the validated message."""
    output: BaseModel = delivery.components.stage(delivery.spec)(delivery.message)
    return output


def compose(middleware: Sequence[Middleware], inner: Handler = run_stage) -> Handler:
    """``middleware[0]`` outermost, ``inner`` at the centre."""
    handler = inner
    for layer in reversed(middleware):
        handler = functools.partial(layer, call_next=handler)
    return handler


class LogContext:
    def __call__(self, delivery: Delivery, call_next: Handler) -> BaseModel:
        raw = original_request(delivery.spec.name, delivery.payload)
        job_id, batch_id, tenant = raw.get("job_id"), raw.get("batch_id"), raw.get("tenant")
        with log_context(job_id=str(job_id or "unknown"), stage=delivery.spec.name,
                         batch_id=str(batch_id) if batch_id else None, tenant=str(tenant) if tenant else None):
            tracing.annotate(job_id=str(job_id or "unknown"), stage=delivery.spec.name,
                             batch_id=str(batch_id) if batch_id else None)
            return call_next(delivery)


class Metrics:
    """What each run came to, as Prometheus sees it. The outcome is read from what comes out of the
    layers inside: an output (succeeded), Celery's ``Retry`` (retried), ``Ignore`` caused by a
    ``Requeue`` (requeued) or not (skipped: a finished job or stage), a ConveyorError (dead_lettered:
    DeadLetter wrote its letter), anything else (error)."""

    def __call__(self, delivery: Delivery, call_next: Handler) -> BaseModel:
        stage, outcome = delivery.spec.name, "error"
        began, started = time.time(), time.perf_counter()  # wall clock: compared with the publish time
        try:
            output = call_next(delivery)
            outcome = "succeeded"
            if isinstance(output, GuardResult):
                metrics.guard_checks((c.name, c.verdict) for c in output.guard.checks)
            return output
        except Retry:
            outcome = "retried"
            raise
        except Ignore as exc:
            outcome = "requeued" if isinstance(exc.__cause__, Requeue) else "skipped"
            raise
        except ConveyorError as exc:
            outcome = "dead_lettered"
            metrics.dead_letter(stage, exc.failure_class)
            metrics.guard_checks(_checks_of(exc.details.get("guard")))
            raise
        finally:
            metrics.stage_run(stage, outcome, time.perf_counter() - started,
                              metrics.queue_wait_s(delivery.task.request, began))


def _checks_of(report: object) -> list[tuple[str, str]]:
    """(check, verdict) pairs of a blocked guard report kept in an error's details."""
    checks = report.get("checks") if isinstance(report, dict) else None
    return [(str(c["name"]), str(c["verdict"])) for c in checks or []
            if isinstance(c, dict) and "name" in c and "verdict" in c]


class DeadLetter:
    def __call__(self, delivery: Delivery, call_next: Handler) -> BaseModel:
        try:
            return call_next(delivery)
        except ConveyorError as exc:
            letter = write_dead_letter(
                delivery.components.state,
                stage=delivery.spec.name,
                payload=delivery.payload,
                error=exc,
                attempts=delivery.attempt,
                retries_exhausted=exc.retryable,
            )
            if letter is not None:  # None: the job has a record already, nothing was stored (logged there)
                log.error("dead-lettered as %s%s (%s)", exc.failure_class,
                          " after exhausting retries" if exc.retryable else "", letter.dead_letter_id)
            raise  # stops the chain; Flower shows the failure


class RequeueOnSignal:
    def __call__(self, delivery: Delivery, call_next: Handler) -> BaseModel:
        try:
            return call_next(delivery)
        except Requeue as signal:
            try:
                send_job(delivery.task.app, delivery.payload, start=delivery.spec.name, countdown=signal.delay_s)
            except Exception as exc:  # the broker refused the message: keep the job as a dead letter
                raise ProviderUnavailable(f"could not re-queue the job: {type(exc).__name__}: {exc}") from exc
            log.info("re-queued in %.2fs: %s", signal.delay_s, signal.reason)
            raise Ignore() from signal


class StageRetry:
    def __init__(self, max_retries: int, backoff_base_s: float, backoff_max_s: float) -> None:
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s

    def __call__(self, delivery: Delivery, call_next: Handler) -> BaseModel:
        try:
            return call_next(delivery)
        except RetryableError as exc:
            retries = delivery.attempt - 1
            if retries >= self.max_retries:
                raise
            countdown = backoff_delay(
                retries, base_s=self.backoff_base_s, cap_s=self.backoff_max_s, retry_after_s=exc.retry_after
            )
            log.warning("retry %d in %.2fs: %s: %s", delivery.attempt, countdown, exc.failure_class, exc.message)
            raise delivery.task.retry(exc=exc, countdown=countdown, max_retries=self.max_retries) from exc


class ValidatePayload:
    def __call__(self, delivery: Delivery, call_next: Handler) -> BaseModel:
        spec = delivery.spec
        try:
            delivery.message = spec.input.model_validate(delivery.payload)
        except ValidationError as exc:
            problems = "; ".join(validation_problems(exc, "payload")[:8])
            raise InvalidInput(f"{spec.name} input does not match its schema: {problems}") from exc
        return call_next(delivery)


class SkipFinished:
    """A redelivered or replayed message of a finished job, or of a stage the job has already moved
    past (the checkpoint names a later stage): ack it, run nothing, bill nothing.

    A later checkpoint is written before the next stage's message is published, so it alone does
    not prove that message exists: a worker killed between the two leaves a checkpoint and no
    message. The store's ``sent`` mark (written after the publish, ``StageTask.on_success``)
    tells the two apart; without it the next stage is published from the checkpoint here."""

    def __call__(self, delivery: Delivery, call_next: Handler) -> BaseModel:
        state, job_id = delivery.components.state, delivery.request.job_id
        if state.has_record(job_id):
            log.info("job already has a record: skipped")
            raise Ignore()
        found = state.get_checkpoint(job_id)
        if found is not None and found[0] in STAGES and STAGES.index(found[0]) > STAGES.index(delivery.spec.name):
            stage, payload = found
            if state.was_sent(job_id, stage):
                log.info("stage already done (the job is at %s): skipped", stage)
            else:
                send_job(delivery.task.app, payload, start=stage)
                state.mark_sent(job_id, stage)
                log.warning("stage already done but its output never left: %s published from the checkpoint", stage)
            raise Ignore()
        return call_next(delivery)


class StopCancelled:
    """Cancel a batch: its items not started yet do not run. Each ends as a ``cancelled`` dead letter,
    so every job still ends in exactly one record or letter, and ``batch retry --class cancelled`` (or
    submitting the batch again) resumes them. The batch's state is read at most once a second."""

    FIRST_STAGES = frozenset({"ingest", "intent"})

    def __init__(self, ttl_s: float = 1.0) -> None:
        self.ttl_s = ttl_s
        self._seen: dict[str, tuple[float, bool]] = {}  # batch id -> (when read, cancelled)

    def cancelled(self, delivery: Delivery, batch_id: str) -> bool:
        """Only "still running" is remembered (a cancel takes effect within ttl_s): a batch resumed after
        a cancel must not have its items cancelled again from a stale memory."""
        now = time.monotonic()
        seen = self._seen.get(batch_id)
        if seen is not None and now - seen[0] <= self.ttl_s:
            return False
        info = delivery.components.state.get_batch(batch_id)
        if info is not None and info.state == "cancelled":
            self._seen.pop(batch_id, None)
            return True
        self._seen[batch_id] = (now, False)
        return False

    def __call__(self, delivery: Delivery, call_next: Handler) -> BaseModel:
        batch_id = delivery.request.batch_id
        if delivery.spec.name in self.FIRST_STAGES and batch_id and self.cancelled(delivery, batch_id):
            raise Cancelled(f"batch {batch_id} was cancelled before this item started")
        return call_next(delivery)


class TrackStatus:
    def __call__(self, delivery: Delivery, call_next: Handler) -> BaseModel:
        state, job_id = delivery.components.state, delivery.request.job_id
        state.set_status(JobStatus(job_id=job_id, state="running", stage=delivery.spec.name,
                                   attempts=delivery.attempt))
        output = call_next(delivery)
        following = next_stage(delivery.spec)
        if following is not None:
            state.checkpoint(job_id, following.name, output.model_dump(mode="json"))
        return output


#: cost is kept in nano-dollars so the store's integer counters add it exactly.
_NANO = 1_000_000_000
#: a usage counter ``unpriced:MODEL`` marks a failed attempt that billed a model with no known price.
_UNPRICED = "unpriced:"


class CountAttempts:
    """Every upstream call a job made is on its record, not only the last attempt's.

    A failed or re-queued generate attempt (a timeout after two billed retries, a fallback chain
    that gave up, a rate-limit re-queue before the repair call) carries its bill in the error's or
    the signal's details; it is added to the job's usage in the store,
    and the attempt that succeeds adds what earlier attempts left to its completion.
    """

    def __call__(self, delivery: Delivery, call_next: Handler) -> BaseModel:
        job_id = delivery.request.job_id
        try:
            output = call_next(delivery)
        except (ConveyorError, Requeue) as exc:  # a re-queue after a billed call keeps that bill too
            bill = _bill(exc.details)
            if bill:
                delivery.components.state.add_usage(job_id, bill)
            raise
        completion = getattr(output, "completion", None)
        if isinstance(output, GenerationResult) and isinstance(completion, Completion):
            earlier = delivery.components.state.take_usage(job_id)
            if earlier:
                earlier_unpriced = [k.removeprefix(_UNPRICED) for k in earlier if k.startswith(_UNPRICED)]
                earlier_usd = None if earlier_unpriced else earlier.get("cost_nusd", 0) / _NANO
                cost = completion.cost_usd
                output.completion = completion.model_copy(update={
                    "llm_calls": completion.llm_calls + earlier.get("llm_calls", 0),
                    "usage": Usage(
                        prompt_tokens=completion.usage.prompt_tokens + earlier.get("prompt_tokens", 0),
                        completion_tokens=completion.usage.completion_tokens + earlier.get("completion_tokens", 0),
                    ),
                    "cost_usd": None if cost is None or earlier_usd is None else round(cost + earlier_usd, 8),
                    "unpriced_models": merge_models(completion.unpriced_models, earlier_unpriced),
                })
        return output


def _bill(details: dict[str, object]) -> dict[str, int]:
    """The usage an error's details report (the LLM provider fills calls, tokens and cost)."""
    def number(key: str) -> float:
        value = details.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0

    bill = {
        "llm_calls": int(number("calls")),
        "prompt_tokens": int(number("prompt_tokens")),
        "completion_tokens": int(number("completion_tokens")),
        "cost_nusd": round(number("cost_usd") * _NANO),
    }
    unpriced = details.get("unpriced_models")
    if isinstance(unpriced, list | tuple):
        bill.update({f"{_UNPRICED}{model}": 1 for model in unpriced if isinstance(model, str)})
    return {k: v for k, v in bill.items() if v}


class Timing:
    def __call__(self, delivery: Delivery, call_next: Handler) -> BaseModel:
        started = time.perf_counter()
        output = call_next(delivery)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        if isinstance(output, StageMessage):
            output.timings_ms[delivery.spec.name] = elapsed_ms
        log.info("done in %.1f ms", elapsed_ms)
        return output


class TranslateErrors:
    def __call__(self, delivery: Delivery, call_next: Handler) -> BaseModel:
        name = delivery.spec.name
        try:
            return call_next(delivery)
        except SoftTimeLimitExceeded as exc:
            raise StageTimeout(f"{name} exceeded its soft time limit") from exc
        except (ConveyorError, Requeue):
            raise
        except Exception as exc:  # a bug or an untranslated library error: never retried blindly
            raise InternalError(f"{name} failed unexpectedly: {type(exc).__name__}: {exc}") from exc


def default_middleware(settings: Settings) -> list[Middleware]:
    return [
        LogContext(),
        Metrics(),
        DeadLetter(),
        RequeueOnSignal(),
        StageRetry(settings.stage_max_retries, settings.retry_backoff_base_s, settings.retry_backoff_max_s),
        ValidatePayload(),
        SkipFinished(),
        StopCancelled(),
        TrackStatus(),
        CountAttempts(),
        Timing(),
        TranslateErrors(),
    ]
