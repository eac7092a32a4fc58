"""Writing, listing and replaying dead letters.

A dead letter keeps the original request, the failed stage and that stage's input, so a
replay re-enters the chain exactly where it stopped, with the same job id and idempotency key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery import Celery

from pipeline.errors import ConveyorError
from pipeline.state import StateStore
from schemas import DeadLetter, JobRequest, JobStatus
from schemas.pipeline import INTENT
from workers.chain import send_job


def original_request(stage: str, payload: Any) -> dict[str, Any]:
    """The request as received: the payload itself at ``intent``, its ``request`` field later."""
    if not isinstance(payload, dict):
        return {"_raw": payload}
    if stage == INTENT.name:
        return payload
    request = payload.get("request")
    return request if isinstance(request, dict) else {"_raw": payload}


def write_dead_letter(
    state: StateStore,
    *,
    stage: str,
    payload: Any,
    error: ConveyorError,
    attempts: int,
    retries_exhausted: bool,
) -> DeadLetter:
    """Store the dead letter and mark the job failed; both survive a worker restart."""
    request = original_request(stage, payload)
    job_id = str(request.get("job_id") or "unknown")
    letter = DeadLetter(
        job_id=job_id,
        request=request,
        stage=stage,
        stage_input=payload if isinstance(payload, dict) else {"_raw": payload},
        failure_class=error.failure_class,
        retries_exhausted=retries_exhausted,
        error_type=type(error).__name__,
        error_message=error.message,
        attempts=attempts,
    )
    state.put_dead_letter(letter)
    state.set_status(
        JobStatus(
            job_id=job_id,
            state="failed",
            stage=stage,
            attempts=attempts,
            dead_letter_id=letter.dead_letter_id,
            error=f"{error.failure_class}: {error.message}",
        )
    )
    batch_id = request.get("batch_id")
    if isinstance(batch_id, str) and batch_id:
        state.batch_incr(batch_id, "failed")
    return letter


def replay_dead_letter(
    app: Celery, state: StateStore, dead_letter_id: str, *, fixed_request: dict[str, Any] | None = None
) -> DeadLetter:
    """Send the job back into the chain at its failed stage.

    ``fixed_request`` replaces the original request (for input that was itself invalid); it
    must keep the job id, so the replay is the same job, and it is validated before sending.
    """
    letter = state.get_dead_letter(dead_letter_id)
    if letter is None:
        raise KeyError(f"no dead letter {dead_letter_id!r}")
    if letter.state == "replayed":
        raise ValueError(f"dead letter {dead_letter_id} was already replayed at {letter.replayed_at}")
    stage, payload = letter.stage, dict(letter.stage_input)
    if fixed_request is not None:
        request = JobRequest.model_validate({**fixed_request, "job_id": letter.job_id})
        if stage == INTENT.name or "request" not in payload:
            stage, payload = INTENT.name, request.model_dump(mode="json")
        else:
            payload["request"] = request.model_dump(mode="json")
    elif stage == INTENT.name:
        JobRequest.model_validate(payload)  # fail here, clearly, instead of dead-lettering again
    state.set_status(JobStatus(job_id=letter.job_id, state="queued", stage=stage))
    batch_id = letter.request.get("batch_id")
    if isinstance(batch_id, str) and batch_id:
        state.batch_incr(batch_id, "failed", -1)
    updated = letter.model_copy(update={"state": "replayed", "replays": letter.replays + 1,
                                        "replayed_at": datetime.now(UTC)})
    state.put_dead_letter(updated)
    send_job(app, payload, start=stage)
    return updated
