"""Writing and replaying dead letters.

A dead letter keeps the original request, the failed stage and that stage's input, so a
replay re-enters the chain exactly where it stopped, with the same job id and idempotency key.
A replay enqueues first and only then marks the letter replayed and reopens the job: if the
broker refuses the message, nothing has changed and the letter can be replayed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from pipeline.errors import ConveyorError, InvalidInput, ProviderUnavailable
from pipeline.state import LetterFilter, StateStore
from schemas import DeadLetter, JobRequest
from schemas.deadletter import DeadLetterSummary
from schemas.pipeline import INTENT
from workers.chain import send_job

log = logging.getLogger("conveyor.deadletters")

#: a payload that is not a readable message is kept up to this size, then as head + size + sha256.
RAW_KEEP_BYTES = 64 * 1024
#: letters read per page while a bulk replay walks the index.
_BULK_PAGE = 100


def _request_of(stage: str, payload: Any) -> dict[str, Any] | None:
    """The request inside a stage's payload: the payload itself at ``intent``, its ``request`` field later."""
    if not isinstance(payload, dict):
        return None
    if stage == INTENT.name:
        return payload
    request = payload.get("request")
    return request if isinstance(request, dict) else None


def original_request(stage: str, payload: Any) -> dict[str, Any]:
    """The request as received, or ``{"_raw": payload}`` when the payload carries none."""
    request = _request_of(stage, payload)
    return request if request is not None else {"_raw": payload}


def bounded_raw(payload: Any) -> dict[str, Any]:
    """An unreadable payload as evidence of bounded size: whole when small, else its head, size and sha256."""
    data = json.dumps(payload, ensure_ascii=False, default=repr).encode("utf-8")
    if len(data) <= RAW_KEEP_BYTES:
        return {"_raw": payload}
    return {"_raw_head": data[:RAW_KEEP_BYTES].decode("utf-8", errors="ignore"), "_raw_bytes": len(data),
            "_raw_sha256": hashlib.sha256(data).hexdigest()}


def write_dead_letter(
    state: StateStore,
    *,
    stage: str,
    payload: Any,
    error: ConveyorError,
    attempts: int,
    retries_exhausted: bool,
) -> DeadLetter | None:
    """Store the dead letter, mark the job failed and count it, in one write that survives a restart.
    None when nothing was stored: the job already has a record (a late failure of a redelivery)."""
    request = _request_of(stage, payload)
    if request is None:
        request = stage_input = bounded_raw(payload)
    else:
        stage_input = payload
    letter = DeadLetter(
        job_id=str(request.get("job_id") or "unknown"),
        request=request,
        stage=stage,
        stage_input=stage_input,
        failure_class=error.failure_class,
        retries_exhausted=retries_exhausted,
        error_type=type(error).__name__,
        error_message=error.message,
        attempts=attempts,
    )
    if not state.fail(letter):
        log.warning("job %s already has a record: the failure of a redelivered %s stage is not stored",
                    letter.job_id, stage)
        return None
    return letter


class AlreadyReplayed(ValueError):
    """The letter is no longer open: each failure is replayed once (a new failure writes a new letter)."""


def _replay_payload(letter: DeadLetter, fixed_request: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Where the replay re-enters the chain and with what; validated before anything is sent."""
    stage, payload = letter.stage, dict(letter.stage_input)
    if fixed_request is not None:
        request = JobRequest.model_validate({**fixed_request, "job_id": letter.job_id})
        if stage == INTENT.name or "request" not in payload:
            return INTENT.name, request.model_dump(mode="json")
        payload["request"] = request.model_dump(mode="json")
    elif stage == INTENT.name:
        JobRequest.model_validate(payload)  # fail here, clearly, instead of dead-lettering again
    return stage, payload


def replay_dead_letter(
    app: Celery, state: StateStore, dead_letter_id: str, *, fixed_request: dict[str, Any] | None = None
) -> DeadLetter:
    """Send the job back into the chain at its failed stage, then mark the letter replayed.

    Enqueueing comes first: if the broker refuses, ProviderUnavailable says so and the letter
    and the job are left as they were. ``fixed_request`` replaces the original request (for
    input that was itself invalid); it keeps the job id, so the replay is the same job.
    """
    letter = state.get_dead_letter(dead_letter_id)
    if letter is None:
        raise KeyError(f"no dead letter {dead_letter_id!r}")
    if letter.state == "replayed":
        raise AlreadyReplayed(f"dead letter {dead_letter_id} was already replayed at {letter.replayed_at}")
    if state.has_record(letter.job_id):
        raise ValueError(f"job {letter.job_id} already has a record: nothing to replay")
    stage, payload = _replay_payload(letter, fixed_request)
    try:
        send_job(app, payload, start=stage)
    except OperationalError as exc:
        broker = maybe_sanitize_url(str(app.conf.broker_url))
        raise ProviderUnavailable(
            f"could not enqueue the replay of job {letter.job_id}: broker {broker} unreachable "
            f"({type(exc).__name__}); dead letter and job left unchanged"
        ) from exc
    summary = state.reopen(dead_letter_id, stage)
    if summary is None:
        raise AlreadyReplayed(f"dead letter {dead_letter_id} was replayed by someone else meanwhile; this replay "
                              f"enqueued job {letter.job_id} once more (its record is still written once)")
    return letter.model_copy(update={"state": summary.state, "replays": summary.replays,
                                     "replayed_at": summary.replayed_at})


@dataclass
class BulkReplay:
    """What a bulk replay did, or with ``dry_run`` would do, letter by letter."""

    matched: list[DeadLetterSummary] = field(default_factory=list)
    replayed: list[DeadLetterSummary] = field(default_factory=list)
    not_enqueued: list[tuple[DeadLetterSummary, str]] = field(default_factory=list)
    skipped: list[tuple[DeadLetterSummary, str]] = field(default_factory=list)
    #: left alone after the broker (or the store) refused one: each would wait out the same outage.
    not_tried: list[DeadLetterSummary] = field(default_factory=list)


def replay_matching(app: Celery, state: StateStore, where: LetterFilter, *, dry_run: bool = False) -> BulkReplay:
    """Replay every open letter matching ``where``, each as ``replay_dead_letter`` does.

    Only letters written before the call are covered (a job that fails again meanwhile is not
    replayed twice in one run). The first letter that cannot be enqueued stops the replays: the
    rest are only listed (``not_tried``), since publishing retries for a while before it gives up.
    The index is read page by page: a replayed letter leaves the open set, so the next page
    starts after the letters that stayed open.
    """
    now = datetime.now(UTC)
    cutoff = min(where.created_before, now) if where.created_before else now
    where = LetterFilter(state="open", batch_id=where.batch_id, failure_class=where.failure_class,
                         stage=where.stage, created_before=cutoff)
    report = BulkReplay()
    still_open = 0
    while page := state.dead_letter_page(where, limit=_BULK_PAGE, offset=still_open):
        for summary in page:
            report.matched.append(summary)
            if dry_run or report.not_enqueued:
                if report.not_enqueued:
                    report.not_tried.append(summary)
                still_open += 1
                continue
            try:
                replay_dead_letter(app, state, summary.dead_letter_id)
            except AlreadyReplayed as exc:  # replayed by someone else: it left the open set
                report.skipped.append((summary, str(exc)))
            except ProviderUnavailable as exc:
                report.not_enqueued.append((summary, exc.message))
                still_open += 1
            except (KeyError, ValueError, InvalidInput) as exc:  # a record exists, the input is invalid or too big
                report.skipped.append((summary, str(exc)))
                still_open += 1
            else:
                report.replayed.append(summary)
    return report
