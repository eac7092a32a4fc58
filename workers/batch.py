"""Batches: a folder or a manifest becomes items, each one job, resumable and reported per ``custom_id``.

An item's identity is its ``custom_id`` plus the sha256 of its content, prompt version, model,
params and instruction; its job id derives from the batch and that identity. Submitting the
same source again therefore resumes: an item whose job exists is not sent again (finished,
running or failed alike; ``retry`` replays the failed ones), a new or changed file is a new
item version. Items that never ran (``interrupted``, ``cancelled``) are replayed on resubmit.

The client reads each document once, keeps its bytes in the state store under their sha256
and publishes only that reference; the ``ingest`` stage on the workers chunks, embeds and
stores it. A file the client cannot use (unreadable, too big, an unsupported type) becomes
that item's ``invalid_input`` dead letter with its path; the batch goes on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from celery import Celery
from pydantic import ValidationError

from pipeline.errors import InvalidInput, ProviderUnavailable, validation_problems
from pipeline.retrieval.ingest import SUPPORTED_SUFFIXES, check_supported
from pipeline.settings import Settings
from pipeline.state import LetterFilter, StateStore
from schemas import Intent, JobParams, JobRecord, JobRequest, JobStatus
from schemas.batch import DEFAULT_INSTRUCTION, BatchInfo, BatchItem, BatchStatus, ManifestLine
from schemas.job import DocumentRef, IngestRequest
from schemas.pipeline import INGEST, INTENT
from workers.chain import send_job
from workers.deadletters import BulkReplay, replay_matching, write_dead_letter

log = logging.getLogger("conveyor.batch")

#: failure classes of items that never ran: a resubmission sends them again.
NEVER_RAN = frozenset({"interrupted", "cancelled"})


def _sha(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def slug(text: str, limit: int = 100) -> str:
    """``text`` as an Identifier: path separators become ':', anything else unusual '_'."""
    cleaned = re.sub(r"[^A-Za-z0-9._:-]+", "_", text.replace("/", ":")).strip("_.:-") or "item"
    return cleaned[:limit]


def document_id_for(custom_id: str) -> str:
    """A document id from an item's path relative to the batch root: readable, never a bare stem, and
    distinct for distinct paths (a short hash is added when the slug had to change the path)."""
    readable = slug(custom_id)
    if readable == custom_id.replace("/", ":") and len(custom_id) <= 100:
        return readable
    return f"{readable[:90]}-{hashlib.sha256(custom_id.encode()).hexdigest()[:8]}"


# --- planning: what the items are ------------------------------------------------------------
@dataclass(slots=True)
class Planned:
    """One item as read at the client, before anything is sent.

    A file's bytes are hashed at planning and read again when the item is sent, one at a time, so
    the client's memory does not grow with the batch's size in bytes (a manifest's inline text is
    kept: it was in memory with the manifest anyway)."""

    custom_id: str
    instruction: str
    intent: Intent | None
    params: JobParams
    path: Path | None = None
    raw: bytes | None = None
    name: str = ""
    problem: str | None = None
    content_sha: str | None = None

    def read(self) -> bytes | None:
        """The bytes to send: the inline text, or the file as hashed at planning (None, with ``problem``
        set, if it can no longer be read or has changed since)."""
        if self.raw is not None or self.path is None:
            return self.raw
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            self.problem = f"cannot read {self.custom_id}: {exc.strerror or exc}"
            return None
        if hashlib.sha256(raw).hexdigest() != self.content_sha:
            self.problem = f"{self.custom_id} changed while the batch was being submitted; submit again"
            return None
        return raw


@dataclass
class Plan:
    source: str
    root: Path | None
    items: list[Planned]


def _files_under(folder: Path) -> Iterator[Path]:
    """Every regular file below ``folder``, hidden ones (``.git``, ``.DS_Store``) left out, sorted."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            yield path


