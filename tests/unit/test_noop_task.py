"""``conveyor.noop``: the bare Celery task the batch benchmark chains through the stage queues."""

from __future__ import annotations

import json
from pathlib import Path

from kombu import Message

from pipeline.settings import load_settings
from schemas import QUEUES
from workers.app import create_app
from workers.consumer import check_message
from workers.tasks import NOOP_TASK, noop


def test_noop_is_registered_with_the_stage_tasks_and_returns_its_argument(tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path))
    assert NOOP_TASK in app.tasks
    assert all(spec_task in app.tasks for spec_task in ("conveyor.intent", "conveyor.record"))
    payload = {"job_id": "j-1", "n": [1, 2]}
    assert noop(payload) is payload
    # .result, not .get(): an embedded worker started earlier in this process marks it "inside a task"
    applied = app.tasks[NOOP_TASK].apply(args=(payload,))
    assert applied.successful() and applied.result == payload
    # not a stage: no route of its own, it goes where the signature says
    assert NOOP_TASK not in app.conf.task_routes
    assert app.signature(NOOP_TASK, queue="llm").options["queue"] == "llm"
    assert "llm" in QUEUES


def test_a_noop_chain_message_passes_the_workers_message_check(tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path))
    headers = {"task": NOOP_TASK, "id": "t-1", "retries": 0, "timelimit": [None, None]}
    chain = [{"task": NOOP_TASK, "args": [], "kwargs": {}, "options": {"queue": q}} for q in ("guard", "record")]
    body = json.dumps([[{"x": 1}], {}, {"chain": chain}]).encode()
    message = Message(body=body, headers=headers, content_type="application/json", content_encoding="utf-8")
    assert check_message(message, app.tasks) is None
