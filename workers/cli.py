"""``conveyor``: run the demo batch, submit and inspect jobs, run workers, operate the DLQ.

Embedded mode (no ``CONVEYOR_BROKER_URL``) runs a worker inside the command for as long
as the command needs one; distributed mode only enqueues and reads state.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import click

from pipeline.errors import ConveyorError
from pipeline.settings import Settings, SettingsError, load_settings
from schemas import QUEUES, STAGES


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    from workers.logformat import configure_cli_logging

    configure_cli_logging(settings.log_format)  # CONVEYOR_LOG_FORMAT=json: the CLI's log lines too
    return settings


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


@contextmanager
def _runtime(settings: Settings, *, need_worker: bool) -> Iterator[Any]:
    """Yields an object with ``.app``, ``.client`` and ``.components`` for either mode."""
    from workers.runtime import components_for

    if settings.embedded and need_worker:
        from workers.embedded import EmbeddedRuntime

        with EmbeddedRuntime(settings) as rt:
            yield rt
        return

    from workers.app import create_app
    from workers.client import ConveyorClient
    from workers.runtime import release_components

    app = create_app(settings)

    class _Remote:
        def __init__(self) -> None:
            self.app = app
            self.client = ConveyorClient(app)

        @property
        def components(self) -> Any:
            return components_for(app)

    try:
        yield _Remote()
    finally:
        release_components(app)


def sample_contracts() -> list[Path]:
    """The contracts that ship with Conveyor for the demo."""
    folder = files("pipeline").joinpath("data/contracts")
    return sorted(Path(str(p)) for p in folder.iterdir() if str(p).endswith(".md"))


class _OneLineErrors(click.Group):
    """Every command: a Conveyor error or bad JSON input is one line and exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:
            raise click.ClickException(exc.message) from exc
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="conveyor", prog_name="conveyor")
def main() -> None:
    """Conveyor runs LLM work as a Celery pipeline: intent -> retrieve -> generate -> guard -> record.

    Without CONVEYOR_BROKER_URL everything runs in this process (embedded mode, no services).
    With CONVEYOR_BROKER_URL=redis://... commands enqueue to workers started by `conveyor worker`.
    """


# --- the main job -----------------------------------------------------------------------------
@main.command()
@click.option("--docs", "doc_paths", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Folders or files to summarize, repeatable (default: the sample contracts that ship with "
                   "Conveyor).")
@click.option("--limit", type=int, default=None, help="Only the first N of the sample contracts.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results.jsonl"), show_default=True,
              help="Every item's record, one JSON object per line (conveyor batch results).")
@click.option("--errors-out", type=click.Path(path_type=Path), default=Path("errors.jsonl"), show_default=True,
              help="Every failed item's error, one JSON object per line.")
@click.option("--tenant", default="demo", show_default=True)
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds to wait for the batch.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Overrides CONVEYOR_DATA_DIR.")
def demo(doc_paths: tuple[Path, ...], limit: int | None, out: Path, errors_out: Path, tenant: str,
         timeout: float, data_dir: Path | None) -> None:
    """A contract-summarization batch end to end (conveyor batch submit, then results), with a per-job table."""
    from workers.demo import run_demo

    settings = _settings(data_dir=data_dir)
    paths = list(doc_paths) or sample_contracts()[:limit]
    if not paths:
        raise click.ClickException("no documents to summarize")
    with _runtime(settings, need_worker=True) as rt:
        outcome = run_demo(rt, paths, tenant=tenant, out=out, errors_out=errors_out, timeout=timeout,
                           echo=click.echo)
    if outcome.failed:
        sys.exit(1)


