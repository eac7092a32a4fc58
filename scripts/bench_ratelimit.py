"""The pipeline's shared rate limit vs naive retry-on-429, against one rpm-limited upstream.

    python scripts/bench_ratelimit.py --rpm 120 --duration 60 --json-out bench-ratelimit.json

Each mode gets a fresh FakeOpenAIServer in this process (port 0, ``--latency-ms``) with a
sliding-window limit of ``--rpm`` requests per minute, and runs for ``--duration`` seconds:

* conveyor: the real pipeline. Four ``conveyor worker -Q llm -P threads -c 4`` processes and
  one ``-Q guard,record`` worker on the Redis at ``--redis-url`` (db 12 by default, flushed
  before and after: use a db nothing else needs). They get CONVEYOR_LLM_RPM = ``--headroom``
  x the limit (whole rpm: the setting is an integer) and the response cache off, so every job
  calls upstream through the Redis SharedRateLimiter exactly as in production. A batch of
  jobs enters the chain at the generate stage (a ready RetrievalResult, intent "question",
  ``use_cache: false``), larger than the window can absorb, so the llm queue never runs dry;
  afterwards the queues are purged and the workers stopped (SIGTERM, then SIGKILL) by pid.
  Before the window, small warm-up batches run until every llm process has done one job: a
  fresh process pays seconds of one-off set-up on its first job, which long-running workers
  have behind them; that cost is reported (``cold_first_call_s``), ``--no-warmup`` measures it.
* naive: ``--workers`` plain processes calling OpenAICompatProvider with no limiter; a 429
  is retried after the server's Retry-After (as precise as the server gives it:
  retry-after-ms), as a well-behaved client without coordination would.

By default the server's window starts *warm* (as if the previous minute had run at the
limit), which is the steady state of a pipeline that has been busy for a while. A cold,
empty window lets anything burst a full minute's quota in the first second, which
measures the window rather than the client; ``--cold`` runs that anyway.

Figures come from the server's own log over [start, start + duration]: ``calls`` = chat
requests received, ``http_429`` = those answered 429, ``achieved_rpm`` = successful
completions per minute, ``ratio`` = achieved_rpm / limit. The last stdout line is one
JSON object: {"limit_rpm", "conveyor": {...}, "naive": {...}}; ``--json-out`` writes it with
details (pipeline diagnostics: job outcomes, dead letters, stage and per-call retries).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402 - after the repo root is importable

from pipeline.errors import ConveyorError  # noqa: E402
from pipeline.generation.llm.base import ChatMessage, LLMRequest  # noqa: E402
from pipeline.generation.llm.openai_compat import OpenAICompatProvider  # noqa: E402
from scripts.fake_openai_server import FakeOpenAIServer  # noqa: E402

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
THREADS_PER_WORKER = 4
#: a warm shutdown waits for running tasks, and a task may sleep up to the limiter's 60 s max wait
STOP_TIMEOUT_S = 75.0
SUMMARY_KEYS = ("achieved_rpm", "ratio", "calls", "http_429")


# --- measurement (both modes) -------------------------------------------------------------
def _max_in_window(times: list[float], width: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def window_figures(server: FakeOpenAIServer, start: float, duration: float, rpm: int) -> dict[str, Any]:
    """What the upstream saw in [start, start + duration]: its own log is the only fair referee."""
    end = start + duration
    log = [r for r in server.requests_log if r["path"] == "/v1/chat/completions" and start <= r["time"] <= end]
    ok_times = sorted(t for t in server.completion_times if start <= t <= end)
    calls = len(log)
    http_429 = sum(1 for r in log if r["status"] == 429)
    achieved = len(ok_times) / (duration / 60.0)
    return {
        "achieved_rpm": round(achieved, 1),
        "ratio": round(achieved / rpm, 3),
        "calls": calls,
        "http_429": http_429,
        "completions": len(ok_times),
        "http_429_fraction": round(http_429 / calls, 4) if calls else 0.0,
        "max_completions_in_any_60s": _max_in_window(ok_times, 60.0),
        "max_completions_in_any_1s": _max_in_window(ok_times, 1.0),
        "first_call_after_s": round(min(r["time"] for r in log) - start, 3) if log else None,
    }


def open_window(server: FakeOpenAIServer, cold: bool) -> float:
    """Start the measured window now; warm the server's rpm window unless asked for a cold one."""
    start = time.time()
    if not cold:
        server.fill_rate_window()
    return start


