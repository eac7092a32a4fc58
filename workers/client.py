"""The client other services use: ``submit``, ``status``, ``result``.

It validates the request before anything is sent (a bad request is the caller's error,
raised at once), claims the idempotency key (a resubmission returns the first job's id),
and enqueues the chain by task name. Results are read from Conveyor's state store, never
with ``AsyncResult.get()``, so the same client works inside the embedded worker's process.

    from workers.client import ConveyorClient
    from schemas import JobRequest

    client = ConveyorClient()            # reads CONVEYOR_* (CONVEYOR_BROKER_URL=redis://...)
    job_id = client.submit(JobRequest(text="Summarize this contract.", document_id="msa-acme"))
    record = client.result(job_id, timeout=120)
    print(record.output["summary"])

    report = client.submit_batch(["contracts/"])         # a batch: resumable, results per custom_id
    client.wait_batch(report.batch_id)
    for item in client.iter_results(report.batch_id): ...
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery
from pydantic import ValidationError

from pipeline.errors import InvalidInput, ProviderUnavailable, validation_problems
from pipeline.state import StateStore
from schemas import DeadLetter, Intent, JobParams, JobRecord, JobRequest, JobStatus
from schemas.batch import DEFAULT_INSTRUCTION, BatchInfo, BatchStatus
from schemas.pipeline import INTENT
from workers.chain import send_job

if TYPE_CHECKING:
    from workers.batch import SubmitReport
    from workers.deadletters import BulkReplay


class JobFailed(RuntimeError):
    """The job ended in the dead-letter store; ``dead_letter`` says where and why."""

    def __init__(self, status: JobStatus, dead_letter: DeadLetter | None) -> None:
        super().__init__(f"job {status.job_id} failed at {status.stage}: {status.error}")
        self.status = status
        self.dead_letter = dead_letter


def parse_request(request: JobRequest | dict[str, Any] | str) -> JobRequest:
    """Validate a request from a model, a dict or JSON text; InvalidInput lists every problem."""
    if isinstance(request, JobRequest):
        return request
    try:
        if isinstance(request, str):
            return JobRequest.model_validate_json(request)
        return JobRequest.model_validate(request)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc, "request"))
        raise InvalidInput(f"invalid job request: {problems}") from exc


class ConveyorClient:
    #: ``wait_batch`` reads every item's status at least this often, whatever the counters say.
    full_check_s = 30.0

    def __init__(self, app: Celery | None = None, state: StateStore | None = None, *, track: bool = False) -> None:
        if app is None:
            from workers.app import producer_app

            app = producer_app
        self.app = app
        self._state = state
        #: with ``track``, requests submitted through this client, so that an embedded runtime
        #: can dead-letter the ones still in flight when it stops (nothing is silently lost).
        self.submitted: dict[str, dict[str, Any]] | None = {} if track else None

    @property
    def state(self) -> StateStore:
        """The worker components' store when this process runs workers (embedded mode shares it), else
        one of its own: a producer builds no components."""
        if self._state is None:
            from workers.runtime import components_for, settings_for

            if self.app.tasks.get(INTENT.task) is not None:
                self._state = components_for(self.app).state
            else:
                from pipeline.state import open_state_store

                self._state = open_state_store(settings_for(self.app))
        return self._state

    def submit(self, request: JobRequest | dict[str, Any] | str) -> str:
        """Enqueue a job; returns its id (the earlier job's id if the idempotency key was used)."""
        req = parse_request(request)
        key = req.idempotency_key or req.job_id
        earlier = self.state.claim_idempotency_key(req.tenant, key, req.job_id)
        if earlier is not None:
            return earlier
        # status first: a fast worker may overwrite it with "running" before send_job returns
        self.state.set_status(JobStatus(job_id=req.job_id, state="queued", stage=INTENT.name))
        payload = req.model_dump(mode="json")
        self.state.checkpoint(req.job_id, INTENT.name, payload)
        try:
            send_job(self.app, payload)
        except InvalidInput:  # too large to publish: the caller's error, said as it is
            self.state.release_idempotency_key(req.tenant, key)
            raise
        except Exception as exc:  # broker unreachable: nothing was enqueued, so nothing is claimed
            self.state.release_idempotency_key(req.tenant, key)
            from kombu.utils.url import maybe_sanitize_url

            broker = maybe_sanitize_url(str(self.app.conf.broker_url))
            raise ProviderUnavailable(
                f"could not enqueue job {req.job_id}: broker {broker} unreachable ({type(exc).__name__})"
            ) from exc
        if req.batch_id:
            self.state.batch_incr(req.batch_id, "submitted")
        if self.submitted is not None:
            self.submitted[req.job_id] = payload
        return req.job_id

    # --- batches (workers/batch.py) ------------------------------------------------------------
    def submit_batch(self, paths: list[str | Path] | None = None, *, manifest: str | Path | None = None,
                     batch_id: str | None = None, tenant: str = "default", instruction: str = DEFAULT_INSTRUCTION,
                     intent: Intent | None = Intent.summarize, params: JobParams | None = None) -> SubmitReport:
        """Folders/files or a JSONL manifest as one batch; the same source again resumes it."""
        from workers import batch
        from workers.runtime import settings_for

        settings = settings_for(self.app)
        if (manifest is None) == (not paths):
            raise InvalidInput("give folders or files, or a manifest, not both")
        plan_of = functools.partial(batch.plan_manifest if manifest is not None else batch.plan_paths,
                                    instruction=instruction, intent=intent, params=params or JobParams(),
                                    max_bytes=settings.batch_max_document_bytes)
        plan = plan_of(Path(manifest)) if manifest is not None else plan_of([Path(p) for p in paths or []])
        report = batch.submit_plan(self.app, self.state, settings, plan, batch_id=batch_id, tenant=tenant,
                                   instruction=instruction, intent=intent)
        if self.submitted is not None:  # embedded: what is in flight at shutdown is dead-lettered
            items = self.state.batch_items(report.batch_id)
            for custom_id in (*report.sent, *report.resent):
                self.submitted[items[custom_id].job_id] = {}
        return report

    def batch_status(self, batch_id: str) -> BatchStatus:
        from workers.batch import batch_status

        return batch_status(self.state, batch_id)

    def list_batches(self) -> list[BatchInfo]:
        return self.state.list_batches()

    def iter_results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """One dict per item (``custom_id``, ``status``, and its ``record`` or ``error``)."""
        from workers.batch import iter_results

        return iter_results(self.state, batch_id)

    def retry_batch(self, batch_id: str, *, failure_class: str | None = None, stage: str | None = None,
                    dry_run: bool = False) -> BulkReplay:
        from workers.batch import retry_failed

        return retry_failed(self.app, self.state, batch_id, failure_class=failure_class, stage=stage,
                            dry_run=dry_run)

    def cancel_batch(self, batch_id: str) -> BatchInfo:
        from workers.batch import cancel

        return cancel(self.state, batch_id)

    def wait_batch(self, batch_id: str, timeout: float | None = None, poll_s: float = 0.5) -> BatchStatus:
        """Until every item has a record or a dead letter; TimeoutError (the batch goes on) if slower.

        Each poll reads the batch's counters (two reads, whatever its size); every item's status is read
        only when they say the batch may be finished, and at least every ``full_check_s`` seconds."""
        from workers.batch import may_be_finished

        deadline = None if timeout is None else time.monotonic() + timeout
        status = self.batch_status(batch_id)
        checked = time.monotonic()
        while not status.finished:
            if deadline is not None and time.monotonic() >= deadline:
                status = self.batch_status(batch_id)  # the counts in the message are current
                if status.finished:
                    break
                raise TimeoutError(f"batch {batch_id}: {status.pending} of {status.items} items pending after "
                                   f"{timeout}s")
            time.sleep(poll_s)
            if may_be_finished(self.state, batch_id) or time.monotonic() - checked >= self.full_check_s:
                status = self.batch_status(batch_id)
                checked = time.monotonic()
        return status

    def unfinished(self) -> list[str]:
        """Tracked jobs that have neither a record nor a dead letter yet."""
        pending = []
        for job_id in self.submitted or {}:
            status = self.state.get_status(job_id)
            if status is None or status.state not in ("succeeded", "failed"):
                pending.append(job_id)
        return pending

    def status(self, job_id: str) -> JobStatus:
        status = self.state.get_status(job_id)
        if status is None:
            raise KeyError(f"unknown job {job_id!r}")
        return status

    def result(self, job_id: str, timeout: float | None = 60.0, poll_s: float = 0.05) -> JobRecord:
        """Wait for the record; raise JobFailed if the job was dead-lettered, TimeoutError if slow."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.state.get_record(job_id)
            if record is not None:
                return record
            status = self.state.get_status(job_id)
            if status is not None and status.state == "failed":
                letter = self.state.get_dead_letter(status.dead_letter_id) if status.dead_letter_id else None
                raise JobFailed(status, letter)
            if deadline is not None and time.monotonic() >= deadline:
                state = status.state if status else "unknown"
                raise TimeoutError(f"job {job_id} not finished after {timeout}s (state: {state})")
            time.sleep(poll_s)


_default: ConveyorClient | None = None


def _client() -> ConveyorClient:
    global _default
    if _default is None:
        _default = ConveyorClient()
    return _default


def submit(request: JobRequest | dict[str, Any] | str) -> str:
    return _client().submit(request)


def status(job_id: str) -> JobStatus:
    return _client().status(job_id)


def result(job_id: str, timeout: float | None = 60.0) -> JobRecord:
    return _client().result(job_id, timeout)