# --- jobs -------------------------------------------------------------------------------------
@main.command()
@click.argument("request_file", type=click.File("r"), required=False)
@click.option("--text", help="The instruction or question.")
@click.option("--doc", "document_id", help="Id of an ingested document.")
@click.option("--tenant", default="default", show_default=True)
@click.option("--intent", "intent_hint", help="Skip classification with this intent.")
@click.option("--wait/--no-wait", default=None, help="Wait for the record (always in embedded mode).")
@click.option("--timeout", type=float, default=120.0, show_default=True)
@click.option("--answer-only", is_flag=True, help="Print only the answer (or the summary), not the whole record.")
def submit(request_file: Any, text: str | None, document_id: str | None, tenant: str, intent_hint: str | None,
           wait: bool | None, timeout: float, answer_only: bool) -> None:
    """Submit one job, from a JSON request (file or '-') or from options. Prints the job id."""
    from workers.client import JobFailed, parse_request

    if request_file is not None:
        raw: dict[str, Any] = json.load(request_file)
    else:
        raw = {"text": text or "", "tenant": tenant}
        if document_id:
            raw["document_id"] = document_id
        if intent_hint:
            raw["intent_hint"] = intent_hint
    try:
        request = parse_request(raw)
    except ConveyorError as exc:
        raise click.ClickException(str(exc)) from exc
    settings = _settings()
    must_wait = settings.embedded or bool(wait)
    with _runtime(settings, need_worker=settings.embedded) as rt:
        job_id = rt.client.submit(request)
        if not answer_only:
            click.echo(job_id)
        if must_wait or answer_only:
            try:
                record = rt.client.result(job_id, timeout=timeout)
            except (JobFailed, TimeoutError) as exc:
                raise click.ClickException(str(exc)) from exc
            if answer_only:
                output = record.output
                click.echo(output.get("answer") or output.get("summary") or json.dumps(output, ensure_ascii=False))
            else:
                _echo_json(record.model_dump(mode="json"))


@main.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """Show a job's state (queued, running, succeeded, failed) and stage."""
    with _runtime(_settings(), need_worker=False) as rt:
        try:
            _echo_json(rt.client.status(job_id).model_dump(mode="json"))
        except KeyError as exc:
            raise click.ClickException(str(exc)) from exc


@main.command()
@click.argument("job_id")
@click.option("--timeout", type=float, default=0.0, show_default=True, help="Seconds to wait for it.")
def result(job_id: str, timeout: float) -> None:
    """Print a job's record as JSON (exit 1 if it failed or is not done)."""
    from workers.client import JobFailed

    with _runtime(_settings(), need_worker=False) as rt:
        try:
            _echo_json(rt.client.result(job_id, timeout=timeout).model_dump(mode="json"))
        except (JobFailed, TimeoutError) as exc:
            raise click.ClickException(str(exc)) from exc


# --- workers ----------------------------------------------------------------------------------
@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--queues", "-Q", default=",".join(QUEUES),
              show_default=True, help="Comma-separated queues to consume.")
@click.option("--pool", "-P", default="prefork", show_default=True,
              type=click.Choice(["prefork", "threads", "solo"]), help="threads for I/O-bound queues (llm).")