# --- naive: plain processes, no limiter, retry on 429 ----------------------------------------
class DeadlineReached(BaseException):
    """Raised from the injected sleep: the run is over (BaseException so no layer swallows it)."""


def naive_worker(index: int, base_url: str, duration: float, ready: Any, go: Any, start_at: Any, results: Any) -> None:
    """One process: build the client here (never before the fork), wait for go, call until the deadline."""
    logging.getLogger("pipeline.generation.llm").setLevel(logging.ERROR)  # it logs every 429 otherwise
    holder: dict[str, float] = {"deadline": float("inf")}

    def sleep(seconds: float) -> None:
        if time.time() + seconds > holder["deadline"]:
            raise DeadlineReached
        time.sleep(seconds)

    provider = OpenAICompatProvider(
        base_url,
        api_key=None,
        default_model="fake-model",
        timeout_s=10.0,
        max_attempts=10_000,
        backoff_base_s=0.05,
        backoff_max_s=1.0,
        retry_after_cap_s=120.0,
        sleep=sleep,
    )
    ready.put(index)
    go.wait()
    holder["deadline"] = start_at.value + duration
    time.sleep(max(0.0, start_at.value - time.time()))
    ok, errors = 0, Counter[str]()
    i = 0
    try:
        while time.time() < holder["deadline"]:
            i += 1
            text = f"Request {index}-{i}. Summarise the clause briefly."
            try:
                provider.complete(LLMRequest(messages=(ChatMessage(role="user", content=text),), max_tokens=64))
                ok += 1
            except ConveyorError as exc:
                errors[exc.failure_class] += 1
    except DeadlineReached:
        pass
    finally:
        provider.close()
    results.put({"worker": index, "ok": ok, "errors": dict(errors)})


def run_naive(args: argparse.Namespace) -> dict[str, Any]:
    """``--workers`` uncoordinated processes; they all start on the same instant."""
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    start_at = ctx.Value("d", 0.0)
    with FakeOpenAIServer(rpm=args.rpm, latency_s=args.latency_ms / 1000.0) as server:
        server.tokens.warm_up()
        procs = [
            ctx.Process(target=naive_worker, args=(i, server.url, args.duration, ready, go, start_at, results))
            for i in range(args.workers)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=120)
        start_at.value = time.time() + 0.5
        go.set()
        time.sleep(max(0.0, start_at.value - 0.01 - time.time()))
        start = open_window(server, args.cold)
        worker_results = [results.get(timeout=args.duration + 120) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        figures = window_figures(server, start, args.duration, args.rpm)
    errors: Counter[str] = Counter()
    for result in worker_results:
        errors.update(result["errors"])
    return {**figures, "worker_errors": dict(errors)}


# --- conveyor: real workers on the llm queue -------------------------------------------------
@dataclass
class WorkerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]


def worker_specs(llm_workers: int) -> list[tuple[str, str]]:
    """(node name, queues): the llm workers under test plus one to finish the chain."""
    return [(f"llm{i}", "llm") for i in range(llm_workers)] + [("back", "guard,record")]


def worker_env(redis_url: str, base_url: str, limiter_rpm: int, data_dir: Path) -> dict[str, str]:
    """The workers' whole Conveyor configuration; inherited CONVEYOR_* variables could point them elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVEYOR_")}
    env.update(
        CONVEYOR_BROKER_URL=redis_url,
        CONVEYOR_LLM_BASE_URL=base_url,
        CONVEYOR_LLM_RPM=str(limiter_rpm),
        CONVEYOR_LLM_CACHE_TTL_S="0",  # every job calls upstream
        CONVEYOR_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
    )
    return env


def start_workers(env: dict[str, str], data_dir: Path, llm_workers: int) -> list[WorkerProcess]:
    """Spawn `conveyor worker` processes, each logging to its own file under the run's data dir."""
    started = []
    for name, queues in worker_specs(llm_workers):
        log_path = data_dir / f"{name}.log"
        log = log_path.open("wb")
        cmd = [sys.executable, "-m", "workers.cli", "worker", "-Q", queues, "-P", "threads",
               "-c", str(THREADS_PER_WORKER), "-n", f"{name}@%h"]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        started.append(WorkerProcess(name, proc, log_path, log))
    return started


