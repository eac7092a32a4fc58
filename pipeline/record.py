"""Stage 5: the job record, to the result store, the JSONL log and the batch counters."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from schemas import GuardResult, JobRecord, JobStatus

if TYPE_CHECKING:
    from pipeline.resources import Resources

_LOG_LOCK = threading.Lock()


def build_record(msg: GuardResult) -> JobRecord:
    c = msg.completion
    return JobRecord(
        job_id=msg.request.job_id,
        request=msg.request,
        intent=msg.intent,
        intent_confidence=msg.intent_confidence,
        chunks_used=[ch.chunk_id for ch in msg.chunks],
        output=msg.output,
        provider=c.provider,
        model=c.model,
        prompt_version=c.prompt_version,
        usage=c.usage,
        cost_usd=c.cost_usd,
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


def run_record(msg: GuardResult, res: Resources) -> JobRecord:
    record = build_record(msg)
    state = res.state
    first = state.put_record(record)
    if not first:
        # a redelivered record stage: the stored record stands, counters are not bumped twice
        stored = state.get_record(record.job_id)
        return stored or record
    append_jsonl(res.settings.records_path, record.model_dump_json())
    if record.request.batch_id:
        state.batch_incr(record.request.batch_id, "succeeded")
    state.set_status(JobStatus(job_id=record.job_id, state="succeeded", stage="record"))
    return record