@click.option("--concurrency", "-c", type=int, default=None, help="Processes or threads (default: cores).")
@click.option("--loglevel", "-l", default=None, help="Default: CONVEYOR_LOG_LEVEL (INFO).")
@click.option("--hostname", "-n", default=None,
              help="Node name, e.g. llm@%h (default: the queues and a random suffix, e.g. llm-3f9a1c@%h).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus metrics on this port, all interfaces (default: CONVEYOR_METRICS_PORT, else off).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(queues: str, pool: str, concurrency: int | None, loglevel: str | None, hostname: str | None,
           metrics_port: int | None, celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker for some queues (distributed mode).

    Example: conveyor worker --queues llm --pool threads --concurrency 32 --metrics-port 9100
    """
    settings = _settings()
    if settings.embedded:
        raise click.ClickException("CONVEYOR_BROKER_URL is not set: workers need a broker (e.g. redis://...)")
    unknown = [q for q in queues.split(",") if q not in QUEUES]
    if unknown:
        raise click.ClickException(f"unknown queue(s) {unknown}; queues are {', '.join(QUEUES)}")
    metrics_port = metrics_port or settings.metrics_port
    if metrics_port:  # before anything imports prometheus_client (workers/exporter.py says why)
        from workers.exporter import use_private_multiprocess_dir

        try:
            use_private_multiprocess_dir()
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from exc
    from workers.app import create_app

    app = create_app(settings)
    app.set_default()  # pool threads/processes trace tasks with the default app
    app.conveyor_queues = queues.split(",")
    if pool != "prefork":  # tasks run in this process: warm it now (prefork children warm after fork)
        from workers.signals import warm_up_worker

        warm_up_worker(app)
    if metrics_port:
        from workers.exporter import serve

        try:
            serve(app, metrics_port)
        except OSError as exc:
            raise click.ClickException(f"cannot serve metrics on port {metrics_port}: {exc}") from exc
    argv = ["worker", "-Q", queues, "-P", pool, "-l", loglevel or settings.log_level, "-E"]
    if settings.log_format == "json":  # no startup banner: every line of the output is a JSON log record
        argv.insert(0, "--quiet")
    if concurrency:
        argv += ["-c", str(concurrency)]
    # unique by default: workers that share a node name look like one worker to Flower and `inspect`
    argv += ["-n", hostname or default_node_name(queues)]
    app.worker_main(argv + list(celery_args))


def default_node_name(queues: str) -> str:
    """``<queues>-<6 hex>@%h``: unique per worker process, and says what it consumes."""
    import uuid

    return f"{queues.replace(',', '-')}-{uuid.uuid4().hex[:6]}@%h"


# --- documents --------------------------------------------------------------------------------
@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--tenant", default="default", show_default=True)
def ingest(paths: tuple[Path, ...], tenant: str) -> None:
    """Read .md/.txt/.html files (or folders), chunk them by section and upsert into Qdrant."""
    from pipeline.guard.screening import screen
    from pipeline.retrieval.ingest import ingest_paths

    settings = _settings()
    with _runtime(settings, need_worker=False) as rt:
        components = rt.components
        try:
            report = ingest_paths(list(paths), tenant=tenant, store=components.vector_store,
                                  embedder=components.embedder, max_tokens=settings.chunk_max_tokens,
                                  overlap=settings.chunk_overlap_tokens,
                                  screen=screen if settings.screen_at_ingest else None)
        except ConveyorError as exc:
            raise click.ClickException(str(exc)) from exc
    _echo_json({**dataclasses.asdict(report), "chunks_per_second": round(report.chunks_per_second, 1)})


@main.command()
@click.argument("query")
@click.option("--doc", "doc_id", default=None)
@click.option("--tenant", default=None)
@click.option("--k", type=int, default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def search(query: str, doc_id: str | None, tenant: str | None, k: int, as_json: bool) -> None:
    """Dense search over ingested chunks."""
    with _runtime(_settings(), need_worker=False) as rt:
        components = rt.components
        vector = components.embedder.embed_one(query)
        hits = components.vector_store.search(vector, k=k, tenant=tenant, doc_ids=[doc_id] if doc_id else None)
    results = [{"doc_id": h.doc_id, "chunk_id": h.chunk_id, "section": h.section, "score": round(h.score, 4),
                "text": h.text} for h in hits]
    if as_json:
        click.echo(json.dumps({"query": query, "results": results}, ensure_ascii=False))
        return
    for r in results:
        click.echo(f"{r['score']:.3f}  {r['doc_id']}  {r['section'][:40]:40}  {r['text'][:80]!r}")


@main.command()
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def classify(text: str, as_json: bool) -> None:
    """Classify a request's intent (summarize, question, extract, risk, other)."""
    with _runtime(_settings(), need_worker=False) as rt:
        prediction = rt.components.intent_classifier.classify(text)
    payload = {"intent": str(prediction.intent), "confidence": round(float(prediction.confidence), 4)}
    click.echo(json.dumps(payload) if as_json else f"{payload['intent']} ({payload['confidence']:.2f})")


# --- guardrails -------------------------------------------------------------------------------
@main.group()
def guard() -> None:
    """Guardrail tools for operators."""


@guard.command("scan")
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False), default="-")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--jsonl", "as_jsonl", is_flag=True, help='SOURCE has one {"text": ...} per line; print one verdict per line.'
)
def guard_scan(source: str, as_json: bool, as_jsonl: bool) -> None:
    """Check a document (FILE or - for stdin) for injected instructions and PII before ingesting it.

    A .pdf, .html, .md ... file is scanned as the text ingest would extract from it. Each block
    goes through the rules and the learned model; the verdict names which fired. With --jsonl,
    each line's text is one verdict line ({"line", "injection", "score", "fired_by", ...}).
    Exit status 1 when an injection is found, so it can gate an ingest script.
    """
    from pipeline.guard import scan_text
    from pipeline.guard.injection import detect_injection_many
    from pipeline.guard.scan import verdict_json

    if as_jsonl:
        raw = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        numbered = [(n, line) for n, line in enumerate(raw.splitlines(), start=1) if line.strip()]
        try:
            texts = [str(json.loads(line)["text"]) for _, line in numbered]
        except (ValueError, KeyError, TypeError) as exc:
            raise click.ClickException(f'--jsonl expects one {{"text": ...}} object per line: {exc}') from exc
        any_flagged = False
        for (number, _), result in zip(numbered, detect_injection_many(texts), strict=True):
            any_flagged = any_flagged or result.flagged
            click.echo(json.dumps({"line": number, **verdict_json(result)}))
        if any_flagged:
            sys.exit(1)
        return
    if source == "-":
        text = sys.stdin.read()
    else:
        from pipeline.errors import InvalidInput
        from pipeline.retrieval.ingest import SUPPORTED_SUFFIXES, read_document

        if Path(source).suffix.lower() in SUPPORTED_SUFFIXES:
            try:
                text = read_document(source)[1]
            except InvalidInput as exc:
                raise click.ClickException(exc.message) from exc
        else:
            text = Path(source).read_text(encoding="utf-8")
    report = scan_text(text)
    if as_json:
        click.echo(json.dumps(report))
    else:
        fired = f", fired: {report['fired_by']}" if report["fired_by"] else ""
        click.echo(f"injection: {report['injection']} (score {report['injection_score']:.2f}{fired})")
        click.echo(f"pii: {len(report['pii'])} match(es): " + ", ".join(sorted({p['type'] for p in report['pii']})))
        for reason in report["reasons"]:
            click.echo(f"  - {reason}")
    if report["injection"]:
        sys.exit(1)


