"""Chaos suite: the faults a long batch meets, against real workers, a private Redis and a real HTTP LLM.

Each scenario starts its own ``redis-server`` on a free port (never the shared one), the fake
OpenAI-compatible server in this process, and real ``conveyor worker`` processes; submits a
batch; injects its fault with real signals; waits until every job has settled; and reports:

    jobs, records, dead letters by class,
    lost           jobs with neither a record nor a dead letter once settled (goal: 0)
    re-executed    jobs with a stage that completed more than once (from the workers' logs)
    double-billed  upstream LLM calls beyond one per job (from the fake server's per-job counts)
    recover_s      seconds from the fault until the last job settled

    python scripts/chaos.py                          # every scenario at full size, writes chaos.json
    python scripts/chaos.py --quick                  # small sizes (what the integration tests run)
    python scripts/chaos.py --scenario kill-worker --jobs 100

The integration tests (``tests/integration/test_chaos.py``) run the same scenarios small.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python scripts/chaos.py` from anywhere
    sys.path.insert(0, str(REPO))

from scripts.fake_openai_server import FakeOpenAIServer  # noqa: E402

#: ``done in … [job_id=J stage=S …]``: one line per completed stage run (workers/middleware.py Timing).
_DONE = re.compile(r" done in [0-9.]+ ms \[job_id=(\S+) stage=(\S+) ")
TENANT = "chaos"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A private redis-server on a free port, with or without an append-only file."""

    def __init__(self, directory: Path, *, appendonly: bool = True, port: int | None = None) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--maxmemory-policy", "noeviction", "--logfile", str(self.directory / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.answers():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except (redis.RedisError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM: Redis shuts down cleanly (the append-only file is flushed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None


@dataclass
class WorkerSpec:
    name: str
    queues: str
    pool: str
    concurrency: int


DEFAULT_WORKERS = (
    WorkerSpec("front", "intent,retrieve", "threads", 4),  # owns the local Qdrant path
    WorkerSpec("llm", "llm", "prefork", 4),
    WorkerSpec("back", "guard,record", "prefork", 2),
)


@dataclass
class Worker:
    spec: WorkerSpec
    proc: subprocess.Popen[bytes]
    log_path: Path
    starts: int = 1

    def alive(self) -> bool:
        return self.proc.poll() is None

    def children(self) -> list[int]:
        """PIDs of the pool's child processes (prefork)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.proc.pid:
                    found.append(int(stat.parent.name))
        return found


@dataclass
class Cluster:
    """Workers and a client against one broker; the fake LLM server answers every generate call."""

    broker_url: str
    data_dir: Path
    llm: FakeOpenAIServer
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVEYOR_")}
        env.update(CONVEYOR_BROKER_URL=self.broker_url, CONVEYOR_DATA_DIR=str(self.data_dir),
                   CONVEYOR_LLM_BASE_URL=self.llm.url, PYTHONUNBUFFERED="1", **self.extra_env)
        return env

    def ingest(self, paths: list[Path]) -> None:
        subprocess.run([sys.executable, "-m", "workers.cli", "ingest", *map(str, paths), "--tenant", TENANT],
                       env=self.env(), cwd=REPO, check=True, capture_output=True, timeout=300)

    def start(self, spec: WorkerSpec) -> Worker:
        log_path = self.data_dir / f"worker-{spec.name}.log"
        previous = self.workers.get(spec.name)
        log = log_path.open("a")
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "-Q", spec.queues, "-P", spec.pool,
             "-c", str(spec.concurrency), "-n", f"{spec.name}-{os.urandom(3).hex()}@%h", "-l", "INFO"],
            env=self.env(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        worker = Worker(spec, proc, log_path, starts=(previous.starts + 1) if previous else 1)
        self.workers[spec.name] = worker
        return worker

    def wait_ready(self, timeout: float = 120) -> None:
        """Until every worker logged that its consumer is ready."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [w for w in self.workers.values() if w.alive() and w.log_path.read_text().count(" ready.")
                       < w.starts]
            dead = [w.spec.name for w in self.workers.values() if not w.alive()]
            if dead:
                raise RuntimeError(f"workers exited at start: {dead}\n{self.tail()}")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready after {timeout}s\n{self.tail()}")
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        """SIGKILL a whole worker: its main process and every pool child, no chance to clean up."""
        worker = self.workers[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=30)

    def stop_all(self) -> None:
        for worker in self.workers.values():
            if worker.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.proc.pid, signal.SIGTERM)
        for worker in self.workers.values():
            try:
                worker.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.proc.pid, signal.SIGKILL)
                worker.proc.wait(timeout=10)

    def exits(self) -> dict[str, int | None]:
        return {name: w.proc.poll() for name, w in self.workers.items()}

    def tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {w.spec.name}\n{w.log_path.read_text()[-chars:]}" for w in self.workers.values())

    def completed_stage_runs(self) -> Counter[tuple[str, str]]:
        runs: Counter[tuple[str, str]] = Counter()
        for worker in self.workers.values():
            for match in _DONE.finditer(worker.log_path.read_text()):
                runs[(match.group(1), match.group(2))] += 1
        return runs


