"""``conveyor batch``: submit, watch, export and repair batches (workers/batch.py does the work).

In embedded mode the worker lives in this command, so ``submit`` watches until every item has
settled; in distributed mode it returns at once (``--watch`` to follow). Ctrl-C while watching
stops the watching, never the batch: submitting the same source again resumes it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas import Intent, JobParams
from schemas.batch import DEFAULT_INSTRUCTION, BatchStatus

console = Console(stderr=True)


def describe(status: BatchStatus, rate: float | None) -> str:
    """One line: counts, failure classes, throughput, ETA, tokens and cost so far."""
    parts = [f"{status.label}", f"{status.succeeded} ok", f"{status.failed} failed", f"{status.pending} pending"]
    if status.failures:
        parts.append("(" + ", ".join(f"{k} {v}" for k, v in sorted(status.failures.items())) + ")")
    if rate:
        parts.append(f"{rate:.2f} items/s")
        if status.pending:
            parts.append(f"ETA {status.pending / rate:.0f}s")
    parts.append(f"{status.prompt_tokens + status.completion_tokens} tokens, {status.cost_label}")
    return " · ".join(parts)


def watch(client: Any, batch_id: str, *, timeout: float | None = None, poll_s: float = 0.5) -> BatchStatus:
    """A progress bar until the batch has settled (or ``timeout``); Ctrl-C ends the watching only."""
    started = time.monotonic()
    first = client.batch_status(batch_id)
    status, first_done = first, first.done
    columns = (TextColumn("[bold]{task.fields[batch]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}"))
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(describe(first, None), total=first.items, completed=first.done, batch=batch_id)
            while not status.finished:
                if timeout is not None and time.monotonic() - started > timeout:
                    break
                time.sleep(poll_s)
                status = client.batch_status(batch_id)
                elapsed = time.monotonic() - started
                rate = (status.done - first_done) / elapsed if elapsed > 1 and status.done > first_done else None
                progress.update(task, total=status.items, completed=status.done, description=describe(status, rate))
    except KeyboardInterrupt:
        console.print(f"stopped watching; batch {batch_id} goes on (conveyor batch status {batch_id})")
    return status


def _print_status(status: BatchStatus, out: Console | None = None) -> None:
    out = out or Console()
    table = Table(title=f"batch {status.batch.batch_id}: {status.label}")
    columns = ["items", "succeeded", "failed", "pending", "llm calls", "tokens in/out", "cost USD", "elapsed"]
    cells = [str(status.items), str(status.succeeded), str(status.failed), str(status.pending), str(status.llm_calls),
             f"{status.prompt_tokens}/{status.completion_tokens}", f"{status.cost_usd:.4f}", f"{status.elapsed_s:.0f}s"]
    if status.unpriced_jobs:  # jobs whose model has no known price: not in the cost, and said so
        columns.insert(7, "unpriced")
        cells.insert(7, str(status.unpriced_jobs))
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(*cells)
    out.print(table)
    if status.failures:
        failures = Table(title="failed items by class")
        failures.add_column("failure class")
        failures.add_column("items", justify="right")
        for name, count in sorted(status.failures.items()):
            failures.add_row(name, str(count))
        out.print(failures)


def register(main: click.Group, runtime: Any, settings_of: Any, errors: Any) -> None:
    """Add the ``batch`` group to ``main`` (``runtime``/``settings_of``/``errors`` come from workers/cli.py)."""

    @main.group()
    def batch() -> None:
        """Batches: many documents, one status, results per custom_id, resumable."""

    @batch.command("submit")
    @click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
    @click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                  help="JSONL, one item per line: custom_id, document (a path) or text, instruction, intent, "
                       "params.")
    @click.option("--batch-id", default=None, help="Default: derived from the source, so resubmitting resumes.")
    @click.option("--tenant", default="default", show_default=True)
    @click.option("--instruction", default=DEFAULT_INSTRUCTION, show_default=True)
    @click.option("--intent", type=click.Choice([i.value for i in Intent]), default=Intent.summarize.value,
                  show_default=True)
    @click.option("--watch/--no-watch", "watching", default=None, help="Follow progress (always in embedded mode).")
    @click.option("--timeout", type=float, default=None, help="Stop watching after this many seconds.")
    def submit(paths: tuple[Path, ...], manifest: Path | None, batch_id: str | None, tenant: str, instruction: str,
               intent: str, watching: bool | None, timeout: float | None) -> None:
        """Submit folders (recursively), files, or a manifest as one batch; prints the batch id."""
        settings = settings_of()
        with runtime(settings, need_worker=settings.embedded) as rt, errors():
            report = rt.client.submit_batch(list(paths) or None, manifest=manifest, batch_id=batch_id,
                                            tenant=tenant, instruction=instruction, intent=Intent(intent),
                                            params=JobParams())
            already = ", ".join(f"{n} {state}" for state, n in sorted(report.already.items()))
            console.print(f"batch {report.batch_id}: {report.items} items; {len(report.sent)} sent, "
                          f"{len(report.resent)} resent, {len(report.invalid)} invalid (dead-lettered)"
                          + (f"; already there: {already}" if already else ""))
            click.echo(report.batch_id)
            if settings.embedded or watching:
                status = watch(rt.client, report.batch_id, timeout=timeout)
                _print_status(status, console)  # stdout is the batch id alone, for scripts

    @batch.command("status")
    @click.argument("batch_id")
    @click.option("--watch", "watching", is_flag=True, help="Follow until the batch has settled (Ctrl-C stops "
                                                              "watching, not the batch).")
    @click.option("--json", "as_json", is_flag=True)
    def status(batch_id: str, watching: bool, as_json: bool) -> None:
        """Counts by state and failure class, throughput, tokens and cost so far."""
        with runtime(settings_of(), need_worker=False) as rt, errors():
            found = watch(rt.client, batch_id) if watching else _status(rt, batch_id)
        if as_json:
            click.echo(json.dumps({**found.model_dump(mode="json"), "label": found.label}, indent=2))
        else:
            _print_status(found)

    def _status(rt: Any, batch_id: str) -> BatchStatus:
        try:
            found: BatchStatus = rt.client.batch_status(batch_id)
        except KeyError as exc:
            raise click.ClickException(str(exc.args[0])) from exc
        return found

    @batch.command("list")
    def list_() -> None:
        """Every batch, newest first."""
        with runtime(settings_of(), need_worker=False) as rt, errors():
            batches = rt.client.list_batches()
            table = Table()
            for column in ("batch", "state", "tenant", "created", "source"):
                table.add_column(column)
            for info in batches:
                table.add_row(info.batch_id, info.state, info.tenant, info.created_at.strftime("%Y-%m-%d %H:%M"),
                              info.source[:60])
        Console().print(table)

    @batch.command("results")
    @click.argument("batch_id")
    @click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
    @click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
                  help="Default: from the file's suffix (.csv), else jsonl.")
    def results(batch_id: str, out: Path, fmt: str | None) -> None:
        """One line per item, keyed by custom_id: its record, its error, or that it is pending."""
        from workers.batch import write_results

        fmt = fmt or ("csv" if out.suffix.lower() == ".csv" else "jsonl")
        with runtime(settings_of(), need_worker=False) as rt, errors():
            _status(rt, batch_id)
            tmp = out.with_name(out.name + ".partial")
            with tmp.open("w", encoding="utf-8", newline="") as fh:
                counts = write_results(rt.client.state, batch_id, fh, fmt)
            tmp.replace(out)  # never a half-written file under the final name
        console.print(f"{sum(counts.values())} items -> {out} ({fmt}): "
                      + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))

    @batch.command("errors")
    @click.argument("batch_id")
    @click.option("--json", "as_json", is_flag=True)
    def errors_(batch_id: str, as_json: bool) -> None:
        """The failed items: custom_id, stage, failure class, message."""
        with runtime(settings_of(), need_worker=False) as rt, errors():
            _status(rt, batch_id)
            failed = [r for r in rt.client.iter_results(batch_id) if r["status"] == "failed"]
        if as_json:
            click.echo(json.dumps(failed, indent=2))
            return
        table = Table(title=f"{len(failed)} failed item(s)")
        for column in ("custom_id", "stage", "failure class", "message", "dead letter"):
            table.add_column(column)
        for r in failed:
            e = r["error"]
            table.add_row(r["custom_id"], e["stage"], e["failure_class"], e["message"][:80], e["dead_letter_id"])
        Console().print(table)

    @batch.command("retry")
    @click.argument("batch_id")
    @click.option("--class", "failure_class", default=None, help="Only items that failed with this class.")
    @click.option("--stage", default=None, help="Only items that failed at this stage.")
    @click.option("--dry-run", is_flag=True)
    @click.option("--watch/--no-watch", "watching", default=None, help="Follow progress (always in embedded mode).")
    def retry(batch_id: str, failure_class: str | None, stage: str | None, dry_run: bool,
              watching: bool | None) -> None:
        """Replay the failed items only; succeeded ones are never run again."""
        settings = settings_of()
        with runtime(settings, need_worker=settings.embedded) as rt, errors():
            _status(rt, batch_id)
            report = rt.client.retry_batch(batch_id, failure_class=failure_class, stage=stage, dry_run=dry_run)
            verb = "would replay" if dry_run else "replayed"
            console.print(f"{verb} {len(report.matched) if dry_run else len(report.replayed)} failed item(s)"
                          + (f"; {len(report.not_enqueued) + len(report.not_tried)} not enqueued (broker down)"
                             if report.not_enqueued else ""))
            if report.not_enqueued:
                raise click.ClickException(report.not_enqueued[0][1])
            if not dry_run and (settings.embedded or watching):
                _print_status(watch(rt.client, batch_id), console)

    @batch.command("cancel")
    @click.argument("batch_id")
    def cancel(batch_id: str) -> None:
        """Items not started yet do not run (each ends as a 'cancelled' dead letter); running ones finish."""
        with runtime(settings_of(), need_worker=False) as rt, errors():
            _status(rt, batch_id)
            info = rt.client.cancel_batch(batch_id)
        console.print(f"batch {info.batch_id} cancelled; submit it again or `conveyor batch retry {batch_id} "
                      "--class cancelled` to resume")