# --- dead letters -----------------------------------------------------------------------------
@main.group()
def dlq() -> None:
    """Inspect and replay dead letters (jobs that failed for good)."""


@contextmanager
def _dlq_errors() -> Iterator[None]:
    """A Conveyor error (state store or broker unreachable...) is one line and exit 1, no traceback."""
    try:
        yield
    except ConveyorError as exc:
        raise click.ClickException(exc.message) from exc


class _Age(click.ParamType):
    """``90s``, ``10m``, ``2h``, ``7d`` (or plain seconds)."""

    name = "age"
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        text = str(value).strip()
        number, unit = (text[:-1], text[-1]) if text[-1:] in self._UNITS else (text, "s")
        try:
            seconds = float(number) * self._UNITS[unit]
        except ValueError:
            self.fail(f"{value!r} is not an age (use e.g. 90s, 10m, 2h, 7d)", param, ctx)
        if seconds < 0:
            self.fail(f"{value!r} is negative", param, ctx)
        return timedelta(seconds=seconds)


def _letter_filters(f: Any) -> Any:
    """The filters `dlq list` and `dlq replay` share."""
    for option in reversed([
        click.option("--batch", "batch_id", default=None, help="Only this batch id."),
        click.option("--class", "failure_class", default=None, help="Only this failure class (e.g. invalid_input)."),
        click.option("--stage", type=click.Choice(STAGES), default=None, help="Only letters of this failed stage."),
        click.option("--older-than", type=_Age(), default=None, help="Only letters older than this (10m, 2h, 7d)."),
    ]):
        f = option(f)
    return f


