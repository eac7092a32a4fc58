"""``conveyor top``: a live terminal view of queues, workers, throughput, dead letters and batches.

``TopCollector.collect`` takes one ``Snapshot`` (plain data, no rich); ``render`` turns a snapshot
and the one before it into a rich renderable. The rates (jobs/s, items/s per batch, stage runs/s
per worker) are differences of counters between the two snapshots, so the first frame has none.

What is read, each refresh:

- queue depth: ``SampledGauges.queue_depths`` (the exporter's reader: kombu's per-priority Redis
  lists, a passive declare on RabbitMQ);
- workers: ``app.control.inspect`` (``stats`` within ``inspect_timeout``, then ``active_queues`` and
  ``active`` from the workers that answered); a worker seen before that no longer answers is listed
  as not answering;
- batches: ``recent_batches`` (the exporter's: counters of unfinished batches and of batches
  created in the last 24 hours);
- dead letters: summaries of open letters, paged from the store's index (never a letter's body),
  counted by failure class up to ``DLQ_COUNT_LIMIT``.

Only ids, names and counts are shown: never a request's text, a document or an error message.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from pipeline.errors import ProviderUnavailable
from pipeline.state import LetterFilter, StateStore
from schemas import QUEUES
from workers.exporter import SampledGauges, batch_pending, recent_batches

#: open dead letters counted per refresh (summaries only); beyond it the counts say "at least".
DLQ_COUNT_LIMIT = 10_000
_DLQ_PAGE = 1000
#: batch rows shown; the rest are summed up in one line.
BATCH_ROWS = 12


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    answering: bool = True
    queues: tuple[str, ...] = ()
    pool: str = ""
    concurrency: int | None = None
    active: int = 0
    processed: int = 0  # stage runs since the worker started, all task names


@dataclass(frozen=True)
class BatchProgress:
    batch_id: str
    state: str  # running, cancelling, completed, completed_with_errors, cancelled
    submitted: int
    succeeded: int
    failed: int
    pending: int
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_jobs: int = 0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Snapshot:
    """One reading of everything ``conveyor top`` shows. ``queues``/``workers`` are None when there is
    no broker to ask (embedded mode) or it did not answer (then ``problems`` says so)."""

    taken_at: float  # time.monotonic(), for rates
    at: datetime
    broker: str  # sanitized: no password
    queues: dict[str, int] | None
    workers: list[WorkerInfo] | None
    dead_letters: dict[str, int]
    dead_letters_capped: bool = False
    batches: list[BatchProgress] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def finished(self) -> dict[str, int]:
        """Settled jobs (succeeded + failed) per batch: the throughput's counter."""
        return {b.batch_id: b.done for b in self.batches}

    @property
    def running(self) -> list[BatchProgress]:
        return [b for b in self.batches if b.pending]


def _label(info: Any, pending: int, failed: int) -> str:
    if info.state == "cancelled":
        return "cancelling" if pending else "cancelled"
    if pending:
        return "running"
    return "completed" if failed == 0 else "completed_with_errors"


def _pool_name(pool: dict[str, Any]) -> str:
    implementation = str(pool.get("implementation", ""))  # celery.concurrency.prefork:TaskPool
    name = implementation.split(":")[0].rsplit(".", 1)[-1]
    return {"thread": "threads"}.get(name, name)


