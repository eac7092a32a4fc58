"""The contract-summarization batch behind ``conveyor demo``.

Ingests the documents, submits one summarize job per document under one ``batch_id``,
streams records to ``results.jsonl`` and dead letters to ``errors.jsonl`` as jobs finish,
and prints a table of what each job did and how long each stage took.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas import PIPELINE, JobRecord, JobRequest, StageMessage

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
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


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
    from pipeline.retrieval.ingest import ingest_paths
    from workers.client import JobFailed

    settings = rt.components.settings
    started = time.monotonic()
    report = ingest_paths(paths, tenant=tenant, store=rt.components.vector_store, embedder=rt.components.embedder,
                          max_tokens=settings.chunk_max_tokens, overlap=settings.chunk_overlap_tokens)
    echo(f"ingested {report.documents} documents ({report.chunks} chunks, {report.added} new) in {report.seconds:.2f}s")

    batch_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    outcome = DemoOutcome(batch_id=batch_id)
    jobs = []
    for path in paths:
        request = JobRequest(text="Summarize this contract.", document_id=path.stem, tenant=tenant,
                             batch_id=batch_id, custom_id=path.name)
        jobs.append(rt.client.submit(request))
    echo(f"submitted {len(jobs)} jobs as batch {batch_id}")

    deadline = time.monotonic() + timeout
    with out.open("w", encoding="utf-8") as results_fh, errors_out.open("w", encoding="utf-8") as errors_fh:
        for n, job_id in enumerate(jobs, start=1):
            try:
                record = rt.client.result(job_id, timeout=max(0.0, deadline - time.monotonic()))
            except JobFailed as exc:
                letter = exc.dead_letter.model_dump(mode="json") if exc.dead_letter else {"job_id": job_id}
                outcome.failed.append(letter)
                errors_fh.write(json.dumps(letter) + "\n")
                echo(f"[{n}/{len(jobs)}] FAILED {job_id}: {exc}")
                continue
            except TimeoutError as exc:
                # not lost: the job keeps running; `conveyor status/result JOB_ID` follows it up
                outcome.failed.append({"job_id": job_id, "error": str(exc)})
                echo(f"[{n}/{len(jobs)}] NOT DONE {job_id}: {exc}")
                continue
            outcome.records.append(record)
            results_fh.write(record.model_dump_json() + "\n")
            results_fh.flush()
            echo(f"[{n}/{len(jobs)}] {record.request.document_id}: {record.intent.value}, "
                 f"{len(record.chunks_used)} chunks, guard {record.guard.verdict}")
    outcome.seconds = time.monotonic() - started
    counts = rt.components.state.batch_counts(batch_id)
    echo("")
    echo(format_table(outcome.records))
    echo("")
    provider = outcome.records[0].provider if outcome.records else "-"
    echo(f"batch {batch_id}: {counts.get('succeeded', 0)} succeeded, {counts.get('failed', 0)} failed "
         f"of {counts.get('submitted', 0)} in {outcome.seconds:.1f}s; provider: {provider}; "
         f"records -> {out}, errors -> {errors_out}")
    return outcome
