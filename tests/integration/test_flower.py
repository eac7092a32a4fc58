"""Flower runs against the real broker, only behind basic auth, on loopback by default; the password
never shows in argv, and what Flower collects from task events names jobs by id, never by content."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.settings import load_settings
from schemas import JobRequest
from schemas.pipeline import stages_from
from scripts.fake_openai_server import FakeOpenAIServer
from tests.conftest import REPO
from workers.app import create_app
from workers.cli import sample_contracts
from workers.client import ConveyorClient
from workers.runtime import release_components

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_flower_requires_basic_auth(redis_url: str, tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("CONVEYOR_", "FLOWER_"))}
    env.update(CONVEYOR_BROKER_URL=redis_url, CONVEYOR_FLOWER_BASIC_AUTH="ops:correct-horse-battery",
               CONVEYOR_DATA_DIR=str(tmp_path))
    log = (tmp_path / "flower.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "flower", "--port", str(port),
                             "--address=127.0.0.1"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while True:
            try:
                anonymous = httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "flower.log").read_text()
                assert time.monotonic() < deadline, "flower did not start"
                time.sleep(0.3)
        assert anonymous.status_code == 401
        assert httpx.get(url, auth=("ops", "wrong"), timeout=5).status_code == 401
        assert httpx.get(url, auth=("ops", "correct-horse-battery"), timeout=5).status_code == 200
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
        assert "correct-horse-battery" not in cmdline
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert "correct-horse-battery" not in (tmp_path / "flower.log").read_text()


CANARY_EMAIL = "canary-7f3a@example.org"
CANARY_WORD = "quokkafrangipane"


def _strings(value: object) -> Iterator[str]:
    """Every key and string value in a JSON document (escaping never hides a match)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port``, from /proc/net/tcp (hex, little-endian)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_flower_sees_job_ids_never_request_text_chunks_or_results(redis_url: str, tmp_path: Path) -> None:
    """A job carrying a canary runs through real workers (threads and prefork, one stage retry on
    a 500 from the LLM) with events on; Flower's API holds its ids, never its text or chunks."""
    doc = sample_contracts()[0]
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("CONVEYOR_", "FLOWER_"))}
    env.update(CONVEYOR_BROKER_URL=redis_url, CONVEYOR_DATA_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    subprocess.run([sys.executable, "-m", "workers.cli", "ingest", str(doc), "--tenant", "acme"], env=env, cwd=REPO,
                   check=True, capture_output=True, timeout=120)
    with FakeOpenAIServer() as llm:
        llm.script(["500"])  # the first LLM call fails: generate is retried through task.retry
        worker_env = {**env, "CONVEYOR_LLM_BASE_URL": llm.url, "CONVEYOR_LLM_MAX_ATTEMPTS": "1",
                      "CONVEYOR_RETRY_BACKOFF_BASE_S": "0.1", "CONVEYOR_GUARD_POLICY": '{"grounding": "flag"}'}
        flower_env = {**env, "CONVEYOR_FLOWER_BASIC_AUTH": "ops:correct-horse-battery"}
        port = _free_port()
        logs = [(tmp_path / f"{name}.log").open("w") for name in ("front", "back", "flower")]
        procs = [
            # no -n: the default node names must be unique, or Flower shows one worker
            subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "-Q", "intent,retrieve,llm", "-P",
                              "threads", "-c", "2"], env=worker_env, cwd=REPO, stdout=logs[0],
                             stderr=subprocess.STDOUT),
            subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "-Q", "guard,record", "-P", "prefork",
                              "-c", "1"], env=worker_env, cwd=REPO, stdout=logs[1], stderr=subprocess.STDOUT),
            subprocess.Popen([sys.executable, "-m", "workers.cli", "flower", "--port", str(port)], env=flower_env,
                             cwd=REPO, stdout=logs[2], stderr=subprocess.STDOUT),
        ]
        app = create_app(load_settings(broker_url=redis_url, data_dir=tmp_path))
        # every task event on the wire, as Flower receives them (its /api/tasks keeps only the merge)
        events: list[dict[str, object]] = []
        connection = app.connection_for_read()
        receiver = app.events.Receiver(connection, handlers={"*": events.append})
        listener = threading.Thread(target=receiver.capture, kwargs={"limit": None, "timeout": None}, daemon=True)
        listener.start()
        auth = ("ops", "correct-horse-battery")
        api = f"http://127.0.0.1:{port}/api"
        try:
            deadline = time.monotonic() + 90
            while True:  # Flower must watch both workers before the job runs, or it misses events
                try:
                    workers = httpx.get(f"{api}/workers", params={"refresh": "1"}, auth=auth, timeout=10).json()
                except (httpx.TransportError, ValueError):
                    workers = {}
                if len(workers) == 2 and all(w.get("active_queues") for w in workers.values()):
                    break
                assert all(p.poll() is None for p in procs), "\n".join(
                    (tmp_path / f"{n}.log").read_text()[-2000:] for n in ("front", "back", "flower"))
                assert time.monotonic() < deadline, f"Flower did not see two workers: {sorted(workers)}"
                time.sleep(0.5)
            assert _listening_addresses(port) == {"127.0.0.1"}, "conveyor flower binds loopback by default"

            job_id = f"flower-job-{uuid.uuid4().hex[:8]}"
            client = ConveyorClient(app)
            client.submit(JobRequest(job_id=job_id, tenant="acme", document_id=doc.stem, intent_hint="summarize",
                                     batch_id="canary-batch",
                                     text=f"Summarize this contract for {CANARY_EMAIL}, code word {CANARY_WORD}."))
            record = client.result(job_id, timeout=90)
            assert llm.stats["http_500"] == 1 and record.llm_calls >= 1

            deadline = time.monotonic() + 30
            while True:  # events reach Flower asynchronously: wait for every stage's success
                tasks = httpx.get(f"{api}/tasks", auth=auth, timeout=10).json()
                succeeded = {t["name"] for t in tasks.values() if t.get("state") == "SUCCESS"}
                if succeeded >= {spec.task for spec in stages_from("intent")} or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert succeeded >= {spec.task for spec in stages_from("intent")}, tasks
            infos = [httpx.get(f"{api}/task/info/{task_id}", auth=auth, timeout=10).json() for task_id in tasks]
            workers = httpx.get(f"{api}/workers", params={"refresh": "1"}, auth=auth, timeout=10).json()
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)  # open without auth
        finally:
            receiver.should_stop = True
            listener.join(timeout=10)
            connection.release()
            _stop(procs)
            for log in logs:
                log.close()
            release_components(app)

    assert metrics.status_code == 200  # /metrics answers without auth: counts and runtimes, no arguments
    task_events = [e for e in events if str(e.get("type", "")).startswith("task-")]
    assert {"task-sent", "task-received", "task-succeeded", "task-retried"} <= {e["type"] for e in task_events}
    seen = "\n".join(_strings([tasks, infos, workers, task_events])) + metrics.text
    assert CANARY_EMAIL not in seen and CANARY_WORD not in seen
    assert "canary-7f3a" not in seen and "example.org" not in seen
    sentences = [s.strip() for s in re.split(r"(?<=[.;:])\s+", doc.read_text()) if len(s.strip()) > 60]
    leaked = [s[:60] for s in sentences if s[:40] in seen]
    assert not leaked, f"chunk text in Flower: {leaked[:3]}"
    assert record.output and str(record.output.get("summary", ""))[:40] not in seen
    # what Flower does hold: the job's ids, per stage, for arguments and results alike
    by_name = {t["name"]: t for t in tasks.values() if t.get("state") == "SUCCESS"}
    for spec in stages_from("intent"):
        task = by_name[spec.task]
        ids = f"job {job_id} stage={spec.name} batch=canary-batch"
        assert (task["args"], task["kwargs"], task["result"]) == (f"(<{ids}>)", "{}", f"<output of {ids}>"), task
    assert any(t.get("retries") for t in tasks.values() if t["name"] == "conveyor.generate"), "the retry was seen"
    # an exception shows as its type only: its message may quote the output or the input
    retried = [e for e in task_events if e["type"] == "task-retried"]
    ids = f"job {job_id} stage=generate batch=canary-batch"
    assert [(e["exception"], e["traceback"]) for e in retried] == [(f"Retry(<{ids}>)", "")]
