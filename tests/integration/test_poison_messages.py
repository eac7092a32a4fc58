"""Poison messages on real `conveyor worker` processes: each one becomes one dead letter, no worker dies.

A threads and a prefork worker both consume ``intent``; a third runs the other stages so good
jobs can finish. Each bad message is published with plain kombu, the way a broken producer in
any language would. Before workers/consumer.py, a JSON object body (and a bad ``timelimit``
header, on prefork) killed the worker that took it ("Unrecoverable error: ValueError") and then
the next one; the others vanished with a log line, or failed after the stage ran.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import InvalidInput
from pipeline.settings import load_settings
from schemas import QUEUES, JobRequest
from scripts.poison_messages import POISON, Poison, job_request, publish
from tests.conftest import REPO, TEST_REDIS_URL, _redis_answers
from workers.app import create_app
from workers.chain import MAX_PAYLOAD_BYTES, send_job
from workers.client import ConveyorClient
from workers.consumer import RAW_KEPT_BYTES
from workers.runtime import components_for, release_components

pytestmark = pytest.mark.integration

#: both pools on intent; each worker also owns a queue of its own, so each surely gets a poison message
WORKERS = [
    ("intent-threads", "intent,llm", "threads", "2"),
    ("intent-prefork", "intent,record", "prefork", "1"),
    ("rest", "ingest,retrieve,guard", "threads", "2"),
]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVEYOR_")}
    # no documents are ingested: a text-only job's answer is only flagged as ungrounded, so it records
    env.update(CONVEYOR_BROKER_URL=TEST_REDIS_URL, CONVEYOR_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1",
               CONVEYOR_GUARD_POLICY='{"grounding": "flag"}')
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not _redis_answers(TEST_REDIS_URL):
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true but Redis does not answer at {TEST_REDIS_URL}")
        pytest.skip(f"Redis not reachable at {TEST_REDIS_URL}")
    import redis

    redis.Redis.from_url(TEST_REDIS_URL).flushdb()
    data_dir = tmp_path_factory.mktemp("poison")
    env = _env(data_dir)
    logs = {name: (data_dir / f"{name}.log").open("w") for name, *_ in WORKERS}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "-Q", queues, "-P", pool, "-c", conc, "-l", "INFO"],
            env=env, cwd=REPO, stdout=logs[name], stderr=subprocess.STDOUT,
        )
        for name, queues, pool, conc in WORKERS
    }
    app = create_app(load_settings(broker_url=TEST_REDIS_URL, data_dir=data_dir))
    try:
        deadline = time.monotonic() + 90
        while True:
            active = app.control.inspect(timeout=1.0).active_queues() or {}
            consumed = {q["name"] for queues in active.values() for q in queues}
            if set(QUEUES) <= consumed and len(active) == len(WORKERS):
                break
            dead = [name for name, p in procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                output = "\n".join((data_dir / f"{n}.log").read_text()[-3000:] for n in procs)
                pytest.fail(f"workers did not come up (exited: {dead}):\n{output}")
        yield {"app": app, "procs": procs, "data_dir": data_dir}
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs.values():
            log.close()
        release_components(app)
        redis.Redis.from_url(TEST_REDIS_URL).flushdb()


def _publish(poison: Poison) -> None:
    publish(TEST_REDIS_URL, poison)


def _pids(app: Any) -> dict[str, int]:
    stats = app.control.inspect(timeout=2.0).stats() or {}
    return {node: info["pid"] for node, info in stats.items()}


def test_poison_messages_are_dead_lettered_and_the_workers_live_on(cluster: dict[str, Any]) -> None:
    app, procs = cluster["app"], cluster["procs"]
    state = components_for(app).state
    pids_before = _pids(app)
    assert sorted(pids_before.values()) == sorted(p.pid for p in procs.values())

    for poison in POISON.values():
        _publish(poison)
    deadline = time.monotonic() + 30
    while len(letters := state.list_dead_letters(limit=100)) < len(POISON) and time.monotonic() < deadline:
        time.sleep(0.2)

    # exactly one letter per poison message, told apart by the sha256 of the body it kept
    by_sha = {letter.stage_input["_message"]["body_sha256"]: letter for letter in letters}
    assert len(letters) == len(by_sha) == len(POISON), [(dl.failure_class, dl.error_message) for dl in letters]
    for name, poison in POISON.items():
        body, job_id = poison.body, poison.job_id
        letter = by_sha.get(hashlib.sha256(body).hexdigest())
        assert letter is not None, f"{name}: no dead letter"
        assert (letter.failure_class, letter.job_id, letter.stage) == (poison.failure_class, job_id, poison.stage), (
            name, letter.error_message)
        raw = letter.stage_input["_message"]
        assert raw["body_size"] == len(body) and raw["queue"] == poison.queue, name
        if len(body) <= RAW_KEPT_BYTES:  # kept exactly as received
            kept = raw["body"].encode() if raw["body_encoding"] == "utf-8" else base64.b64decode(raw["body"])
            assert kept == body and not raw["body_truncated"], name
        else:  # the first 64 KiB only: the letter stays small
            assert raw["body_truncated"] and len(raw["body"].encode()) <= RAW_KEPT_BYTES, name
            assert len(letter.model_dump_json()) < 3 * RAW_KEPT_BYTES, name
        if job_id != "unknown":  # the job's status points at its letter: a client waiting on it is told
            status = state.get_status(job_id)
            assert status is not None and (status.state, status.dead_letter_id) == ("failed", letter.dead_letter_id)

    # the same worker processes still run, and serve good jobs
    client = ConveyorClient(app)
    job_ids = [client.submit(JobRequest(text="What is the notice period?", tenant="acme")) for _ in range(4)]
    records = [client.result(job_id, timeout=60) for job_id in job_ids]
    assert [r.job_id for r in records] == job_ids
    assert all(p.poll() is None for p in procs.values())
    assert _pids(app) == pids_before

    # nothing left on any queue or held unacknowledged: every poison message was acknowledged
    import redis

    broker = redis.Redis.from_url(TEST_REDIS_URL)
    assert {q: broker.llen(q) for q in QUEUES} == dict.fromkeys(QUEUES, 0)
    assert broker.hlen("unacked") == 0

    # every worker dead-lettered some of them, none hit an unrecoverable error
    logs = {name: (cluster["data_dir"] / f"{name}.log").read_text() for name in procs}
    for name, log in logs.items():
        assert "dead-lettered a message" in log and "Unrecoverable error" not in log, name
    assert "p-big" in "".join(logs.values()) and "x" * 100 not in "".join(logs.values())


def test_a_producer_refuses_a_message_over_the_limit(cluster: dict[str, Any]) -> None:
    import redis

    broker = redis.Redis.from_url(TEST_REDIS_URL)
    payload = {**job_request("too-big"), "text": "x" * (MAX_PAYLOAD_BYTES + 1)}
    with pytest.raises(InvalidInput, match="over the 1048576-byte message limit"):
        send_job(cluster["app"], payload)
    assert broker.llen("intent") == 0