def _echo_letter_table(page: list[Any]) -> None:
    rows = [[s.dead_letter_id, f"{s.created_at:%Y-%m-%d %H:%M:%S}", s.job_id, s.stage,
             s.failure_class + (" (retries exhausted)" if s.retries_exhausted else ""), s.batch_id or "-",
             s.document_id or "-", s.custom_id or "-", str(s.attempts), s.state, s.error_message[:60]]
            for s in page]
    header = ["id", "created", "job", "stage", "class", "batch", "document", "custom id", "attempts", "state",
              "error"]
    from workers.tables import plain_table

    click.echo(plain_table(header, rows, rule=False))


@dlq.command("list")
@click.option("--state", type=click.Choice(["open", "replayed", "any"]), default="open", show_default=True)
@click.option("--all", "show_all", is_flag=True, help="Include replayed dead letters (= --state any).")
@_letter_filters
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True, help="Skip this many (next page).")
@click.option("--json", "as_json", is_flag=True, help="Print the summaries as a JSON list.")
def dlq_list(state: str, show_all: bool, batch_id: str | None, failure_class: str | None, stage: str | None,
             older_than: timedelta | None, limit: int, offset: int, as_json: bool) -> None:
    """List dead letters, newest first, one page at a time; filters combine."""
    from pipeline.state import LetterFilter

    where = LetterFilter(state=None if show_all or state == "any" else state, batch_id=batch_id,
                         failure_class=failure_class, stage=stage,
                         created_before=datetime.now(UTC) - older_than if older_than else None)
    with _dlq_errors(), _runtime(_settings(), need_worker=False) as rt:
        page = rt.components.state.dead_letter_page(where, limit=limit, offset=offset)
    if as_json:
        _echo_json([s.model_dump(mode="json") for s in page])
        return
    if not page:
        click.echo("no dead letters")
        return
    _echo_letter_table(page)
    if len(page) == limit:
        click.echo(f"(more may follow: --offset {offset + limit})")


@dlq.command("show")
@click.argument("dead_letter_id")
def dlq_show(dead_letter_id: str) -> None:
    """Print one dead letter in full, including the original request."""
    with _dlq_errors(), _runtime(_settings(), need_worker=False) as rt:
        letter = rt.components.state.get_dead_letter(dead_letter_id)
    if letter is None:
        raise click.ClickException(f"no dead letter {dead_letter_id!r}")
    _echo_json(letter.model_dump(mode="json"))


@dlq.command("replay")
@click.argument("dead_letter_id", required=False)
@click.option("--request", "request_file", type=click.File("r"), default=None,
              help="A corrected request (JSON) to use instead of the original; keeps the job id.")
@_letter_filters
@click.option("--dry-run", is_flag=True, help="With filters: list what would be replayed, change nothing.")
@click.option("--wait/--no-wait", default=None, help="Wait for the outcome (always in embedded mode).")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait per job.")
def dlq_replay(dead_letter_id: str | None, request_file: Any, batch_id: str | None, failure_class: str | None,
               stage: str | None, older_than: timedelta | None, dry_run: bool, wait: bool | None,
               timeout: float) -> None:
    """Send dead-lettered jobs back into the chain at the stage that failed.

    One letter by ID, or every open letter matching the filters (at least one of --batch,
    --class, --stage, --older-than). Each job is enqueued before its letter is marked replayed:
    a letter whose job could not be enqueued stays open.
    """
    filtered = any(v is not None for v in (batch_id, failure_class, stage, older_than))
    if dead_letter_id and (filtered or dry_run):
        raise click.UsageError("give either a dead letter ID or filters, not both")
    if not dead_letter_id and not filtered:
        raise click.UsageError("give a dead letter ID, or at least one of --batch, --class, --stage, --older-than")
    if request_file is not None and not dead_letter_id:
        raise click.UsageError("--request replaces the request of one letter: give its ID")
    settings = _settings()
    with _dlq_errors(), _runtime(settings, need_worker=settings.embedded and not dry_run) as rt:
        if dead_letter_id:
            job_ids = [_replay_one(rt, dead_letter_id, request_file)]
        else:
            job_ids = _replay_filtered(rt, batch_id, failure_class, stage, older_than, dry_run)
        if job_ids and (settings.embedded or wait):
            _wait_for_replays(rt, job_ids, timeout)