def _read(item: Planned, max_bytes: int) -> Planned:
    """The file's bytes, or the reason this item cannot run (its own dead letter, not the batch's end)."""
    assert item.path is not None
    try:
        check_supported(item.path.name)
        size = item.path.stat().st_size
        if size > max_bytes:
            raise InvalidInput(f"{item.custom_id} is {size} bytes, over CONVEYOR_BATCH_MAX_DOCUMENT_BYTES "
                               f"({max_bytes})")
        with item.path.open("rb") as file:
            item.content_sha = hashlib.file_digest(file, "sha256").hexdigest()
    except InvalidInput as exc:
        item.problem = exc.message
    except OSError as exc:
        item.problem = f"cannot read {item.custom_id}: {exc.strerror or exc}"
    return item


def plan_paths(paths: list[Path], *, instruction: str, intent: Intent | None, params: JobParams,
               max_bytes: int) -> Plan:
    """Folders (recursively) and files; ``custom_id`` is each file's path relative to the batch root
    (the one folder given, else the deepest folder holding everything given)."""
    if not paths:
        raise InvalidInput("give at least one folder or file, or --manifest FILE.jsonl")
    resolved = [p.resolve() for p in paths]
    missing = [str(p) for p, r in zip(paths, resolved, strict=True) if not r.exists()]
    if missing:
        raise InvalidInput(f"no such file or directory: {', '.join(missing)}")
    if len(resolved) == 1 and resolved[0].is_dir():
        root = resolved[0]
    else:
        import os

        root = Path(os.path.commonpath([p if p.is_dir() else p.parent for p in resolved]))
    files = sorted({f for p in resolved for f in (_files_under(p) if p.is_dir() else [p])})
    items = [_read(Planned(custom_id=f.relative_to(root).as_posix(), instruction=instruction, intent=intent,
                           params=params, path=f, name=f.relative_to(root).as_posix()), max_bytes)
             for f in files]
    return Plan(source=", ".join(str(p) for p in resolved), root=root, items=items)


def plan_manifest(manifest: Path, *, instruction: str, intent: Intent | None, params: JobParams,
                  max_bytes: int) -> Plan:
    """One item per JSONL line; a line that does not parse refuses the manifest, naming the line."""
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read manifest {manifest}: {exc}") from exc
    items: list[Planned] = []
    seen: set[str] = set()
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            line = ManifestLine.model_validate_json(text)
        except ValidationError as exc:
            raise InvalidInput(f"{manifest}:{number}: {'; '.join(validation_problems(exc, 'line'))}") from exc
        if line.custom_id in seen:
            raise InvalidInput(f"{manifest}:{number}: custom_id {line.custom_id!r} appears twice")
        seen.add(line.custom_id)
        item = Planned(custom_id=line.custom_id, instruction=line.instruction or instruction,
                       intent=line.intent if line.intent is not None else intent, params=line.params)
        if line.text is not None:
            item.raw, item.name = line.text.encode("utf-8"), f"{line.custom_id}.txt"
            item.content_sha = hashlib.sha256(item.raw).hexdigest()
        else:
            assert line.document is not None
            path = Path(line.document)
            item.path = path if path.is_absolute() else manifest.parent / path
            item.name = line.document
            _read(item, max_bytes)
        items.append(item)
    if not items:
        raise InvalidInput(f"manifest {manifest} has no items")
    return Plan(source=str(manifest.resolve()), root=manifest.resolve().with_suffix(""), items=items)


def default_batch_id(plan: Plan, tenant: str, instruction: str, intent: Intent | None) -> str:
    """The same source, tenant and instruction give the same batch: submitting again resumes it."""
    name = plan.root.name if plan.root is not None else "batch"
    return f"{slug(name, 40)}-{_sha(plan.source, tenant, instruction, intent)[:10]}"


# --- submitting -----------------------------------------------------------------------------
@dataclass
class SubmitReport:
    batch_id: str
    items: int = 0
    sent: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    already: Counter[str] = field(default_factory=Counter)


