"""Bring every stalled job to a terminal state: re-enqueue it where it stopped, or dead-letter it.

A job whose status has not moved for longer than any stage may take (time limit, broker
lease, retry backoff and re-queue countdowns included) lost its message somewhere: a broker
that forgot it, a publish that failed after its status was written. Its last checkpoint (the
input of the stage it was entering, written by the worker, or the request at submit) is
enqueued again at that stage; without a checkpoint, it becomes an ``interrupted`` dead letter
with what is known. A stage of a job that finished meanwhile is skipped by the worker
(``SkipFinished``), so a reconcile that races a slow job costs nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.errors import Interrupted
from pipeline.state import StateStore
from schemas import JobStatus
from schemas.pipeline import INTENT
from workers.chain import send_job
from workers.deadletters import write_dead_letter

log = logging.getLogger("conveyor.reconcile")


@dataclass
class ReconcileReport:
    stalled: int = 0
    requeued: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)


def reconcile(app: Any, state: StateStore, *, older_than: timedelta, dry_run: bool = False) -> ReconcileReport:
    report = ReconcileReport()
    for status in state.stalled(datetime.now(UTC) - older_than):
        report.stalled += 1
        job_id = status.job_id
        if state.has_record(job_id):  # finished; only its status write was lost
            report.finished.append(job_id)
            continue
        found = state.get_checkpoint(job_id)
        if found is None:
            report.dead_lettered.append(job_id)
            if not dry_run:
                stage = status.stage or INTENT.name
                known = {"job_id": job_id} if stage == INTENT.name else {"request": {"job_id": job_id}}
                write_dead_letter(state, stage=stage, payload=known,
                                  error=Interrupted("stalled with no checkpoint to resume from; reconcile gave up"),
                                  attempts=max(status.attempts, 1), retries_exhausted=False)
            continue
        stage, payload = found
        report.requeued.append(job_id)
        if not dry_run:
            send_job(app, payload, start=stage)  # first: a failed publish leaves the job as it was
            state.set_status(JobStatus(job_id=job_id, state="queued", stage=stage, attempts=status.attempts))
            log.warning("job %s stalled at %s since %s: re-enqueued", job_id, stage, status.updated_at)
    return report
