"""Stage 5: the job record, to the result store, the JSONL log and the batch counters."""

from __future__ import annotations

import threading
from pathlib import Path

from pipeline.state import StateStore
from schemas import GuardResult, JobRecord

_LOG_LOCK = threading.Lock()


def build_record(msg: GuardResult) -> JobRecord:
    c = msg.completion
    return JobRecord(
        job_id=msg.request.job_id,
        request=msg.request,
        intent=msg.intent,
        intent_confidence=msg.intent_confidence,
        chunks_used=msg.chunks_used,
        quarantined_chunks=msg.quarantined_chunks,
        coverage=round(len(msg.chunks_used) / msg.document_chunks, 4) if msg.document_chunks else None,
        request_flags=msg.request_flags,
        output=msg.output,
        provider=c.provider,
        model=c.model,
        prompt_version=c.prompt_version,
        usage=c.usage,
        cost_usd=c.cost_usd,
        unpriced_models=c.unpriced_models,
        llm_calls=c.llm_calls,
        cached=c.cached,
        guard=msg.guard,
        timings_ms=msg.timings_ms,
    )


def append_jsonl(path: Path, line: str) -> None:
    """One write per line, under a lock: concurrent threads never interleave records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _LOG_LOCK, path.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")


class RecordStage:
    """Store the record once; a redelivered record stage returns the stored one and counts nothing.

    Record, status and batch counter are one atomic write (``StateStore.complete``), so a batch's
    counters always agree with its records; the JSONL log line follows the first write only.
    """

    def __init__(self, state: StateStore, records_path: Path) -> None:
        self.state = state
        self.records_path = records_path

    def warm_up(self) -> None:
        self.state.ping()

    def __call__(self, msg: GuardResult) -> JobRecord:
        record = build_record(msg)
        if not self.state.complete(record):
            return self.state.get_record(record.job_id) or record
        append_jsonl(self.records_path, record.model_dump_json())
        return record