def generation_key(settings: Settings, intent: Intent | None) -> tuple[str, str]:
    """(prompt version, model): part of an item's identity, so a new prompt or model runs items again."""
    from pipeline.generation.prompts import template_for

    version = template_for(intent, settings.prompt_versions).version if intent is not None else "by-intent"
    return version, (settings.llm_model if settings.llm_base_url else "extractive")


def submit_plan(app: Celery, state: StateStore, settings: Settings, plan: Plan, *, batch_id: str | None = None,
                tenant: str = "default", instruction: str = DEFAULT_INSTRUCTION,
                intent: Intent | None = Intent.summarize) -> SubmitReport:
    batch_id = batch_id or default_batch_id(plan, tenant, instruction, intent)
    info = state.get_batch(batch_id)
    if info is None:
        info = BatchInfo(batch_id=batch_id, tenant=tenant, source=plan.source, instruction=instruction, intent=intent)
    elif info.state == "cancelled":  # submitting a cancelled batch again resumes it
        info = info.model_copy(update={"state": "running", "cancelled_at": None})
    state.put_batch(info)

    report = SubmitReport(batch_id=batch_id, items=len(plan.items))
    keys = {intent: generation_key(settings, intent) for intent in {item.intent for item in plan.items}}

    def entries(page: list[Planned]) -> list[BatchItem]:
        return [_batch_item(batch_id, item, *keys[item.intent]) for item in page]

    pages = [plan.items[start:start + SUBMIT_PAGE] for start in range(0, len(plan.items), SUBMIT_PAGE)]
    for page in pages:  # all registered first: a status read while jobs start already counts every item
        state.add_batch_items(batch_id, entries(page))
    for page in pages:  # then sent a page at a time, so the client holds one page of requests
        page_entries = entries(page)
        existing = state.get_statuses([entry.job_id for entry in page_entries])
        for item, entry in zip(page, page_entries, strict=True):
            status = existing.get(entry.job_id)
            if status is not None:
                failure = _failure_class(status)
                if failure in NEVER_RAN and status.dead_letter_id:
                    report.resent.append(entry.custom_id)
                    continue
                report.already[status.state] += 1
                continue
            request = JobRequest(job_id=entry.job_id, idempotency_key=entry.job_id, tenant=tenant,
                                 text=item.instruction, document_id=entry.document_id, intent_hint=item.intent,
                                 params=item.params, batch_id=batch_id, custom_id=item.custom_id)
            raw = item.read() if item.problem is None else None
            if raw is None:
                _dead_letter_at_client(state, request, item)
                report.invalid.append(entry.custom_id)
                continue
            _send(app, state, settings, request, item, raw)
            report.sent.append(entry.custom_id)
    if report.resent:
        _replay_never_ran(app, state, batch_id)
    return report


#: items registered, then sent, this many at a time.
SUBMIT_PAGE = 500


def _batch_item(batch_id: str, item: Planned, prompt_version: str, model: str) -> BatchItem:
    """The item's entry: its job id comes from its identity (content, prompt version, model, params)."""
    identity = _sha(item.custom_id, item.content_sha or item.problem, prompt_version, model,
                    item.params.model_dump(mode="json"), item.instruction, item.intent)
    return BatchItem(custom_id=item.custom_id, job_id=f"{batch_id}.{identity[:20]}",
                     document_id=document_id_for(item.custom_id), path=str(item.path) if item.path else None,
                     identity=identity)


def _failure_class(status: JobStatus) -> str | None:
    if status.state != "failed" or not status.error:
        return None
    return status.error.split(":", 1)[0]


def _dead_letter_at_client(state: StateStore, request: JobRequest, item: Planned) -> None:
    """The item's own dead letter: its job is counted, its path kept, the batch goes on."""
    if not state.set_status_if_absent(JobStatus(job_id=request.job_id, state="queued", stage=INGEST.name)):
        return
    state.batch_incr(request.batch_id or "", "submitted")
    payload = {"request": request.model_dump(mode="json"), "document": {"name": item.name}}
    write_dead_letter(state, stage=INGEST.name, payload=payload,
                      error=InvalidInput(item.problem or f"{item.custom_id} has no content"), attempts=1,
                      retries_exhausted=False)


