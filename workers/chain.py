"""The five-stage chain, built from task *names* in the stage table: a producer needs no import of the tasks."""

from __future__ import annotations

from typing import Any

from celery import Celery, chain
from celery.canvas import Signature
from kombu.utils.json import dumps

from pipeline.errors import InvalidInput
from schemas import StageSpec
from schemas.pipeline import INTENT, stages_from

#: The largest stage input a producer may publish, in JSON bytes. Real messages are tens of KB
#: (bench-messages.json: 28 KB at most for a 2,500-word contract; a request's 20,000 characters
#: are at most ~240 KB of escaped JSON); large documents go to the store and travel by id.
MAX_PAYLOAD_BYTES = 1024 * 1024
#: The largest body a worker accepts: the payload plus room for the chain's signatures.
MAX_MESSAGE_BYTES = MAX_PAYLOAD_BYTES + 64 * 1024


def stage_signature(app: Celery, spec: StageSpec) -> Signature:
    return app.signature(spec.task, queue=spec.queue)


def build_chain(app: Celery, payload: dict[str, Any], start: str = INTENT.name) -> Any:
    """The chain from ``start`` to ``record``; ``payload`` is the JSON input of ``start``."""
    first, *rest = stages_from(start)
    return chain(stage_signature(app, first).clone(args=(payload,)), *(stage_signature(app, s) for s in rest))


def send_job(app: Celery, payload: dict[str, Any], start: str = INTENT.name, countdown: float | None = None) -> None:
    """Publish the chain; InvalidInput for a payload over MAX_PAYLOAD_BYTES (a worker would dead-letter it)."""
    size = len(dumps(payload).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidInput(
            f"the {start} input is {size} bytes of JSON, over the {MAX_PAYLOAD_BYTES}-byte message limit: "
            "ingest large documents and pass their document_id"
        )
    build_chain(app, payload, start).apply_async(countdown=countdown)
