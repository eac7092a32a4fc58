"""Chaos suite: the faults a long batch meets, against real workers, a private Redis and a real HTTP LLM.

Each scenario starts its own ``redis-server`` on a free port (never the shared one), the fake
OpenAI-compatible server in this process, and real ``conveyor worker`` processes; submits a
batch; injects its fault with real signals; waits until every job has settled; and reports:
On ``--broker rabbitmq`` the broker is a private vhost of the RabbitMQ on 127.0.0.1:5672
(made with ``rabbitmqctl`` and deleted after), with quorum queues; the private Redis holds
job state and dead letters.

    jobs, records, dead letters by class,
    lost           jobs with neither a record nor a dead letter once settled (goal: 0)
    re-executed    jobs with a stage that completed more than once (from the workers' logs)
    double-billed  upstream LLM calls beyond one per job (from the fake server's per-job counts)
    recover_s      seconds from the fault until the last job settled

    python scripts/chaos.py                          # every scenario, both brokers, full size: chaos.json
    python scripts/chaos.py --quick                  # small sizes (what the integration tests run)
    python scripts/chaos.py --broker rabbitmq --scenario kill-worker --jobs 100

The integration tests (``tests/integration/test_chaos.py``) run the same scenarios small.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
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


RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672"


class RabbitVhost:
    """A private vhost on the local RabbitMQ: its own queues, dropped with everything in them after."""

    def __init__(self) -> None:
        self.name = f"conveyor-chaos-{os.urandom(4).hex()}"

    def url(self) -> str:
        return f"{RABBITMQ_URL}/{self.name}"

    def ctl(self, *args: str) -> str:
        done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def start(self) -> RabbitVhost:
        self.ctl("add_vhost", self.name)
        self.ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def drop_connections(self) -> None:
        """The broker closes every client connection of the vhost (what a RabbitMQ restart looks like
        from the workers; the quorum queues keep their messages)."""
        self.ctl("close_all_connections", "-p", self.name, "chaos: connections dropped")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.ctl("delete_vhost", self.name)


def rabbitmq_available() -> bool:
    """rabbitmqctl works and the broker answers on 5672."""
    if not shutil.which("rabbitmqctl"):
        return False
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            pass
        return subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def queue_length(broker_url: str, queue: str) -> int:
    """Messages ready on ``queue`` (not those a worker holds), on either broker."""
    if broker_url.startswith("redis"):  # kombu's virtual transport only knows queues it declared itself
        import redis

        return int(redis.Redis.from_url(broker_url).llen(queue))
    from amqp.exceptions import NotFound
    from kombu import Connection

    with Connection(broker_url) as conn:
        try:
            return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)
        except NotFound:  # nobody has declared it yet (the first message to it is still on its way)
            return 0


def purge(broker_url: str, queue: str) -> int:
    if broker_url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(broker_url)
        length = int(client.llen(queue))
        client.delete(queue)
        return length
    from kombu import Connection

    with Connection(broker_url) as conn:
        return int(conn.default_channel.queue_purge(queue) or 0)


@dataclass
class WorkerSpec:
    name: str
    queues: str
    pool: str
    concurrency: int


DEFAULT_WORKERS = (
    WorkerSpec("front", "ingest,intent,retrieve", "threads", 4),  # owns the local Qdrant path
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
    redis_url: str
    data_dir: Path
    llm: FakeOpenAIServer
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    vhost: RabbitVhost | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVEYOR_")}
        env.update(CONVEYOR_BROKER_URL=self.broker_url, CONVEYOR_REDIS_URL=self.redis_url,
                   CONVEYOR_DATA_DIR=str(self.data_dir), CONVEYOR_LLM_BASE_URL=self.llm.url, PYTHONUNBUFFERED="1",
                   **self.extra_env)
        return env

    @property
    def broker_name(self) -> str:
        return "rabbitmq" if self.vhost else "redis"

    def client(self) -> Any:
        from pipeline.settings import load_settings
        from workers.app import create_app
        from workers.client import ConveyorClient

        return ConveyorClient(create_app(load_settings(broker_url=self.broker_url, redis_url=self.redis_url,
                                                       data_dir=self.data_dir)))

    def ingest(self, paths: list[Path]) -> None:
        """``conveyor ingest`` into this cluster's local Qdrant path; the same files again (every
        scenario ingests the samples) are copied from the first ingest of this process."""
        key = tuple(sorted(str(p) for p in paths))
        template = _INGESTED.get(key)
        if template is None:
            template = Path(tempfile.mkdtemp(prefix="conveyor-chaos-qdrant-"))
            env = {**self.env(), "CONVEYOR_DATA_DIR": str(template)}
            subprocess.run([sys.executable, "-m", "workers.cli", "ingest", *map(str, paths), "--tenant", TENANT],
                           env=env, cwd=REPO, check=True, capture_output=True, timeout=300)
            _INGESTED[key] = template
            atexit.register(shutil.rmtree, template, True)
        shutil.copytree(template / "qdrant", self.data_dir / "qdrant")

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


#: files -> a data dir where they were ingested once (a local Qdrant path is a folder: copied per scenario)
_INGESTED: dict[tuple[str, ...], Path] = {}


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
        "broker": cluster.broker_name,
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


BROKERS = ("redis", "rabbitmq")


@contextlib.contextmanager
def environment(*, broker: str = "redis", appendonly: bool = True, llm_latency_s: float = 0.2,
                workers: tuple[WorkerSpec, ...] = DEFAULT_WORKERS, extra_env: dict[str, str] | None = None,
                on_chat: Callable[[str | None], None] | None = None) -> Iterator[tuple[RedisServer, Cluster]]:
    """A private Redis (the broker too, or beside a private RabbitMQ vhost), the fake LLM, the sample
    contracts ingested, the workers up."""
    from workers.cli import sample_contracts

    with (tempfile.TemporaryDirectory(prefix="conveyor-chaos-") as tmp,
          FakeOpenAIServer(latency_s=llm_latency_s, on_chat=on_chat) as llm):
        server = RedisServer(Path(tmp) / "redis", appendonly=appendonly).start()
        vhost = RabbitVhost().start() if broker == "rabbitmq" else None
        # the faults do not depend on where chunks are screened: retrieve screens the few it retrieves,
        # instead of the CLI screening all ~290 sample chunks before every scenario (about 20 s each)
        scenario_env = {"CONVEYOR_SCREEN_AT_INGEST": "false", **(extra_env or {})}
        cluster = Cluster(vhost.url() if vhost else server.url(0), server.url(0), Path(tmp) / "data", llm,
                          extra_env=scenario_env, vhost=vhost)
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
            if vhost is not None:
                vhost.stop()


def docs() -> list[str]:
    from workers.cli import sample_contracts

    return [p.stem for p in sample_contracts()]


# --- scenarios ---------------------------------------------------------------------------------
def kill_llm_children(broker: str = "redis", jobs: int = 500, kills: int = 10, timeout: float = 900) -> dict[str, Any]:
    """SIGKILL a random prefork child of the llm worker ``kills`` times while the batch runs."""
    with environment(broker=broker) as (_server, cluster):
        client = cluster.client()
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


def kill_whole_worker(broker: str = "redis", jobs: int = 200, timeout: float = 600) -> dict[str, Any]:
    """SIGKILL the whole llm worker (main process and children) mid-batch, start a new one at once."""
    with environment(broker=broker, llm_latency_s=0.5) as (_server, cluster):
        client = cluster.client()
        job_ids = submit_batch(client, docs(), jobs, "kill-worker")
        _wait_for_records(client, job_ids, at_least=max(1, jobs // 10), timeout=timeout)
        cluster.kill("llm")
        fault_at = time.monotonic()
        cluster.start(DEFAULT_WORKERS[1])
        outcome, settled_at = settle(client, job_ids, timeout)
        return report("SIGKILL whole llm worker + restart", cluster, job_ids, outcome, fault_at, settled_at,
                      kills=1, client_state=client.state)


def long_calls_outlive_the_lease(broker: str = "redis", jobs: int = 8, lease_s: int = 20, latency_s: float = 30.0,
                                 timeout: float = 300) -> dict[str, Any]:
    """LLM calls longer than the broker lease, with a second llm worker idle: nothing runs twice."""
    workers = (*DEFAULT_WORKERS, WorkerSpec("llm-2", "llm", "threads", 4))
    with environment(broker=broker, llm_latency_s=latency_s, workers=workers,
                     extra_env={"CONVEYOR_VISIBILITY_TIMEOUT_S": str(lease_s)}) as (_server, cluster):
        client = cluster.client()
        job_ids = submit_batch(client, docs(), jobs, "long-calls")
        started = time.monotonic()
        outcome, settled_at = settle(client, job_ids, timeout)
        return report(f"LLM calls of {latency_s:g}s, broker lease {lease_s}s", cluster, job_ids, outcome,
                      started, settled_at, client_state=client.state)


def redis_restart(broker: str = "redis", jobs: int = 300, down_s: float = 5.0, timeout: float = 600,
                  reconcile_after_s: float = 120) -> dict[str, Any]:
    """Stop Redis (append-only file on) mid-batch for ``down_s`` seconds, then start it again.

    kombu's Redis transport takes a message off its queue (BRPOP) and records it as unacked in
    a second command; a connection lost between the two loses that message. Jobs not settled
    ``reconcile_after_s`` after the restart are handed to ``conveyor reconcile``, as an operator
    (or a cron entry) would; the report says how many needed it.
    """
    with environment(broker=broker, appendonly=True) as (server, cluster):
        client = cluster.client()
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
        what = "Redis restart" if broker == "redis" else "state-store Redis restart"
        return report(f"{what}, AOF on, {down_s:g}s down", cluster, job_ids, outcome, fault_at, settled_at,
                      client_state=client.state, requeued_by_reconcile=requeued)


def redis_without_persistence(broker: str = "redis") -> dict[str, Any]:
    """A Redis that keeps nothing on disk: every worker must say so loudly at start."""
    with environment(broker=broker, appendonly=False) as (_server, cluster):
        warned = {name: "NO PERSISTENCE" in w.log_path.read_text() for name, w in cluster.workers.items()}
        return {"scenario": "Redis without persistence", "broker": broker, "workers_warned": warned,
                "detected": all(warned.values())}


def record_delivered_twice(broker: str = "redis", jobs: int = 20, timeout: float = 300) -> dict[str, Any]:
    """Deliver every finished job's record stage, and its generate stage, a second time."""
    with environment(broker=broker) as (_server, cluster):
        client = cluster.client()
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