def client_for(broker_url: str, data_dir: Path) -> Any:
    from pipeline.settings import load_settings
    from workers.app import create_app
    from workers.client import ConveyorClient

    return ConveyorClient(create_app(load_settings(broker_url=broker_url, data_dir=data_dir)))


def submit_batch(client: Any, docs: list[str], jobs: int, batch_id: str) -> list[str]:
    """``jobs`` question jobs over ``docs``; the ``[ref:N]`` lets the fake server count calls per job."""
    from schemas import JobRequest

    return [
        client.submit(JobRequest(text=f"What does this contract say about payment? [ref:{batch_id}-{i}]",
                                 document_id=docs[i % len(docs)], tenant=TENANT, intent_hint="question",
                                 batch_id=batch_id, custom_id=f"item-{i}", job_id=f"{batch_id}-{i}"))
        for i in range(jobs)
    ]


def settle(client: Any, job_ids: list[str], timeout: float) -> tuple[dict[str, str], float]:
    """Wait until every job has a record or a dead letter; returns each job's outcome and when."""
    outcome: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while len(outcome) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id in outcome:
                continue
            with contextlib.suppress(Exception):  # the store may be restarting
                if client.state.get_record(job_id) is not None:
                    outcome[job_id], last = "record", time.monotonic()
                    continue
                status = client.state.get_status(job_id)
                if status is not None and status.state == "failed" and status.dead_letter_id:
                    letter = client.state.get_dead_letter(status.dead_letter_id)
                    if letter is not None:
                        outcome[job_id], last = f"dlq:{letter.failure_class}", time.monotonic()
        time.sleep(0.25)
    return outcome, last


def report(name: str, cluster: Cluster, job_ids: list[str], outcome: dict[str, str], fault_at: float | None,
           settled_at: float, *, client_state: Any, **extra: Any) -> dict[str, Any]:
    runs = cluster.completed_stage_runs()
    calls = Counter(r["tag"] for r in cluster.llm.requests_log if r["path"] == "/v1/chat/completions" and r["tag"])
    letters = Counter(v.split(":", 1)[1] for v in outcome.values() if v.startswith("dlq:"))
    return {
        "scenario": name,
        "jobs": len(job_ids),
        "records": sum(v == "record" for v in outcome.values()),
        "dead_letters": dict(letters),
        "lost": len(job_ids) - len(outcome),
        "re_executed": len({job for (job, _stage), n in runs.items() if n > 1 and job in set(job_ids)}),
        "double_billed": sum(max(0, calls[job] - 1) for job in job_ids),
        "recover_s": round(settled_at - fault_at, 1) if fault_at is not None else None,
        "worker_exits": {k: v for k, v in cluster.exits().items() if v is not None},
        "lost_sample": [_where(client_state, job) for job in job_ids if job not in outcome][:5],
        **extra,
    }


