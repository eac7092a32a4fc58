"""The contract-summarization batch behind ``conveyor demo``: ``conveyor batch`` on the given documents.

The documents are submitted as one batch (the workers ingest them on the ``ingest`` queue),
the batch is watched until every item settled, every item's record goes to ``results.jsonl``
and every failed item's error to ``errors.jsonl``, and a table shows what each job did and how
long each stage took. Running it again on the same documents resumes the same batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas import PIPELINE, JobRecord, StageMessage
from workers.tables import plain_table

#: the stages whose messages carry timings (all but the record).
TIMED_STAGES = tuple(spec.name for spec in PIPELINE if issubclass(spec.output, StageMessage))


@dataclass
class DemoOutcome:
    batch_id: str
    records: list[JobRecord] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _output_size(record: JobRecord) -> int:
    return len(json.dumps(record.output, ensure_ascii=False))


def format_table(records: list[JobRecord]) -> str:
    header = ["document", "intent", "chunks", "out chars", "guard"] + [f"{s} ms" for s in TIMED_STAGES] + ["total ms"]
    rows = []
    for r in records:
        total = (r.completed_at - r.request.created_at).total_seconds() * 1000
        rows.append(
            [r.request.document_id or r.job_id[:12], r.intent.value, str(len(r.chunks_used)), str(_output_size(r)),
             r.guard.verdict]
            + [f"{r.timings_ms.get(s, 0.0):.0f}" for s in TIMED_STAGES]
            + [f"{total:.0f}"]
        )
    return plain_table(header, rows)


def run_demo(
    rt: Any,
    paths: list[Path],
    *,
    tenant: str,
    out: Path,
    errors_out: Path,
    timeout: float,
    echo: Callable[[str], None] = print,
) -> DemoOutcome:
    from workers.batch import iter_results, records_of
    from workers.batch_cli import watch

    started = time.monotonic()
    report = rt.client.submit_batch(paths, tenant=tenant)
    already = sum(report.already.values())
    echo(f"batch {report.batch_id}: {report.items} documents, {len(report.sent)} submitted"
         + (f", {already} already done or running (resumed)" if already else "")
         + (f", {len(report.invalid)} unreadable" if report.invalid else ""))
    status = watch(rt.client, report.batch_id, timeout=timeout)
    state = rt.components.state
    outcome = DemoOutcome(batch_id=report.batch_id, records=records_of(state, report.batch_id))
    with out.open("w", encoding="utf-8") as results_fh, errors_out.open("w", encoding="utf-8") as errors_fh:
        for record in outcome.records:
            results_fh.write(record.model_dump_json() + "\n")
        for item in iter_results(state, report.batch_id):
            if item["status"] != "succeeded":
                outcome.failed.append(item)
                errors_fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    outcome.seconds = time.monotonic() - started
    echo("")
    echo(format_table(outcome.records))
    echo("")
    provider = outcome.records[0].provider if outcome.records else "-"
    echo(f"batch {report.batch_id}: {status.succeeded} succeeded, {status.failed} failed, {status.pending} pending "
         f"of {status.items} in {outcome.seconds:.1f}s; provider: {provider}; cost {status.cost_label}; "
         f"records -> {out}, errors -> {errors_out}")
    return outcome
