"""The five-stage chain, built from task *names* in the stage table: a producer needs no import of the tasks."""

from __future__ import annotations

from typing import Any

from celery import Celery, chain
from celery.canvas import Signature

from schemas import StageSpec
from schemas.pipeline import INTENT, stages_from


def stage_signature(app: Celery, spec: StageSpec) -> Signature:
    return app.signature(spec.task, queue=spec.queue)


def build_chain(app: Celery, payload: dict[str, Any], start: str = INTENT.name) -> Any:
    """The chain from ``start`` to ``record``; ``payload`` is the JSON input of ``start``."""
    first, *rest = stages_from(start)
    return chain(stage_signature(app, first).clone(args=(payload,)), *(stage_signature(app, s) for s in rest))


def send_job(app: Celery, payload: dict[str, Any], start: str = INTENT.name, countdown: float | None = None) -> None:
    build_chain(app, payload, start).apply_async(countdown=countdown)
