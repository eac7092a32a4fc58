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
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import bootsteps

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
            state.mark_sent(job_id, stage)
            state.set_status(JobStatus(job_id=job_id, state="queued", stage=stage, attempts=status.attempts))
            log.warning("job %s stalled at %s since %s: re-enqueued", job_id, stage, status.updated_at)
    return report


class PeriodicReconcile(bootsteps.StartStopStep):
    """Consumer step: every ``reconcile_interval_s`` one worker of the cluster (whichever claims the
    turn in the store) runs :func:`reconcile` for jobs stalled longer than ``reconcile_after_s``, so
    a job the broker lost reaches a terminal state without an operator. In a thread of its own, so
    a long scan never holds up the consumer."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, c: Any) -> None:
        from workers.runtime import components_for

        components = components_for(c.app)
        interval = components.settings.reconcile_interval_s
        if interval <= 0 or components.settings.embedded or self._thread is not None:
            return
        older_than = timedelta(seconds=components.settings.reconcile_after_s)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(c.app, components, interval, older_than),
                                        name="conveyor-reconcile", daemon=True)
        self._thread.start()

    def _run(self, app: Any, components: Any, interval: int, older_than: timedelta) -> None:
        while not self._stop.wait(interval):
            try:
                if not components.state.claim_turn("reconcile", interval):
                    continue
                found = reconcile(app, components.state, older_than=older_than)
            except Exception as exc:  # a store or broker outage: the next turn tries again
                log.warning("periodic reconcile failed: %s: %s", type(exc).__name__, exc)
                continue
            if found.stalled:
                log.warning("periodic reconcile: %d stalled, %d re-enqueued, %d dead-lettered, %d already finished",
                            found.stalled, len(found.requeued), len(found.dead_lettered), len(found.finished))

    def stop(self, c: Any) -> None:
        self._stop.set()
        self._thread = None

    shutdown = stop
