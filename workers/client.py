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
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from pydantic import ValidationError

from pipeline.errors import InvalidInput, ProviderUnavailable, validation_problems
from pipeline.state import StateStore
from schemas import DeadLetter, JobRecord, JobRequest, JobStatus
from schemas.pipeline import INTENT
from workers.chain import send_job


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
    def __init__(self, app: Celery | None = None, state: StateStore | None = None, *, track: bool = False) -> None:
        if app is None:
            from workers.app import app as default_app

            app = default_app
        self.app = app
        self._state = state
        #: with ``track``, requests submitted through this client, so that an embedded runtime
        #: can dead-letter the ones still in flight when it stops (nothing is silently lost).
        self.submitted: dict[str, dict[str, Any]] | None = {} if track else None

    @property
    def state(self) -> StateStore:
        if self._state is None:
            from workers.runtime import components_for

            self._state = components_for(self.app).state
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