def wait_until_consuming(app: Any, workers: list[WorkerProcess], timeout: float) -> float:
    """Block until every node answers with its queues, so no job waits on a worker still booting."""
    began = time.monotonic()
    wanted = {w.name for w in workers}
    while True:
        active = app.control.inspect(timeout=1.0).active_queues() or {}
        if wanted <= {node.split("@", 1)[0] for node in active}:
            return time.monotonic() - began
        dead = [w.name for w in workers if w.proc.poll() is not None]
        if dead or time.monotonic() - began > timeout:
            tails = "\n".join(f"--- {w.name}\n{w.log_path.read_text(errors='replace')[-2000:]}" for w in workers)
            raise RuntimeError(f"workers not consuming after {timeout:g}s (exited: {dead})\n{tails}")


_DOCS = ("services-agreement", "supply-agreement", "licence-agreement", "consulting-agreement")
_CLAUSES = (
    ("Term and Termination", "Either party may terminate this Agreement on 30 days written notice to the other party."),
    ("Fees", "The Customer shall pay all undisputed invoices within 45 days of receipt."),
)


def job_payload(index: int, batch_id: str) -> dict[str, Any]:
    """A generate-stage input, as retrieve would have produced it for a short question.

    Chunk texts start with "<title> | <section>" as ingested chunks do (pipeline/chunking.py), so
    the fake's echoed answer is grounded and the jobs run through guard and record as real ones.
    """
    from schemas import ContextChunk, JobRequest, RetrievalResult

    doc = _DOCS[index % len(_DOCS)]
    title = doc.replace("-", " ").title()
    request = JobRequest(
        job_id=f"{batch_id}-{index:05d}",
        text=f"What is the notice period for termination (question {index})?",
        document_id=doc,
        intent_hint="question",
        params={"use_cache": False},
        batch_id=batch_id,
    )
    chunks = [
        ContextChunk(chunk_id=f"{doc}:{n}", doc_id=doc, section=section, text=f"{title} | {section}\n{body}")
        for n, (section, body) in enumerate(_CLAUSES)
    ]
    message = RetrievalResult(request=request, intent="question", intent_confidence=1.0, intent_method="hint",
                              chunks=chunks, retrieval_strategy="bench")
    return message.model_dump(mode="json")


def enqueue_batch(app: Any, jobs: int, batch_id: str) -> float:
    """Send every job into the chain at generate; returns how long sending took."""
    from workers.chain import send_job

    began = time.monotonic()
    for index in range(jobs):
        send_job(app, job_payload(index, batch_id), start="generate")
    return time.monotonic() - began


def wait_for_batch(app: Any, batch_id: str, jobs: int, timeout: float) -> dict[str, int]:
    """Poll the batch counters until every job has a record or a dead letter."""
    from workers.runtime import components_for

    state = components_for(app).state
    deadline = time.monotonic() + timeout
    while True:
        counts = state.batch_counts(batch_id)
        if sum(counts.values()) >= jobs or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def generate_totals(app: Any) -> dict[str, int]:
    """Generate tasks each node has run so far (worker stats), by node name without the host."""
    stats = app.control.inspect(timeout=1.0).stats() or {}
    return {node.split("@", 1)[0]: int(s.get("total", {}).get("conveyor.generate", 0)) for node, s in stats.items()}


def warm_up(app: Any, server: FakeOpenAIServer, llm_nodes: list[str], timeout: float = 90.0) -> dict[str, Any]:
    """Run small batches until every llm process has done one job, before the window opens.

    A fresh worker pays its one-off set-up on its first generate job (imports, the BPE
    encoding, the HTTP client); long-running production workers have paid it already, so
    it is reported here (``cold_first_call_s``) instead of being folded into the rate.
    """
    began, first_call = time.time(), None
    rounds = 0
    while rounds < 3:
        rounds += 1
        batch_id = f"warmup{rounds}-{uuid.uuid4().hex[:6]}"
        jobs = len(llm_nodes) * THREADS_PER_WORKER
        enqueue_batch(app, jobs, batch_id)
        wait_for_batch(app, batch_id, jobs, timeout)
        chat = [r["time"] for r in server.requests_log if r["path"] == "/v1/chat/completions"]
        if first_call is None and chat:
            first_call = min(chat) - began
        totals = generate_totals(app)
        if all(totals.get(node, 0) > 0 for node in llm_nodes):
            break
    return {"warmup_s": round(time.time() - began, 1), "warmup_rounds": rounds,
            "cold_first_call_s": round(first_call, 2) if first_call is not None else None,
            "warmup_jobs_per_node": {node: totals.get(node, 0) for node in llm_nodes}}