def _replay_one(rt: Any, dead_letter_id: str, request_file: Any) -> str:
    from pydantic import ValidationError

    from workers.deadletters import replay_dead_letter

    fixed = json.load(request_file) if request_file is not None else None
    try:
        letter = replay_dead_letter(rt.app, rt.components.state, dead_letter_id, fixed_request=fixed)
    except (KeyError, ValueError, ValidationError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"replayed job {letter.job_id} at stage {letter.stage}")
    return letter.job_id


def _replay_filtered(rt: Any, batch_id: str | None, failure_class: str | None, stage: str | None,
                     older_than: timedelta | None, dry_run: bool) -> list[str]:
    from pipeline.state import LetterFilter
    from workers.deadletters import replay_matching

    where = LetterFilter(batch_id=batch_id, failure_class=failure_class, stage=stage,
                         created_before=datetime.now(UTC) - older_than if older_than else None)
    report = replay_matching(rt.app, rt.components.state, where, dry_run=dry_run)
    if dry_run:
        if report.matched:
            _echo_letter_table(report.matched)
        click.echo(f"dry run: {len(report.matched)} dead letter(s) would be replayed; nothing changed")
        return []
    for summary, reason in [*report.skipped, *report.not_enqueued]:
        click.echo(f"{summary.dead_letter_id}  job={summary.job_id}: {reason}")
    click.echo(f"replayed {len(report.replayed)}, failed to enqueue {len(report.not_enqueued)}, "
               f"skipped {len(report.skipped)}, not tried {len(report.not_tried)} "
               f"of {len(report.matched)} matching dead letter(s)")
    if report.not_enqueued:
        raise click.ClickException("stopped at the first job that could not be enqueued; "
                                   f"{len(report.not_enqueued) + len(report.not_tried)} dead letter(s) stay open")
    return [s.job_id for s in report.replayed]


def _wait_for_replays(rt: Any, job_ids: list[str], timeout: float) -> None:
    """Embedded mode must wait: its in-memory queue ends with this command."""
    from workers.client import JobFailed

    failed = 0
    for job_id in job_ids:
        try:
            record = rt.client.result(job_id, timeout=timeout)
        except (JobFailed, TimeoutError) as exc:
            failed += 1
            click.echo(f"job {job_id}: {exc}", err=True)
        else:
            click.echo(f"job {record.job_id} succeeded: guard={record.guard.verdict}")
    if failed:
        raise click.ClickException(f"{failed} of {len(job_ids)} replayed job(s) did not succeed")


# --- operations -------------------------------------------------------------------------------
@main.command("config")
@click.option("--json", "as_json", is_flag=True)
def config_(as_json: bool) -> None:
    """The effective settings (environment and defaults), secrets masked."""
    from pipeline.settings import ENV_PREFIX

    settings = _settings()
    shown = {ENV_PREFIX + name.upper(): value for name, value in settings.model_dump(mode="json").items()}
    for name, field in type(settings).model_fields.items():
        if "SecretStr" in repr(field.annotation) and getattr(settings, name) is not None:
            shown[ENV_PREFIX + name.upper()] = "**********"
    for name in ("CONVEYOR_BROKER_URL", "CONVEYOR_REDIS_URL"):  # a password inside a URL
        if shown.get(name):
            from kombu.utils.url import maybe_sanitize_url

            shown[name] = maybe_sanitize_url(str(shown[name]))
    if as_json:
        _echo_json(shown)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="effective settings")
    table.add_column("variable")
    table.add_column("value")
    for name, value in shown.items():
        table.add_row(name, json.dumps(value) if not isinstance(value, str) else value)
    Console().print(table)