class TopCollector:
    """Reads one ``Snapshot`` from the broker, the workers and the state store."""

    def __init__(self, app: Any, state: StateStore, broker_url: str | None, *, inspect_timeout: float = 1.0,
                 dlq_limit: int = DLQ_COUNT_LIMIT) -> None:
        from kombu.utils.url import maybe_sanitize_url

        self.app = app
        self.state = state
        self.broker_url = broker_url or ""
        self.broker = maybe_sanitize_url(self.broker_url) if self.broker_url else "none (embedded mode)"
        self.inspect_timeout = inspect_timeout
        self.dlq_limit = dlq_limit
        self._gauges = SampledGauges(self.broker_url, lambda: state, QUEUES)
        self._seen: set[str] = set()

    def collect(self) -> Snapshot:
        problems: list[str] = []
        queues = workers = None
        if self.broker_url:
            try:
                queues = self._queue_depths()
            except Exception as exc:  # the frame says so; the first frame ends the command
                problems.append(f"broker unreachable at {self.broker}: {type(exc).__name__}")
            else:
                try:
                    workers = self._workers()
                except Exception as exc:
                    problems.append(f"workers did not answer inspect: {type(exc).__name__}")
        try:
            letters, capped = self._dead_letters()
            batches = self._batches()
        except Exception as exc:  # ProviderUnavailable names the store's host, never its URL
            problems.append(exc.message if isinstance(exc, ProviderUnavailable)
                            else f"state store unreadable: {type(exc).__name__}")
            letters, capped, batches = {}, False, []
        return Snapshot(taken_at=time.monotonic(), at=datetime.now(UTC), broker=self.broker, queues=queues,
                        workers=workers, dead_letters=letters, dead_letters_capped=capped, batches=batches,
                        problems=problems)

    def _queue_depths(self) -> dict[str, int]:
        from workers.app import is_amqp

        if is_amqp(self.broker_url):  # a passive declare that fails only leaves its queue out: ask first
            from kombu import Connection

            with Connection(self.broker_url, connect_timeout=5) as conn:
                conn.ensure_connection(max_retries=1)
        return self._gauges.queue_depths()

    def _workers(self) -> list[WorkerInfo]:
        inspect = self.app.control.inspect(timeout=self.inspect_timeout)
        stats: dict[str, Any] = inspect.stats() or {}
        found: dict[str, WorkerInfo] = {}
        if stats:  # the rest only from those that answered, and no longer than it takes them
            names = sorted(stats)
            fast = self.app.control.inspect(destination=names, limit=len(names), timeout=self.inspect_timeout)
            queues: dict[str, Any] = fast.active_queues() or {}
            active: dict[str, Any] = fast.active() or {}
            for name in names:
                pool = stats[name].get("pool") or {}
                total = stats[name].get("total") or {}
                found[name] = WorkerInfo(
                    name=name, queues=tuple(sorted(q.get("name", "?") for q in queues.get(name) or [])),
                    pool=_pool_name(pool), concurrency=pool.get("max-concurrency"),
                    active=len(active.get(name) or []), processed=sum(int(n) for n in total.values()))
        self._seen |= set(found)
        missing = [WorkerInfo(name=name, answering=False) for name in sorted(self._seen - set(found))]
        return [found[name] for name in sorted(found)] + missing

    def _dead_letters(self) -> tuple[dict[str, int], bool]:
        """Open letters by failure class, from their summaries, newest first, at most ``dlq_limit`` of them;
        True when more are open."""
        counts: Counter[str] = Counter()
        seen, where = 0, LetterFilter(state="open")
        while seen < self.dlq_limit:
            wanted = min(_DLQ_PAGE, self.dlq_limit - seen)
            page = self.state.dead_letter_page(where, limit=wanted, offset=seen)
            counts.update(s.failure_class for s in page)
            seen += len(page)
            if len(page) < wanted:
                return dict(counts), False
        return dict(counts), bool(self.state.dead_letter_page(where, limit=1, offset=seen))

    def _batches(self) -> list[BatchProgress]:
        found = []
        for info, c in recent_batches(self.state):
            pending = batch_pending(c)
            found.append(BatchProgress(
                batch_id=info.batch_id, state=_label(info, pending, c.get("failed", 0)),
                submitted=c.get("submitted", 0), succeeded=c.get("succeeded", 0), failed=c.get("failed", 0),
                pending=pending, llm_calls=c.get("llm_calls", 0), prompt_tokens=c.get("prompt_tokens", 0),
                completion_tokens=c.get("completion_tokens", 0), cost_usd=c.get("cost_micro_usd", 0) / 1e6,
                unpriced_jobs=c.get("unpriced_jobs", 0)))
        # unfinished first, then newest (recent_batches is newest first and sorted() is stable)
        return sorted(found, key=lambda b: b.pending == 0)


# --- rates ---------------------------------------------------------------------------------------
def _elapsed(now: Snapshot, before: Snapshot | None) -> float | None:
    if before is None or now.taken_at <= before.taken_at:
        return None
    return now.taken_at - before.taken_at


def throughput(now: Snapshot, before: Snapshot | None) -> float | None:
    """Jobs settled (succeeded + failed) per second between two snapshots, over the batches both
    saw; None for the first snapshot. A replay lowers ``failed``: never below 0."""
    elapsed = _elapsed(now, before)
    if elapsed is None or before is None:
        return None
    old = before.finished
    return max(0, sum(done - old[b] for b, done in now.finished.items() if b in old)) / elapsed


def batch_rate(batch: BatchProgress, now: Snapshot, before: Snapshot | None) -> float | None:
    elapsed = _elapsed(now, before)
    if elapsed is None or before is None or batch.batch_id not in before.finished:
        return None
    return max(0, batch.done - before.finished[batch.batch_id]) / elapsed


def worker_rate(worker: WorkerInfo, now: Snapshot, before: Snapshot | None) -> float | None:
    elapsed = _elapsed(now, before)
    old = {w.name: w for w in (before.workers or [])} if before is not None else {}
    previous = old.get(worker.name)
    if elapsed is None or previous is None or not (worker.answering and previous.answering):
        return None
    return max(0, worker.processed - previous.processed) / elapsed


# --- rendering -----------------------------------------------------------------------------------
def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _cost(usd: float, unpriced: int, sep: str = " ") -> str:
    return f"${usd:.4f}" + (f"{sep}(+{unpriced} unpriced)" if unpriced else "")