def _send(app: Celery, state: StateStore, settings: Settings, request: JobRequest, item: Planned, raw: bytes) -> None:
    """Bytes into the store, the job by reference, then its first status.

    The status comes last because it is what marks the item as sent: a client killed before the
    publish leaves no status, and the next submit sends the item. (Killed in the instant between
    publish and status, the next submit sends it a second time; the job's stages then skip what a
    record already covers.)"""
    assert item.content_sha is not None
    state.put_blob(item.content_sha, raw, ttl_s=settings.document_ttl_s)
    payload = IngestRequest(request=request, document=DocumentRef(sha256=item.content_sha, name=item.name,
                                                                  size=len(raw))).model_dump(mode="json")
    state.checkpoint(request.job_id, INGEST.name, payload)
    try:
        send_job(app, payload, start=INGEST.name)
    except Exception as exc:
        state.release_blob(item.content_sha)
        from kombu.utils.url import maybe_sanitize_url

        raise ProviderUnavailable(f"could not enqueue {item.custom_id}: broker "
                                  f"{maybe_sanitize_url(str(app.conf.broker_url))} unreachable "
                                  f"({type(exc).__name__}); submit again to go on") from exc
    state.set_status_if_absent(JobStatus(job_id=request.job_id, state="queued", stage=INGEST.name))
    state.batch_incr(request.batch_id or "", "submitted")


def _replay_never_ran(app: Celery, state: StateStore, batch_id: str) -> None:
    for failure_class in sorted(NEVER_RAN):
        replay_matching(app, state, LetterFilter(batch_id=batch_id, failure_class=failure_class))


# --- reading a batch ----------------------------------------------------------------------------
def _batch(state: StateStore, batch_id: str) -> BatchInfo:
    info = state.get_batch(batch_id)
    if info is None:
        raise KeyError(f"no batch {batch_id!r} (conveyor batch list shows them)")
    return info


def batch_status(state: StateStore, batch_id: str) -> BatchStatus:
    """Counts by state and failure class, read from every item's status, a page at a time."""
    info = _batch(state, batch_id)
    items = succeeded = failed = 0
    failures: Counter[str] = Counter()
    seen: set[str] = set()  # Redis HSCAN may return an entry twice when the hash grows during the scan
    for page in state.iter_batch_items(batch_id):
        fresh = [item for item in page if item.custom_id not in seen]
        seen.update(item.custom_id for item in fresh)
        items += len(fresh)
        for status in state.get_statuses([item.job_id for item in fresh]).values():
            if status.state == "succeeded":
                succeeded += 1
            elif status.state == "failed":
                failed += 1
                failures[_failure_class(status) or "unknown"] += 1
    counts = state.batch_counts(batch_id)
    return BatchStatus(
        batch=info, items=items, succeeded=succeeded, failed=failed, pending=items - succeeded - failed,
        failures=dict(failures), llm_calls=counts.get("llm_calls", 0), prompt_tokens=counts.get("prompt_tokens", 0),
        completion_tokens=counts.get("completion_tokens", 0), cost_usd=counts.get("cost_micro_usd", 0) / 1e6,
        unpriced_jobs=counts.get("unpriced_jobs", 0),
        elapsed_s=(datetime.now(UTC) - info.created_at).total_seconds(),
    )


def may_be_finished(state: StateStore, batch_id: str) -> bool:
    """False when the batch's counters show items still pending: two reads, whatever the batch's size.

    The counters move with every record and dead letter (``complete``, ``fail``, ``reopen``), and an
    item resubmitted with changed content leaves its old job counted too, so they never count fewer
    settled items than there are: False is certain, True needs :func:`batch_status` to confirm."""
    counts = state.batch_counts(batch_id)
    return counts.get("succeeded", 0) + counts.get("failed", 0) >= state.batch_item_count(batch_id)