@main.command()
@click.option("--older-than", type=_Age(), default=None,
              help="A job whose status has not moved for this long is stalled; keep it above the longest "
                   "stage run plus retry and re-queue countdowns. Default: CONVEYOR_RECONCILE_AFTER_S (30m).")
@click.option("--dry-run", is_flag=True, help="List what would be done; change nothing.")
@click.option("--json", "as_json", is_flag=True)
def reconcile(older_than: timedelta | None, dry_run: bool, as_json: bool) -> None:
    """Bring stalled jobs to an end: re-enqueue each at its last checkpoint, or dead-letter it as interrupted.

    Workers run the same check every CONVEYOR_RECONCILE_INTERVAL_S; this is the operator's handle."""
    from workers.reconcile import reconcile as run_reconcile

    settings = _settings()
    bound = older_than or timedelta(seconds=settings.reconcile_after_s)
    with _runtime(settings, need_worker=False) as rt, _dlq_errors():
        report = run_reconcile(rt.app, rt.components.state, older_than=bound, dry_run=dry_run)
    if as_json:
        _echo_json(dataclasses.asdict(report))
        return
    verb = "would be" if dry_run else "were"
    click.echo(f"{report.stalled} stalled job(s): {len(report.requeued)} {verb} re-enqueued, "
               f"{len(report.dead_lettered)} {verb} dead-lettered as interrupted, "
               f"{len(report.finished)} had finished")