def stop_workers(workers: list[WorkerProcess], timeout: float) -> dict[str, int | None]:
    """SIGTERM (warm shutdown: running tasks finish), SIGKILL whoever outlives the timeout."""
    for w in workers:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()
        w.log.close()
    return {w.name: w.proc.returncode for w in workers}


_LOG_PATTERNS = {
    "stage_retries": re.compile(r"\bgenerate retry \d+ in"),
    "per_call_retries": re.compile(r"failed \(attempt \d+/\d+, \w+\), retrying"),
    "per_call_retries_429": re.compile(r"failed \(attempt \d+/\d+, rate_limited\), retrying"),
    "dead_lettered": re.compile(r"dead-lettered"),
    "errors": re.compile(r"\bERROR/"),
}


def scan_worker_logs(workers: list[WorkerProcess]) -> dict[str, int]:
    """Count retries and errors the workers logged: where a shortfall would come from."""
    counts = dict.fromkeys(_LOG_PATTERNS, 0)
    for w in workers:
        text = w.log_path.read_text(errors="replace")
        for key, pattern in _LOG_PATTERNS.items():
            counts[key] += len(pattern.findall(text))
    return counts


def pipeline_outcomes(app: Any, redis_url: str, batch_id: str) -> dict[str, Any]:
    """Jobs finished and dead-lettered so far, and what is still queued on llm."""
    from workers.runtime import components_for

    state = components_for(app).state
    letters = Counter(dl.failure_class for dl in state.list_dead_letters(state=None, limit=100_000))
    client = redis.Redis.from_url(redis_url)
    try:
        llm_queued = int(client.llen("llm"))
    finally:
        client.close()
    return {"batch": state.batch_counts(batch_id), "dead_letters": dict(letters), "llm_queue_left": llm_queued}


