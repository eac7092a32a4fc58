"""Distributed mode on real components: Redis broker and state, real `conveyor worker` processes.

Three worker processes split the five queues the way a deployment would (intent+retrieve own
the local Qdrant path with a threads pool; llm on threads; guard+record on prefork).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import load_settings
from schemas import QUEUES, JobRequest
from tests.conftest import REPO, TEST_REDIS_URL, _redis_answers
from workers.app import create_app
from workers.cli import sample_contracts
from workers.client import ConveyorClient, JobFailed
from workers.deadletters import replay_dead_letter
from workers.runtime import release_components

pytestmark = pytest.mark.integration

WORKERS = [
    ("front", "ingest,intent,retrieve", "threads", "4"),
    ("llm", "llm", "threads", "8"),
    ("back", "guard,record", "prefork", "2"),
]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVEYOR_")}
    env.update(CONVEYOR_BROKER_URL=TEST_REDIS_URL, CONVEYOR_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not _redis_answers(TEST_REDIS_URL):
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true but Redis does not answer at {TEST_REDIS_URL}")
        pytest.skip(f"Redis not reachable at {TEST_REDIS_URL}")
    import redis

    redis.Redis.from_url(TEST_REDIS_URL).flushdb()
    data_dir = tmp_path_factory.mktemp("cluster")
    env = _env(data_dir)
    docs = sample_contracts()[:2]
    # ingest before the retrieve worker takes ownership of the local Qdrant path
    subprocess.run(
        [sys.executable, "-m", "workers.cli", "ingest", *map(str, docs), "--tenant", "acme"],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    procs = []
    logs = []
    for name, queues, pool, conc in WORKERS:
        log = (data_dir / f"{name}.log").open("w")
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workers.cli",
                    "worker",
                    "-Q",
                    queues,
                    "-P",
                    pool,
                    "-c",
                    conc,
                    "-n",
                    f"{name}-{uuid.uuid4().hex[:6]}@%h",
                    "-l",
                    "INFO",
                ],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    for key, value in {"CONVEYOR_BROKER_URL": TEST_REDIS_URL, "CONVEYOR_DATA_DIR": str(data_dir)}.items():
        os.environ[key] = value
    settings = load_settings()
    for key in ("CONVEYOR_BROKER_URL", "CONVEYOR_DATA_DIR"):
        del os.environ[key]
    app = create_app(settings)
    try:
        deadline = time.monotonic() + 90
        while True:
            active = app.control.inspect(timeout=1.0).active_queues() or {}
            consumed = {q["name"] for queues in active.values() for q in queues}
            if set(QUEUES) <= consumed and len(active) == len(WORKERS):
                break
            dead = [p.args for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                output = "\n".join((data_dir / f"{n}.log").read_text()[-3000:] for n, *_ in WORKERS)
                pytest.fail(f"workers did not come up (exited: {dead}):\n{output}")
        yield {
            "app": app,
            "client": ConveyorClient(app),
            "docs": [d.stem for d in docs],
            "data_dir": data_dir,
        }
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
        release_components(app)
        redis.Redis.from_url(TEST_REDIS_URL).flushdb()


def test_fifty_jobs_through_real_workers(cluster: dict[str, Any]) -> None:
    client: ConveyorClient = cluster["client"]
    docs = cluster["docs"]
    questions = [
        "Summarize this contract.",
        "What is the term of this agreement?",
        "Who are the parties to this agreement?",
        "What are the payment obligations?",
        "Which law governs this agreement?",
    ]
    job_ids = [
        client.submit(
            JobRequest(
                text=questions[i % len(questions)],
                document_id=docs[i % len(docs)],
                tenant="acme",
                batch_id="it-batch",
                custom_id=f"item-{i}",
            )
        )
        for i in range(50)
    ]
    assert len(set(job_ids)) == 50
    records = [client.result(job_id, timeout=180) for job_id in job_ids]
    assert [r.job_id for r in records] == job_ids
    for r in records:
        assert r.provider == "extractive" and r.chunks_used
        assert r.guard.verdict in {"pass", "repaired", "redacted"}
        assert r.request.document_id in docs
    assert sum(r.intent.value == "summarize" for r in records) >= 10
    assert client.state.batch_counts("it-batch") == {"submitted": 50, "succeeded": 50}
    assert client.status(job_ids[0]).state == "succeeded"
    # each stage marked its next stage's message sent after Celery published it (SkipFinished reads it)
    assert all(client.state.was_sent(job_ids[0], stage) for stage in ("retrieve", "generate", "guard", "record"))
    _assert_worker_logs_carry_ids_and_no_payloads(cluster["data_dir"], job_ids)


def _assert_worker_logs_carry_ids_and_no_payloads(data_dir: Path, job_ids: list[str]) -> None:
    """Every stage's "done" line names its job, stage and batch; no line prints a stage's result
    (Celery's "succeeded in …: {…}" would print the request, chunk texts and the embedding)."""
    logs = {name: (data_dir / f"{name}.log").read_text() for name, *_ in WORKERS}
    done = [line for text in logs.values() for line in text.splitlines() if " done in " in line]
    for stage in ("intent", "retrieve", "generate", "guard", "record"):
        lines = [line for line in done if f" stage={stage} " in line]
        assert {job_id for job_id in job_ids if any(f"job_id={job_id} " in line for line in lines)} == set(job_ids)
        assert all("batch_id=it-batch]" in line for line in lines if any(j in line for j in job_ids))
    everything = "\n".join(logs.values())
    assert "succeeded in" not in everything and "query_embedding" not in everything
    assert "Summarize this contract" not in everything, "request text never reaches a worker log"


def test_resubmitting_an_idempotency_key_returns_the_first_job(cluster: dict[str, Any]) -> None:
    client: ConveyorClient = cluster["client"]
    first = client.submit(
        JobRequest(
            text="Summarize this contract.",
            document_id=cluster["docs"][0],
            tenant="acme",
            idempotency_key="order-77",
        )
    )
    second = client.submit(
        JobRequest(
            text="Summarize this contract.",
            document_id=cluster["docs"][0],
            tenant="acme",
            idempotency_key="order-77",
        )
    )
    assert second == first
    assert client.result(first, timeout=60).job_id == first


def _publish_raw(app: Any, payload: dict[str, Any]) -> str:
    """Publish the way a producer in another language would: plain JSON, task by name, no Celery API."""
    from kombu import Connection

    task_id = uuid.uuid4().hex
    chain = [
        {
            "task": name,
            "args": [],
            "kwargs": {},
            "options": {"queue": queue},
            "subtask_type": None,
            "immutable": False,
        }
        for name, queue in [
            ("conveyor.record", "record"),
            ("conveyor.guard", "guard"),
            ("conveyor.generate", "llm"),
            ("conveyor.retrieve", "retrieve"),
        ]
    ]
    body = [[payload], {}, {"callbacks": None, "errbacks": None, "chain": chain, "chord": None}]
    headers = {
        "lang": "py",
        "task": "conveyor.intent",
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
    }
    with Connection(TEST_REDIS_URL) as conn:
        conn.Producer().publish(
            json.dumps(body),
            routing_key="intent",
            exchange="",
            headers=headers,
            content_type="application/json",
            content_encoding="utf-8",
            correlation_id=task_id,
        )
    return task_id


def test_raw_json_message_from_another_language_runs_the_chain(cluster: dict[str, Any]) -> None:
    client: ConveyorClient = cluster["client"]
    job_id = f"raw-{uuid.uuid4().hex[:8]}"
    _publish_raw(
        cluster["app"],
        {
            "job_id": job_id,
            "tenant": "acme",
            "text": "Summarize this contract.",
            "document_id": cluster["docs"][1],
        },
    )
    record = client.result(job_id, timeout=60)
    assert record.intent.value == "summarize" and record.chunks_used


def test_invalid_input_is_dead_lettered_and_replay_after_fixing_works(cluster: dict[str, Any]) -> None:
    client: ConveyorClient = cluster["client"]
    job_id = f"bad-{uuid.uuid4().hex[:8]}"
    original = {"job_id": job_id, "tenant": "acme", "text": "", "priority": "high"}
    _publish_raw(cluster["app"], original)
    with pytest.raises(JobFailed) as failed:
        client.result(job_id, timeout=60)
    letter = failed.value.dead_letter
    assert letter is not None
    assert (letter.failure_class, letter.stage, letter.retries_exhausted) == (
        "invalid_input",
        "intent",
        False,
    )
    assert letter.request == original
    assert "priority" in letter.error_message and "Extra inputs are not permitted" in letter.error_message
    assert letter.dead_letter_id in {dl.dead_letter_id for dl in client.state.list_dead_letters()}

    fixed = {"tenant": "acme", "text": "Summarize this contract.", "document_id": cluster["docs"][0]}
    replay_dead_letter(cluster["app"], client.state, letter.dead_letter_id, fixed_request=fixed)
    record = client.result(job_id, timeout=60)
    assert record.job_id == job_id and record.intent.value == "summarize"
    stored = client.state.get_dead_letter(letter.dead_letter_id)
    assert stored is not None and stored.state == "replayed" and stored.replays == 1


def test_missing_document_fails_at_retrieve_with_the_request_kept(cluster: dict[str, Any]) -> None:
    client: ConveyorClient = cluster["client"]
    job_id = client.submit(JobRequest(text="What is the term?", document_id="never-ingested", tenant="acme"))
    with pytest.raises(JobFailed) as failed:
        client.result(job_id, timeout=60)
    letter = failed.value.dead_letter
    assert letter is not None and (letter.stage, letter.failure_class) == ("retrieve", "invalid_input")
    assert letter.request["document_id"] == "never-ingested"
    # the dead letter holds retrieve's own input (the intent stage's output), ready for replay
    assert letter.stage_input["request"]["job_id"] == job_id and "intent_confidence" in letter.stage_input