@main.command()
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one frame and exit (scripts); rates need two frames.")
def top(interval: float, once: bool) -> None:
    """A live view of queues, workers, throughput, open dead letters by class, and batches with cost.

    Ids, names and counts only. Ctrl-C ends it."""
    from workers.top import TopCollector, run

    settings = _settings()
    with _runtime(settings, need_worker=False) as rt, _dlq_errors():
        run(TopCollector(rt.app, rt.components.state, settings.broker_url), interval=interval, once=once)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Interface to bind; 0.0.0.0 exposes Flower (behind basic auth) to the network.")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(port: int, address: str, flower_args: tuple[str, ...]) -> None:
    """Run Flower against the broker, behind basic auth (CONVEYOR_FLOWER_BASIC_AUTH=user:password).

    It binds 127.0.0.1 unless --address says otherwise. Other Flower options pass through,
    e.g. `conveyor flower --port 5555 --max_tasks=5000`.
    """
    settings = _settings()
    if settings.embedded:
        raise click.ClickException("Flower needs a broker: set CONVEYOR_BROKER_URL")
    if settings.flower_basic_auth is None or ":" not in settings.flower_basic_auth.get_secret_value():
        raise click.ClickException("refusing to start Flower without auth: set CONVEYOR_FLOWER_BASIC_AUTH=user:pass")
    from workers.app import create_app

    app = create_app(settings)
    # through Flower's environment, not argv: a command line is visible to every user in `ps`
    os.environ["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
    app.start(["flower", f"--port={port}", f"--address={address}", *flower_args])


# --- evaluation ---------------------------------------------------------------------------------
@main.command("eval")
@click.argument("suites", nargs=-1, type=click.Choice(["summary-fields", "questions", "intents", "injections"]))
@click.option("--thresholds", "thresholds_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML of minimums ([suite] metric = min, [suite.max] metric = max). Default: evals/thresholds.toml.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the whole report (metrics, items, misses) here.")
@click.option("--compare", "compare", multiple=True, metavar="KEY=VALUE,...",
              help="A configuration to run side by side (provider=extractive|llm, base_url=, model=, "
                   "prompt_version=, or any setting). Once: against the current settings; twice: the two.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N golden contracts.")
@click.option("--intents-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Another intents suite (JSONL of {text, intent}).")
@click.option("--injections-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Another injections suite (JSONL of {text, injection}).")
@click.option("--summary-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Another summary golden set: a folder with contracts/ and key.jsonl (the key's format).")
@click.option("--gate/--no-gate", default=True, show_default=True, help="Exit 1 when a metric misses its threshold.")
def eval_(suites: tuple[str, ...], thresholds_path: Path | None, json_out: Path | None, compare: tuple[str, ...],
          limit: int | None, intents_file: Path | None, injections_file: Path | None, summary_dir: Path | None,
          gate: bool) -> None:
    """Run the golden suites (default: all) through the pipeline offline; print a table, write JSON, gate.

    Exits 1 when a metric falls below its threshold in evals/thresholds.toml (with --compare: in any
    configuration)."""
    from rich.console import Console

    from workers import evaluation as ev

    chosen = list(suites) or list(ev.SUITES)
    path = thresholds_path or ev.EVALS / "thresholds.toml"
    try:
        thresholds = ev.load_thresholds(path) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read thresholds {path}: {exc}") from exc
    if thresholds_path is not None and not thresholds_path.is_file():
        raise click.ClickException(f"thresholds file not found: {thresholds_path}")
    if len(compare) > 2:
        raise click.ClickException("--compare takes one or two configurations")
    reports: list[tuple[str, dict[str, Any]]] = []
    if compare:
        try:
            configs = [ev.parse_config(spec) for spec in compare]
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        if len(configs) == 1:
            configs.insert(0, {})
        args = [*chosen] + (["--limit", str(limit)] if limit else [])
        args += ["--intents-file", str(intents_file)] if intents_file else []
        args += ["--injections-file", str(injections_file)] if injections_file else []
        args += ["--summary-dir", str(summary_dir.resolve())] if summary_dir else []
        for config in configs:
            try:
                reports.append((ev.config_label(config), ev.run_config_subprocess(config, args)["suites"]))
            except (ValueError, RuntimeError) as exc:
                raise click.ClickException(str(exc)) from exc
    else:
        base = _settings()
        label = f"{base.llm_model} @ {base.llm_base_url}" if base.llm_base_url else "extractive"

        def make(data_dir: Path | None) -> Settings:
            return _settings(data_dir=data_dir)

        if summary_dir is not None and not (summary_dir / "key.jsonl").is_file():
            raise click.ClickException(f"{summary_dir} has no key.jsonl")
        reports.append((label, ev.run(chosen, make, intents_file=intents_file, injections_file=injections_file,
                                      summary_dir=summary_dir, limit=limit)))
    failures = {label: ev.gate(report, thresholds) for label, report in reports}
    console = Console()
    console.print(ev.render(reports, thresholds))
    for label, report in reports:
        for line in ev.misses(report):
            click.echo(f"  [{label}] {line}" if len(reports) > 1 else f"  {line}")
    if json_out:
        payload: dict[str, Any] = {"suites": reports[0][1], "thresholds": thresholds,
                                   "failures": failures[reports[0][0]]}
        if len(reports) > 1:
            payload["compare"] = [{"config": label, "suites": report, "failures": failures[label]}
                                  for label, report in reports]
        json_out.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    failed = [f"[{label}] {line}" if len(reports) > 1 else line for label, lines in failures.items() for line in lines]
    if failed and gate:
        raise click.ClickException("below threshold: " + "; ".join(failed))
    click.echo("all metrics within thresholds" if not failed else "below threshold (not gated): " + "; ".join(failed))


def _register_batch() -> None:
    from workers import batch_cli

    batch_cli.register(main, _runtime, _settings, _dlq_errors)


_register_batch()


if __name__ == "__main__":  # pragma: no cover
    main()