def lost_messages_reconciled(broker: str = "redis", jobs: int = 20, timeout: float = 300) -> dict[str, Any]:
    """The broker forgets the llm queue (a Redis that lost its data, a purge by mistake): the jobs
    stall at generate; ``conveyor reconcile`` re-enqueues them from their checkpoints."""
    with environment(broker=broker, workers=(DEFAULT_WORKERS[0], DEFAULT_WORKERS[2])) as (server, cluster):
        client = cluster.client()
        job_ids = submit_batch(client, docs(), jobs, "lost")
        deadline = time.monotonic() + timeout
        while queue_length(cluster.broker_url, "llm") < jobs and time.monotonic() < deadline:
            time.sleep(0.2)
        forgotten = purge(cluster.broker_url, "llm")
        fault_at = time.monotonic()
        time.sleep(2)
        done = subprocess.run([sys.executable, "-m", "workers.cli", "reconcile", "--older-than", "1s", "--json"],
                              env=cluster.env(), cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
        reconciled = json.loads(done.stdout)
        cluster.start(DEFAULT_WORKERS[1])
        outcome, settled_at = settle(client, job_ids, timeout)
        return report("broker forgot the llm queue, then reconcile", cluster, job_ids, outcome, fault_at,
                      settled_at, client_state=client.state, messages_purged=forgotten,
                      requeued_by_reconcile=len(reconciled["requeued"]))


def poison_messages(broker: str = "redis", good_jobs: int = 10, timeout: float = 120) -> dict[str, Any]:
    """Every kind of message no task can run, published with plain kombu, then good jobs: one dead
    letter per bad message with its own class, no worker exits, the good jobs finish."""
    from scripts.poison_messages import POISON, publish

    with environment(broker=broker) as (_server, cluster):
        client = cluster.client()
        pids = {name: w.proc.pid for name, w in cluster.workers.items()}
        fault_at = time.monotonic()
        for poison in POISON.values():
            publish(cluster.broker_url, poison)
        deadline = time.monotonic() + timeout
        while len(letters := client.state.list_dead_letters(limit=100)) < len(POISON) and time.monotonic() < deadline:
            time.sleep(0.2)
        by_sha = {letter.stage_input.get("_message", {}).get("body_sha256"): letter for letter in letters}
        wrong = {name: by_sha[sha].failure_class if sha in by_sha else None for name, p in POISON.items()
                 if by_sha.get(sha := hashlib.sha256(p.body).hexdigest()) is None
                 or by_sha[sha].failure_class != p.failure_class}
        job_ids = submit_batch(client, docs(), good_jobs, "after-poison")
        outcome, settled_at = settle(client, job_ids, timeout)
        result = report("poison messages (11 kinds) then good jobs", cluster, job_ids, outcome, fault_at, settled_at,
                        client_state=client.state)
        result["jobs"] += len(POISON)
        result["lost"] += len(POISON) - len(by_sha)  # a bad message with no letter of its own
        for letter in by_sha.values():
            result["dead_letters"][letter.failure_class] = result["dead_letters"].get(letter.failure_class, 0) + 1
        result["wrong_class"] = wrong
        result["same_worker_pids"] = all(cluster.workers[n].proc.pid == pid and cluster.workers[n].alive()
                                         for n, pid in pids.items())
        return result


def job_of_death(broker: str = "redis", good_jobs: int = 6, timeout: float = 300) -> dict[str, Any]:
    """A job under which the llm worker's pool child dies every time (an OOM on one input): it must
    stop after ``CONVEYOR_BROKER_DELIVERY_LIMIT`` deliveries as a ``delivery_limit`` dead letter,
    not loop for ever; the jobs after it finish."""
    cluster_ref: list[Cluster] = []
    kills = Counter[str]()

    def kill_the_caller(tag: str | None) -> None:
        if tag and tag.startswith("death") and cluster_ref:
            kills[tag] += 1
            for pid in cluster_ref[0].workers["llm"].children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    with environment(broker=broker, on_chat=kill_the_caller) as (_server, cluster):
        cluster_ref.append(cluster)
        client = cluster.client()
        death = submit_batch(client, docs(), 1, "death")
        fault_at = time.monotonic()
        outcome, _ = settle(client, death, timeout)
        job_ids = death + submit_batch(client, docs(), good_jobs, "after-death")
        outcome, settled_at = settle(client, job_ids, timeout)
        return report("a job that kills its worker every time", cluster, job_ids, outcome, fault_at, settled_at,
                      client_state=client.state, kills=sum(kills.values()))


def replay_while_broker_down(broker: str = "redis", jobs: int = 4, timeout: float = 180) -> dict[str, Any]:
    """Jobs dead-lettered by the provider (a 400), replayed while the broker does not answer: the
    replay fails and says so, letters and jobs stay as they were; replayed again with the broker
    back, every job succeeds."""
    with environment(broker=broker) as (_server, cluster):
        client = cluster.client()
        cluster.llm.script(["400"] * jobs)
        job_ids = submit_batch(client, docs(), jobs, "replay")
        outcome, _ = settle(client, job_ids, timeout)
        rejected = sum(v == "dlq:provider_rejected" for v in outcome.values())
        dead_url = (f"{RABBITMQ_URL.rsplit(':', 1)[0]}:1/{cluster.vhost.name}" if cluster.vhost
                    else f"redis://127.0.0.1:{free_port()}/0")
        down_env = {**cluster.env(), "CONVEYOR_BROKER_URL": dead_url}
        command = [sys.executable, "-m", "workers.cli", "dlq", "replay", "--batch", "replay", "--no-wait"]
        fault_at = time.monotonic()
        down = subprocess.run(command, env=down_env, cwd=REPO, capture_output=True, text=True, timeout=180)
        letters = client.state.dead_letter_page(_filter(batch_id="replay", state=None), limit=100)
        still_open = sum(letter.state == "open" for letter in letters)
        still_failed = sum(client.state.get_status(j).state == "failed" for j in job_ids)
        up = subprocess.run(command, env=cluster.env(), cwd=REPO, capture_output=True, text=True, timeout=180)
        outcome = {}  # settled again: a record now, not the old letter
        deadline = time.monotonic() + timeout
        while len(outcome) < len(job_ids) and time.monotonic() < deadline:
            outcome = {j: "record" for j in job_ids if client.state.get_record(j) is not None}
            time.sleep(0.25)
        settled_at = time.monotonic()
        for job in set(job_ids) - set(outcome):  # still a letter (open or replayed): not lost
            status = client.state.get_status(job)
            if status is not None and status.dead_letter_id:
                outcome[job] = "dlq:" + client.state.get_dead_letter(status.dead_letter_id).failure_class
        result = report("replay while the broker is down, then again", cluster, job_ids, outcome, fault_at,
                        settled_at, client_state=client.state, rejected_first=rejected,
                        replay_down_exit=down.returncode,
                        replay_down_error=(down.stderr.strip().splitlines() or [""])[-1][:200],
                        letters_open_after_failed_replay=still_open, jobs_failed_after_failed_replay=still_failed,
                        replay_up_exit=up.returncode)
        result["double_billed"] = max(0, result["double_billed"] - rejected)  # a 400 is not billed
        return result


def broker_drops_connections(broker: str = "rabbitmq", jobs: int = 200, drops: int = 3,
                             timeout: float = 600) -> dict[str, Any]:
    """RabbitMQ closes every connection of the vhost ``drops`` times mid-batch (a broker restart as
    the workers see it; quorum queues keep the messages): unacknowledged messages go back to their
    queues, workers reconnect, nothing is lost."""
    if broker != "rabbitmq":
        raise ValueError("broker-drop is a RabbitMQ scenario; on Redis, redis-restart stops the server")
    with environment(broker=broker) as (_server, cluster):
        assert cluster.vhost is not None
        client = cluster.client()
        job_ids = submit_batch(client, docs(), jobs, "drops")
        fault_at = None
        for i in range(drops):
            _wait_for_records(client, job_ids, at_least=max(1, jobs * (i + 1) // (drops + 2)), timeout=timeout)
            cluster.vhost.drop_connections()
            fault_at = time.monotonic()
        outcome, settled_at = settle(client, job_ids, timeout)
        return report(f"RabbitMQ drops every connection x{drops}", cluster, job_ids, outcome, fault_at, settled_at,
                      client_state=client.state, drops=drops)


def _filter(**where: Any) -> Any:
    from pipeline.state import LetterFilter

    return LetterFilter(**where)


def _wait_for_records(client: Any, job_ids: list[str], *, at_least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(client.state.get_record(j) is not None for j in job_ids) >= at_least:
            return
        time.sleep(0.2)
    raise RuntimeError(f"fewer than {at_least} records after {timeout}s")


SCENARIOS: dict[str, tuple[Callable[..., dict[str, Any]], dict[str, Any], dict[str, Any], tuple[str, ...]]] = {
    # name: (function, full-size kwargs, quick kwargs, brokers it runs on)
    "kill-children": (kill_llm_children, {"jobs": 500, "kills": 10}, {"jobs": 40, "kills": 3}, BROKERS),
    "kill-worker": (kill_whole_worker, {"jobs": 200}, {"jobs": 30}, BROKERS),
    "long-calls": (long_calls_outlive_the_lease, {"jobs": 16}, {"jobs": 8}, ("redis",)),  # Redis' lease
    "redis-restart": (redis_restart, {"jobs": 300}, {"jobs": 40, "timeout": 180, "reconcile_after_s": 90}, BROKERS),
    "broker-drop": (broker_drops_connections, {"jobs": 300}, {"jobs": 40, "drops": 2}, ("rabbitmq",)),
    "redis-no-persistence": (redis_without_persistence, {}, {}, BROKERS),
    "lost-messages": (lost_messages_reconciled, {"jobs": 100}, {"jobs": 10}, BROKERS),
    "delivered-twice": (record_delivered_twice, {"jobs": 20}, {"jobs": 6}, BROKERS),
    "poison": (poison_messages, {"good_jobs": 20}, {"good_jobs": 4}, BROKERS),
    "job-of-death": (job_of_death, {"good_jobs": 10}, {"good_jobs": 3}, BROKERS),
    "replay-broker-down": (replay_while_broker_down, {"jobs": 10}, {"jobs": 3}, BROKERS),
}

COLUMNS = ("scenario", "jobs", "records", "dead letters", "lost", "re-executed", "double-billed", "recover s",
           "worker exits")


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    def cell(r: dict[str, Any], key: str) -> str:
        value = r.get(key, "")
        return json.dumps(value) if isinstance(value, dict) else str(value)

    return [[r["scenario"], cell(r, "jobs"), cell(r, "records"), cell(r, "dead_letters"), cell(r, "lost"),
             cell(r, "re_executed"), cell(r, "double_billed"), cell(r, "recover_s"),
             json.dumps(r.get("worker_exits", r.get("workers_warned", "")))] for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    parser.add_argument("--broker", choices=(*BROKERS, "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="small sizes, as the integration tests run them")
    parser.add_argument("--jobs", type=int, default=None, help="override the batch size")
    parser.add_argument("--json-out", type=Path, default=Path("chaos.json"))
    args = parser.parse_args()
    # SIGTERM (an operator, a CI time-out) unwinds like Ctrl-C: the workers, Redis and vhost we made go
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    brokers = BROKERS if args.broker == "both" else (args.broker,)
    if "rabbitmq" in brokers and not rabbitmq_available():
        parser.error("RabbitMQ is not reachable on 127.0.0.1:5672 with rabbitmqctl; use --broker redis")
    results = []
    for broker in brokers:
        for name in args.scenario or list(SCENARIOS):
            fn, full, quick, runs_on = SCENARIOS[name]
            if broker not in runs_on:
                continue
            kwargs = dict(quick if args.quick else full)
            if args.jobs is not None and "jobs" in kwargs:
                kwargs["jobs"] = args.jobs
            started = time.monotonic()
            result = fn(broker=broker, **kwargs)
            result["seconds"] = round(time.monotonic() - started, 1)
            results.append(result)
            print(json.dumps(result), flush=True)
            args.json_out.write_text(json.dumps(results, indent=2) + "\n")  # kept as it grows
    from rich.console import Console
    from rich.table import Table

    for broker in brokers:
        table = Table(title=f"chaos suite ({broker} broker)")
        for column in COLUMNS:
            table.add_column(column)
        for row in table_rows([r for r in results if r.get("broker") == broker]):
            table.add_row(*row)
        Console(width=170).print(table)
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