def iter_results(state: StateStore, batch_id: str) -> Iterator[dict[str, Any]]:
    """One entry per item, in ``custom_id`` order: its record, its error, or that it is still pending."""
    _batch(state, batch_id)
    items = state.batch_items(batch_id)
    for custom_id in sorted(items):
        item = items[custom_id]
        line: dict[str, Any] = {"custom_id": custom_id, "job_id": item.job_id, "document_id": item.document_id,
                                "path": item.path}
        record = state.get_record(item.job_id)
        if record is not None:
            yield {**line, "status": "succeeded", "record": record.model_dump(mode="json")}
            continue
        status = state.get_status(item.job_id)
        letter = state.get_dead_letter(status.dead_letter_id) if status and status.dead_letter_id else None
        if status is not None and status.state == "failed" and letter is not None:
            yield {**line, "status": "failed", "error": {
                "failure_class": letter.failure_class, "stage": letter.stage, "message": letter.error_message,
                "dead_letter_id": letter.dead_letter_id, "retries_exhausted": letter.retries_exhausted}}
        else:
            yield {**line, "status": status.state if status else "pending"}


CSV_COLUMNS = ("custom_id", "status", "job_id", "document_id", "path", "intent", "output", "guard", "llm_calls",
               "cost_usd", "failure_class", "stage", "error")


def csv_row(result: dict[str, Any]) -> dict[str, Any]:
    record, error = result.get("record") or {}, result.get("error") or {}
    return {
        "custom_id": result["custom_id"], "status": result["status"], "job_id": result["job_id"],
        "document_id": result["document_id"], "path": result.get("path") or "", "intent": record.get("intent", ""),
        "output": json.dumps(record["output"], ensure_ascii=False) if record else "",
        "guard": (record.get("guard") or {}).get("verdict", ""), "llm_calls": record.get("llm_calls", ""),
        "cost_usd": "" if record.get("cost_usd") is None else record["cost_usd"],  # null: no known price
        "failure_class": error.get("failure_class", ""),
        "stage": error.get("stage", ""), "error": error.get("message", ""),
    }


def write_results(state: StateStore, batch_id: str, out: IO[str], fmt: str = "jsonl") -> Counter[str]:
    """Every item's outcome to ``out``, one JSON line or CSV row each; returns the counts by status."""
    counts: Counter[str] = Counter()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for result in iter_results(state, batch_id):
        counts[result["status"]] += 1
        if writer is not None:
            writer.writerow(csv_row(result))
        else:
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
    return counts


def records_of(state: StateStore, batch_id: str) -> list[JobRecord]:
    return [JobRecord.model_validate(r["record"]) for r in iter_results(state, batch_id) if "record" in r]


# --- acting on a batch ------------------------------------------------------------------------------
def retry_failed(app: Celery, state: StateStore, batch_id: str, *, failure_class: str | None = None,
                 stage: str | None = None, dry_run: bool = False) -> BulkReplay:
    """Replay the batch's failed items only (optionally of one failure class or stage). A cancelled
    batch runs again: its ``cancelled`` items are failed items like any other."""
    info = _batch(state, batch_id)
    if info.state == "cancelled" and not dry_run:
        state.put_batch(info.model_copy(update={"state": "running", "cancelled_at": None}))
    return replay_matching(app, state, LetterFilter(batch_id=batch_id, failure_class=failure_class, stage=stage),
                           dry_run=dry_run)


def cancel(state: StateStore, batch_id: str) -> BatchInfo:
    """Items not started yet end as ``cancelled`` dead letters when a worker takes them (and a
    resubmission sends them again); items already running finish."""
    info = _batch(state, batch_id)
    if info.state != "cancelled":
        info = info.model_copy(update={"state": "cancelled", "cancelled_at": datetime.now(UTC)})
        state.put_batch(info)
    return info


def supported_types() -> str:
    return ", ".join(sorted(SUPPORTED_SUFFIXES))


__all__ = ["INTENT", "Plan", "Planned", "SubmitReport", "batch_status", "cancel", "document_id_for", "iter_results",
           "plan_manifest", "plan_paths", "retry_failed", "submit_plan", "write_results"]
