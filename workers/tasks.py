"""Thin Celery tasks, one per stage in the stage table: JSON in, the middleware chain, JSON out.

Everything around a stage (validation, status, timing, retries, re-queue, dead letters,
log context) is a middleware in ``workers/middleware.py``; the stage itself is a plain
callable built by ``pipeline/wiring.py``, testable without Celery.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task

from pipeline.errors import ConveyorError
from schemas import PIPELINE, StageSpec
from schemas.pipeline import next_stage
from workers.deadletters import original_request
from workers.middleware import Delivery, Handler, compose, default_middleware
from workers.runtime import components_for, settings_for

log = logging.getLogger("conveyor.tasks")

_HANDLER_ATTR = "_conveyor_stage_handler"
#: a task that returns its argument: the bare Celery chain a benchmark compares the pipeline with
#: (``scripts/bench_batch.py``); no stage, no middleware, routed to whatever queue the caller names.
NOOP_TASK = "conveyor.noop"


class StageTask(Task):
    """Base class of the stage tasks; ``spec`` says which stage."""

    abstract = True
    spec: StageSpec
    acks_late = True
    reject_on_worker_lost = True

    def on_success(self, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Celery calls this after it published the next stage's message: mark it sent (``SkipFinished``)."""
        following = next_stage(self.spec)
        if following is not None and args:
            job_id = original_request(self.spec.name, args[0]).get("job_id")
            if not job_id:
                return
            try:
                components_for(self.app).state.mark_sent(str(job_id), following.name)
            except ConveyorError as exc:  # the store is away: a redelivery would publish the next stage again
                log.warning("could not mark %s sent for job %s: %s", following.name, job_id, exc)


def handler_for(app: Celery) -> Handler:
    """The app's middleware chain around the stage call, composed once from its settings."""
    handler: Handler | None = getattr(app, _HANDLER_ATTR, None)
    if handler is None:
        handler = compose(default_middleware(settings_for(app)))
        setattr(app, _HANDLER_ATTR, handler)
    return handler


def execute_stage(task: StageTask, payload: Any) -> dict[str, Any]:
    delivery = Delivery(spec=task.spec, payload=payload, task=task, components=components_for(task.app))
    result: dict[str, Any] = handler_for(task.app)(delivery).model_dump(mode="json")
    return result


def noop(payload: Any) -> Any:
    return payload


def register_stage_tasks(celery: Celery) -> None:
    """Register one task per stage on an app, under the stage table's public names (and ``NOOP_TASK``)."""
    if NOOP_TASK not in celery.tasks:
        celery.task(name=NOOP_TASK)(noop)
    for spec in PIPELINE:
        if spec.task in celery.tasks:
            continue
        base = type(f"{spec.name.title()}StageTask", (StageTask,), {"spec": spec})

        def run(self: StageTask, payload: Any) -> dict[str, Any]:
            return execute_stage(self, payload)

        celery.task(name=spec.task, bind=True, base=base)(run)