def _where(state: Any, job_id: str) -> str:
    """Where a lost job was last seen, for the report."""
    try:
        status = state.get_status(job_id)
    except Exception as exc:
        return f"{job_id}: {type(exc).__name__}"
    return f"{job_id}: {status.state}@{status.stage} attempt {status.attempts}" if status else f"{job_id}: no status"


@contextlib.contextmanager
def environment(*, appendonly: bool = True, llm_latency_s: float = 0.2, workers: tuple[WorkerSpec, ...] =
                DEFAULT_WORKERS, extra_env: dict[str, str] | None = None) -> Iterator[tuple[RedisServer, Cluster]]:
    """A private Redis, the fake LLM, the sample contracts ingested, the workers up."""
    from workers.cli import sample_contracts

    with tempfile.TemporaryDirectory(prefix="conveyor-chaos-") as tmp, FakeOpenAIServer(latency_s=llm_latency_s) as llm:
        server = RedisServer(Path(tmp) / "redis", appendonly=appendonly).start()
        cluster = Cluster(server.url(0), Path(tmp) / "data", llm, extra_env=dict(extra_env or {}))
        cluster.data_dir.mkdir()
        try:
            cluster.ingest(sample_contracts())
            for spec in workers:
                cluster.start(spec)
            cluster.wait_ready()
            yield server, cluster
        finally:
            cluster.stop_all()
            server.stop()


def docs() -> list[str]:
    from workers.cli import sample_contracts

    return [p.stem for p in sample_contracts()]


# --- scenarios ---------------------------------------------------------------------------------
def kill_llm_children(jobs: int = 500, kills: int = 10, timeout: float = 900) -> dict[str, Any]:
    """SIGKILL a random prefork child of the llm worker ``kills`` times while the batch runs."""
    with environment() as (_server, cluster):
        client = client_for(cluster.broker_url, cluster.data_dir)
        job_ids = submit_batch(client, docs(), jobs, "kill-children")
        fault_at, killed = None, 0
        rng = random.Random(7)
        while killed < kills:
            time.sleep(rng.uniform(0.3, 1.5))
            children = cluster.workers["llm"].children()
            if children:
                os.kill(rng.choice(children), signal.SIGKILL)
                killed += 1
                fault_at = time.monotonic()
        outcome, settled_at = settle(client, job_ids, timeout)
        return report("SIGKILL llm pool child", cluster, job_ids, outcome, fault_at, settled_at, kills=killed,
                      client_state=client.state)