def flush_db(redis_url: str) -> None:
    """Empty the bench's own Redis db (broker, state, limiter): never another one."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


def bench_app(redis_url: str, data_dir: Path) -> Any:
    """The producer's app, configured explicitly so this process's environment cannot redirect it."""
    from pipeline.settings import load_settings
    from workers.app import create_app

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.upper().startswith("CONVEYOR_")}
    try:
        settings = load_settings(broker_url=redis_url, redis_url=redis_url, data_dir=data_dir)
    finally:
        os.environ.update(saved)
    return create_app(settings)


def measure_pipeline(app: Any, server: FakeOpenAIServer, args: argparse.Namespace, limiter_rpm: int) -> dict[str, Any]:
    """Enqueue the batch at the start of the window, wait it out, read the figures at its end."""
    jobs = args.jobs or math.ceil(1.5 * args.rpm * args.duration / 60.0) + 2 * args.workers * THREADS_PER_WORKER
    batch_id = f"bench-{uuid.uuid4().hex[:8]}"
    start = open_window(server, args.cold)
    enqueue_s = enqueue_batch(app, jobs, batch_id)
    time.sleep(max(0.0, start + args.duration - time.time()))
    figures = window_figures(server, start, args.duration, args.rpm)
    outcomes = pipeline_outcomes(app, args.redis_url, batch_id)
    return {**figures, "limiter_rpm": limiter_rpm, "jobs_enqueued": jobs, "enqueue_s": round(enqueue_s, 2),
            **outcomes}


def run_conveyor(args: argparse.Namespace) -> dict[str, Any]:
    """Real workers, real broker, real limiter; cleaned up whatever happens."""
    from workers.runtime import release_components

    limiter_rpm = max(1, math.floor(args.rpm * args.headroom))
    flush_db(args.redis_url)
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp,
        FakeOpenAIServer(rpm=args.rpm, latency_s=args.latency_ms / 1000.0) as server,
    ):
        server.tokens.warm_up()
        data_dir = Path(tmp)
        app = bench_app(args.redis_url, data_dir)
        workers = start_workers(worker_env(args.redis_url, server.url, limiter_rpm, data_dir), data_dir, args.workers)
        try:
            boot_s = wait_until_consuming(app, workers, timeout=120)
            warm = {} if args.no_warmup else warm_up(app, server, [w.name for w in workers if w.name != "back"])
            figures = {**measure_pipeline(app, server, args, limiter_rpm), **warm}
        finally:
            purged = app.control.purge()
            exits = stop_workers(workers, timeout=STOP_TIMEOUT_S)
            release_components(app)
        logs = scan_worker_logs(workers)
    flush_db(args.redis_url)
    return {**figures, "workers_boot_s": round(boot_s, 1), "purged": purged, "worker_logs": logs,
            "worker_exit_codes": exits}


# --- report ----------------------------------------------------------------------------------
_TABLE_ROWS = (
    ("achieved rpm", "achieved_rpm", "{:.1f}"),
    ("ratio to limit", "ratio", "{:.3f}"),
    ("calls", "calls", "{:d}"),
    ("http 429", "http_429", "{:d}"),
    ("429 fraction", "http_429_fraction", "{:.1%}"),
    ("max completions in 60s", "max_completions_in_any_60s", "{:d}"),
    ("max completions in 1s", "max_completions_in_any_1s", "{:d}"),
)


def side_by_side(details: dict[str, dict[str, Any]]) -> str:
    """Both modes in two columns, the way the figures are compared."""
    modes = list(details)
    lines = [f"{'':24}" + "".join(f"{m:>12}" for m in modes)]
    for label, key, fmt in _TABLE_ROWS:
        lines.append(f"{label:24}" + "".join(f"{fmt.format(details[m][key]):>12}" for m in modes))
    return "\n".join(lines)


def conveyor_notes(figures: dict[str, Any]) -> str:
    """The pipeline's own account of the run: start-up, job outcomes, dead letters, retries."""
    warm = (
        f"warm-up {figures['warmup_s']}s in {figures['warmup_rounds']} round(s), first call of cold workers "
        f"after {figures['cold_first_call_s']}s"
        if "warmup_s" in figures
        else "no warm-up (cold workers)"
    )
    return (
        f"conveyor: limiter {figures['limiter_rpm']} rpm; workers up in {figures['workers_boot_s']}s; {warm}; "
        f"{figures['jobs_enqueued']} jobs enqueued in {figures['enqueue_s']}s, first call after "
        f"{figures['first_call_after_s']}s; at window end batch {figures['batch']}, llm queue "
        f"{figures['llm_queue_left']}; dead letters {figures['dead_letters']}; worker logs {figures['worker_logs']}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rpm", type=int, default=120, help="the upstream's requests-per-minute limit")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per mode")
    parser.add_argument("--workers", type=int, default=4, help="llm worker processes / naive processes")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--headroom", type=float, default=0.97, help="limiter rate as a fraction of the limit")
    parser.add_argument("--jobs", type=int, default=None, help="pipeline batch size (default: 1.5x the window)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="broker + state db, FLUSHED before/after")
    parser.add_argument("--cold", action="store_true", help="start each run with an empty server window")
    parser.add_argument("--no-warmup", action="store_true", help="measure a batch sent to freshly started workers")
    parser.add_argument("--json-out", type=Path, default=None)
    return parser.parse_args(argv)


def redis_problem(url: str) -> str | None:
    try:
        probe = redis.Redis.from_url(url, socket_connect_timeout=2)
        probe.ping()
        probe.close()
    except redis.RedisError as exc:
        return f"Redis unreachable at {url}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = redis_problem(args.redis_url)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    window = "cold" if args.cold else "warm"
    print(f"limit {args.rpm} rpm, {args.workers} workers, {args.duration:g}s per mode, "
          f"latency {args.latency_ms:g}ms, window {window}", flush=True)
    details = {"conveyor": run_conveyor(args), "naive": run_naive(args)}
    print(side_by_side(details), flush=True)
    print(conveyor_notes(details["conveyor"]), flush=True)
    report: dict[str, Any] = {"limit_rpm": args.rpm}
    report.update({mode: {k: figures[k] for k in SUMMARY_KEYS} for mode, figures in details.items()})
    if args.json_out is not None:
        settings = {"duration_s": args.duration, "workers": args.workers, "llm_threads": THREADS_PER_WORKER,
                    "latency_ms": args.latency_ms, "headroom": args.headroom, "window": window,
                    "workers_warmed": not args.no_warmup}
        full = {**report, "details": details, "settings": settings}
        args.json_out.write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
