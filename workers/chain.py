"""The five-stage chain, built from task *names*: a producer needs no import of the tasks."""

from __future__ import annotations

from typing import Any

from celery import Celery, chain
from celery.canvas import Signature

from schemas import STAGES
from workers.routing import STAGE_TASKS


def stage_signature(app: Celery, stage: str) -> Signature:
    name, queue = STAGE_TASKS[stage]
    return app.signature(name, queue=queue)


def build_chain(app: Celery, payload: dict[str, Any], start: str = "intent") -> Any:
    """The chain from ``start`` to ``record``; ``payload`` is the JSON input of ``start``."""
    if start not in STAGES:
        raise ValueError(f"unknown stage {start!r}; stages are {', '.join(STAGES)}")
    stages = STAGES[STAGES.index(start) :]
    first = stage_signature(app, stages[0]).clone(args=(payload,))
    return chain(first, *(stage_signature(app, s) for s in stages[1:]))


def send_job(app: Celery, payload: dict[str, Any], start: str = "intent", countdown: float | None = None) -> None:
    build_chain(app, payload, start).apply_async(countdown=countdown)