def kill_whole_worker(jobs: int = 200, timeout: float = 600) -> dict[str, Any]:
    """SIGKILL the whole llm worker (main process and children) mid-batch, start a new one at once."""
    with environment(llm_latency_s=0.5) as (_server, cluster):
        client = client_for(cluster.broker_url, cluster.data_dir)
        job_ids = submit_batch(client, docs(), jobs, "kill-worker")
        _wait_for_records(client, job_ids, at_least=max(1, jobs // 10), timeout=timeout)
        cluster.kill("llm")
        fault_at = time.monotonic()
        cluster.start(DEFAULT_WORKERS[1])
        outcome, settled_at = settle(client, job_ids, timeout)
        return report("SIGKILL whole llm worker + restart", cluster, job_ids, outcome, fault_at, settled_at,
                      kills=1, client_state=client.state)


def long_calls_outlive_the_lease(jobs: int = 8, lease_s: int = 20, latency_s: float = 30.0,
                                 timeout: float = 300) -> dict[str, Any]:
    """LLM calls longer than the broker lease, with a second llm worker idle: nothing runs twice."""
    workers = (*DEFAULT_WORKERS, WorkerSpec("llm-2", "llm", "threads", 4))
    with environment(llm_latency_s=latency_s, workers=workers,
                     extra_env={"CONVEYOR_VISIBILITY_TIMEOUT_S": str(lease_s)}) as (_server, cluster):
        client = client_for(cluster.broker_url, cluster.data_dir)
        job_ids = submit_batch(client, docs(), jobs, "long-calls")
        started = time.monotonic()
        outcome, settled_at = settle(client, job_ids, timeout)
        return report(f"LLM calls of {latency_s:g}s, broker lease {lease_s}s", cluster, job_ids, outcome,
                      started, settled_at, client_state=client.state)


def redis_restart(jobs: int = 300, down_s: float = 5.0, timeout: float = 600,
                  reconcile_after_s: float = 120) -> dict[str, Any]:
    """Stop Redis (append-only file on) mid-batch for ``down_s`` seconds, then start it again.

    kombu's Redis transport takes a message off its queue (BRPOP) and records it as unacked in
    a second command; a connection lost between the two loses that message. Jobs not settled
    ``reconcile_after_s`` after the restart are handed to ``conveyor reconcile``, as an operator
    (or a cron entry) would; the report says how many needed it.
    """
    with environment(appendonly=True) as (server, cluster):
        client = client_for(cluster.broker_url, cluster.data_dir)
        job_ids = submit_batch(client, docs(), jobs, "redis-restart")
        _wait_for_records(client, job_ids, at_least=max(1, jobs // 5), timeout=timeout)
        server.stop()
        fault_at = time.monotonic()
        time.sleep(down_s)
        server.start()
        outcome, settled_at = settle(client, job_ids, reconcile_after_s)
        requeued = 0
        if len(outcome) < len(job_ids):
            done = subprocess.run([sys.executable, "-m", "workers.cli", "reconcile", "--older-than", "60s", "--json"],
                                  env=cluster.env(), cwd=REPO, capture_output=True, text=True, timeout=120,
                                  check=True)
            requeued = len(json.loads(done.stdout)["requeued"])
            outcome, settled_at = settle(client, job_ids, timeout)
        return report(f"Redis restart, AOF on, {down_s:g}s down", cluster, job_ids, outcome, fault_at, settled_at,
                      client_state=client.state, requeued_by_reconcile=requeued)


def redis_without_persistence() -> dict[str, Any]:
    """A Redis that keeps nothing on disk: every worker must say so loudly at start."""
    with environment(appendonly=False) as (_server, cluster):
        warned = {name: "NO PERSISTENCE" in w.log_path.read_text() for name, w in cluster.workers.items()}
        return {"scenario": "Redis without persistence", "workers_warned": warned,
                "detected": all(warned.values())}


def record_delivered_twice(jobs: int = 20, timeout: float = 300) -> dict[str, Any]:
    """Deliver every finished job's record stage, and its generate stage, a second time."""
    with environment() as (_server, cluster):
        client = client_for(cluster.broker_url, cluster.data_dir)
        job_ids = submit_batch(client, docs(), jobs, "twice")
        outcome, _ = settle(client, job_ids, timeout)
        calls_before = len(cluster.llm.requests_log)
        from workers.chain import send_job

        for job_id in job_ids:
            record = client.state.get_record(job_id)
            if record is None:
                continue
            request = record.request.model_dump(mode="json")
            send_job(client.app, {"request": request, "intent": "question", "intent_confidence": 1.0,
                                  "intent_method": "hint", "chunks": [], "retrieval_strategy": "top-k"},
                     start="generate")
        time.sleep(5)
        skipped = sum("job already has a record: skipped" in w.log_path.read_text() for w in cluster.workers.values())
        counts = client.state.batch_counts("twice")
        result = report("a finished job delivered again", cluster, job_ids, outcome, None, time.monotonic(),
                        client_state=client.state,
                        upstream_calls_after_redelivery=len(cluster.llm.requests_log) - calls_before,
                        batch_counts=counts, workers_that_skipped=skipped)
        states = {client.state.get_status(j).state for j in job_ids if client.state.get_status(j)}
        result["statuses_after"] = sorted(states)
        return result


def lost_messages_reconciled(jobs: int = 20, timeout: float = 300) -> dict[str, Any]:
    """The broker forgets the llm queue (a Redis that lost its data, a purge by mistake): the jobs
    stall at generate; ``conveyor reconcile`` re-enqueues them from their checkpoints."""
    with environment(workers=(DEFAULT_WORKERS[0], DEFAULT_WORKERS[2])) as (server, cluster):
        client = client_for(cluster.broker_url, cluster.data_dir)
        job_ids = submit_batch(client, docs(), jobs, "lost")
        import redis

        broker = redis.Redis.from_url(cluster.broker_url)
        deadline = time.monotonic() + timeout
        while broker.llen("llm") < jobs and time.monotonic() < deadline:
            time.sleep(0.2)
        forgotten = broker.delete("llm")
        fault_at = time.monotonic()
        time.sleep(2)
        done = subprocess.run([sys.executable, "-m", "workers.cli", "reconcile", "--older-than", "1s", "--json"],
                              env=cluster.env(), cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
        reconciled = json.loads(done.stdout)
        cluster.start(DEFAULT_WORKERS[1])
        outcome, settled_at = settle(client, job_ids, timeout)
        return report("broker forgot the llm queue, then reconcile", cluster, job_ids, outcome, fault_at,
                      settled_at, client_state=client.state, queue_deleted=bool(forgotten),
                      requeued_by_reconcile=len(reconciled["requeued"]))


def _wait_for_records(client: Any, job_ids: list[str], *, at_least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(client.state.get_record(j) is not None for j in job_ids) >= at_least:
            return
        time.sleep(0.2)
    raise RuntimeError(f"fewer than {at_least} records after {timeout}s")


SCENARIOS: dict[str, tuple[Callable[..., dict[str, Any]], dict[str, Any], dict[str, Any]]] = {
    # name: (function, full-size kwargs, quick kwargs)
    "kill-children": (kill_llm_children, {"jobs": 500, "kills": 10}, {"jobs": 40, "kills": 3}),
    "kill-worker": (kill_whole_worker, {"jobs": 200}, {"jobs": 30}),
    "long-calls": (long_calls_outlive_the_lease, {"jobs": 16}, {"jobs": 8}),
    "redis-restart": (redis_restart, {"jobs": 300}, {"jobs": 40, "timeout": 180, "reconcile_after_s": 90}),
    "redis-no-persistence": (redis_without_persistence, {}, {}),
    "lost-messages": (lost_messages_reconciled, {"jobs": 100}, {"jobs": 10}),
    "delivered-twice": (record_delivered_twice, {"jobs": 20}, {"jobs": 6}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    parser.add_argument("--quick", action="store_true", help="small sizes, as the integration tests run them")
    parser.add_argument("--jobs", type=int, default=None, help="override the batch size")
    parser.add_argument("--json-out", type=Path, default=Path("chaos.json"))
    args = parser.parse_args()
    # SIGTERM (an operator, a CI time-out) unwinds like Ctrl-C: the workers and Redis we started are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = []
    for name in args.scenario or list(SCENARIOS):
        fn, full, quick = SCENARIOS[name]
        kwargs = dict(quick if args.quick else full)
        if args.jobs is not None and "jobs" in kwargs:
            kwargs["jobs"] = args.jobs
        started = time.monotonic()
        result = fn(**kwargs)
        result["seconds"] = round(time.monotonic() - started, 1)
        results.append(result)
        print(json.dumps(result), flush=True)
    from rich.console import Console
    from rich.table import Table

    table = Table(title="chaos suite (Redis broker)")
    for column in ("scenario", "jobs", "records", "dead letters", "lost", "re-executed", "double-billed",
                   "recover s", "worker exits"):
        table.add_column(column)
    for r in results:
        table.add_row(r["scenario"], str(r.get("jobs", "")), str(r.get("records", "")),
                      json.dumps(r.get("dead_letters", "")), str(r.get("lost", "")), str(r.get("re_executed", "")),
                      str(r.get("double_billed", "")), str(r.get("recover_s", "")),
                      json.dumps(r.get("worker_exits", r.get("workers_warned", ""))))
    Console(width=160).print(table)
    args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