def _eta(pending: int, rate: float | None) -> str:
    if not pending:
        return "-"
    if not rate:
        return "—"
    seconds = int(pending / rate)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def render(now: Snapshot, before: Snapshot | None = None) -> RenderableType:
    """The frame: a header line, then queues, workers, dead letters and batches."""
    running = now.running
    rate = throughput(now, before)
    header = Text.assemble(
        ("conveyor top", "bold"), f"  {now.at:%Y-%m-%d %H:%M:%S} UTC  broker {now.broker}\n",
        "throughput ", (_rate(rate), "bold"), " jobs/s · ", (str(len(running)), "bold"), " running batch(es): ",
        f"{sum(b.tokens for b in running)} tokens, "
        f"{_cost(sum(b.cost_usd for b in running), sum(b.unpriced_jobs for b in running))} so far")
    parts: list[RenderableType] = [header]
    parts += [Text(f"! {problem}", style="bold red") for problem in now.problems]
    side_by_side = Table.grid(padding=(0, 4))
    side_by_side.add_row(_queues(now), _dead_letters(now))
    parts += [side_by_side, _workers(now, before), _batches(now, before)]
    return Group(*parts)


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                 collapse_padding=True)


def _queues(now: Snapshot) -> RenderableType:
    table = _table("queues")
    table.add_column("queue")
    table.add_column("waiting", justify="right")
    table.add_column("consumers", justify="right")
    if now.queues is None:
        table.add_row("—", "no broker" if not now.problems else "not answering", "")
        return table
    consumers = Counter(q for w in now.workers or [] if w.answering for q in w.queues)
    for queue, depth in now.queues.items():
        idle = depth and not consumers[queue]  # work waiting and nobody to take it
        table.add_row(queue, str(depth), str(consumers[queue]), style="bold red" if idle else None)
    return table


def _workers(now: Snapshot, before: Snapshot | None) -> RenderableType:
    table = _table("workers")
    for column, justify in (("worker", "left"), ("queues", "left"), ("pool", "left"), ("active", "right"),
                            ("processed", "right"), ("runs/s", "right"), ("state", "left")):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    if not now.workers:
        table.add_row("—", "none answering" if now.workers is not None else "no broker", "", "", "", "", "")
    for w in now.workers or []:
        if not w.answering:
            table.add_row(w.name, "", "", "", "", "", "not answering", style="red")
            continue
        pool = f"{w.pool}×{w.concurrency}" if w.concurrency else w.pool
        table.add_row(w.name, ",".join(w.queues), pool, str(w.active), str(w.processed),
                      _rate(worker_rate(w, now, before)), "ok")
    return table


def _dead_letters(now: Snapshot) -> RenderableType:
    total = sum(now.dead_letters.values())
    table = _table(f"open dead letters: {total}{'+' if now.dead_letters_capped else ''}")
    table.add_column("failure class")
    table.add_column("open", justify="right")
    for name, count in sorted(now.dead_letters.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(name, str(count))
    if not now.dead_letters:
        table.add_row("none", "0")
    elif now.dead_letters_capped:
        table.add_row("(newest counted)", f"{total}+")
    return table


def _batches(now: Snapshot, before: Snapshot | None) -> RenderableType:
    table = _table("batches (unfinished, and created in the last 24 h)")
    for column, justify in (("batch", "left"), ("state", "left"), ("progress", "left"), ("done", "right"),
                            ("failed", "right"), ("items/s", "right"), ("ETA", "right"), ("tokens", "right"),
                            ("cost", "right")):
        table.add_column(column, justify=justify, overflow="fold", no_wrap=column == "progress",  # type: ignore[arg-type]
                         min_width={"batch": 12, "state": 9}.get(column))
    if not now.batches:
        table.add_row("none", *[""] * 8)
    for b in now.batches[:BATCH_ROWS]:
        rate = batch_rate(b, now, before)
        bar = ProgressBar(total=max(b.submitted, 1), completed=b.done, width=10)
        table.add_row(b.batch_id, b.state, bar, f"{b.done}/{b.submitted}", str(b.failed), _rate(rate),
                      _eta(b.pending, rate), str(b.tokens), _cost(b.cost_usd, b.unpriced_jobs, "\n"),
                      style="red" if b.failed else None)
    rest = now.batches[BATCH_ROWS:]
    if rest:
        done, total = sum(b.done for b in rest), sum(b.submitted for b in rest)
        table.add_row(f"+{len(rest)} more", "", "", f"{done}/{total}", str(sum(b.failed for b in rest)), "", "",
                      str(sum(b.tokens for b in rest)),
                      _cost(sum(b.cost_usd for b in rest), sum(b.unpriced_jobs for b in rest), "\n"))
    return table


# --- the command ---------------------------------------------------------------------------------
def run(collector: TopCollector, *, interval: float, once: bool, console: Console | None = None,
        sleep: Callable[[float], None] = time.sleep) -> None:
    """``--once``: one frame. Else refresh every ``interval`` seconds until Ctrl-C (which ends quietly).
    A broker or store that does not answer the first reading raises ``ProviderUnavailable`` (one-line
    error, exit 1); later, the frame says so and the view goes on."""
    console = console or Console()
    try:
        first = collector.collect()
        if first.problems:
            raise ProviderUnavailable(first.problems[0])
        if once:
            console.print(render(first))
            return
        before, now = None, first
        with Live(render(now), console=console, auto_refresh=False, screen=False) as live:
            while True:
                sleep(interval)
                before, now = now, collector.collect()
                live.update(render(now, before), refresh=True)
    except KeyboardInterrupt:
        return
