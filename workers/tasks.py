"""Thin Celery tasks: JSON in, schema model, plain stage function, JSON out.

All five tasks share one wrapper (``execute_stage``) that owns the cross-cutting parts:
input validation, status, timing, the stage-level retry policy and the dead-letter path.
Stage functions stay plain and testable without Celery.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NoReturn

from celery import Celery, Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from pydantic import ValidationError

from pipeline.backoff import backoff_delay
from pipeline.errors import (
    ConveyorError,
    InternalError,
    InvalidInput,
    RateLimited,
    RetryableError,
    StageTimeout,
    validation_problems,
)
from pipeline.stages import STAGE_FUNCTIONS
from schemas import STAGE_MODELS, JobRequest, JobStatus
from workers.chain import send_job
from workers.deadletters import write_dead_letter
from workers.routing import STAGE_TASKS
from workers.runtime import resources_for

log = logging.getLogger("conveyor.tasks")


class StageTask(Task):
    """Base class of the five stage tasks; ``stage`` names which one."""

    abstract = True
    stage: str = ""
    acks_late = True
    reject_on_worker_lost = True


def _validation_message(stage: str, exc: ValidationError) -> str:
    problems = "; ".join(validation_problems(exc, "payload")[:8])
    return f"{stage} input does not match its schema: {problems}"


def execute_stage(task: StageTask, payload: Any) -> dict[str, Any]:
    stage = task.stage
    res = resources_for(task.app)
    attempt = task.request.retries + 1
    in_model, _ = STAGE_MODELS[stage]
    try:
        try:
            message = in_model.model_validate(payload)
        except ValidationError as exc:
            raise InvalidInput(_validation_message(stage, exc)) from exc
        request = message if isinstance(message, JobRequest) else message.request  # type: ignore[attr-defined]
        res.state.set_status(JobStatus(job_id=request.job_id, state="running", stage=stage, attempts=attempt))
        started = time.perf_counter()
        try:
            output = STAGE_FUNCTIONS[stage](message, res)
        except SoftTimeLimitExceeded as exc:
            raise StageTimeout(f"{stage} exceeded its soft time limit") from exc
        except ConveyorError:
            raise
        except Exception as exc:  # a bug or an untranslated library error: never retried blindly
            raise InternalError(f"{stage} failed unexpectedly: {type(exc).__name__}: {exc}") from exc
        if stage != "record":
            output.timings_ms[stage] = round((time.perf_counter() - started) * 1000, 2)
        result: dict[str, Any] = output.model_dump(mode="json")
        return result
    except RateLimited as exc:
        if exc.details.get("backpressure") and exc.retry_after is not None:
            # our own shared limiter says "not yet": that is queueing, not failure. The job goes
            # back on the queue for its slot without spending the stage's retry budget.
            log.info("%s waits %.2fs for a rate-limit slot: re-queued", stage, exc.retry_after)
            send_job(task.app, payload, start=stage, countdown=exc.retry_after)
            raise Ignore() from exc
        _retry_or_dead_letter(task, res, stage, payload, exc, attempt)
    except RetryableError as exc:
        _retry_or_dead_letter(task, res, stage, payload, exc, attempt)
    except ConveyorError as exc:
        _dead_letter(res, stage, payload, exc, attempt, retries_exhausted=False)
        raise  # stops the chain; Flower shows the failure


def _retry_or_dead_letter(
    task: StageTask, res: Any, stage: str, payload: Any, exc: RetryableError, attempt: int
) -> NoReturn:
    """Celery retry with capped, jittered backoff (never sooner than Retry-After), then the DLQ."""
    settings = res.settings
    if task.request.retries < settings.stage_max_retries:
        countdown = backoff_delay(
            task.request.retries,
            base_s=settings.retry_backoff_base_s,
            cap_s=settings.retry_backoff_max_s,
            retry_after_s=exc.retry_after,
        )
        log.warning("%s retry %d in %.2fs: %s", stage, attempt, countdown, exc.failure_class)
        raise task.retry(exc=exc, countdown=countdown, max_retries=settings.stage_max_retries) from exc
    _dead_letter(res, stage, payload, exc, attempt, retries_exhausted=True)
    raise exc


def _dead_letter(
    res: Any, stage: str, payload: Any, exc: ConveyorError, attempt: int, *, retries_exhausted: bool
) -> None:
    letter = write_dead_letter(
        res.state, stage=stage, payload=payload, error=exc, attempts=attempt, retries_exhausted=retries_exhausted
    )
    log.error("%s dead-lettered %s as %s%s (%s)", stage, letter.job_id, exc.failure_class,
              " after exhausting retries" if retries_exhausted else "", letter.dead_letter_id)


def register_stage_tasks(celery: Celery) -> None:
    """Register the five tasks on an app under their public names."""
    for stage, (name, _queue) in STAGE_TASKS.items():
        if name in celery.tasks:
            continue
        base = type(f"{stage.title()}StageTask", (StageTask,), {"stage": stage})

        def run(self: StageTask, payload: Any) -> dict[str, Any]:
            return execute_stage(self, payload)

        celery.task(name=name, bind=True, base=base)(run)

