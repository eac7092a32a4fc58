"""Dead letters: what is stored, and replay (one letter and in bulk) against a real Celery app:
the in-memory transport when the broker works, a closed port when it does not."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from pipeline.errors import InvalidInput, ProviderUnavailable
from pipeline.settings import load_settings
from pipeline.state import LetterFilter, SqliteStateStore
from schemas import DeadLetter, JobRequest
from workers.app import create_app
from workers.deadletters import (
    RAW_KEEP_BYTES,
    AlreadyReplayed,
    replay_dead_letter,
    replay_matching,
    write_dead_letter,
)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SqliteStateStore]:
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    yield store
    store.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Celery]:
    """On the in-memory transport, which is process-wide: queues are emptied before and after."""
    celery = create_app(load_settings(data_dir=tmp_path))
    _drain(celery)
    yield celery
    _drain(celery)


@pytest.fixture
def broker_down(tmp_path: Path) -> Celery:
    """A broker on a closed port, set to fail at once instead of retrying (as in test_client)."""
    url = "redis://:s3cret@127.0.0.1:1/0"
    celery = create_app(load_settings(data_dir=tmp_path, broker_url=url, redis_url=url))
    celery.conf.task_publish_retry = False
    celery.conf.broker_connection_retry = False
    celery.conf.broker_connection_max_retries = 0
    celery.conf.broker_transport_options = {**celery.conf.broker_transport_options, "max_retries": 0}
    return celery


def _drain(app: Celery, queue: str | None = None) -> list[tuple[str, Any]]:
    """(task name, first argument) of every message taken off ``queue`` (or all stage queues)."""
    from schemas import QUEUES

    taken = []
    with app.connection_for_write() as conn:
        for q in [queue] if queue else QUEUES:
            while (message := conn.default_channel.basic_get(q)) is not None:
                taken.append((message.headers["task"], message.decode()[0][0]))
    return taken


def _fail_at_retrieve(state: SqliteStateStore, *, batch_id: str = "b1", failure_class: str = "invalid_input",
                      created_at: datetime | None = None, **request: Any) -> DeadLetter:
    """A job that failed at retrieve, its letter written at ``created_at`` (default now)."""
    req = JobRequest(text="What is the term?", document_id="late-doc", batch_id=batch_id, **request)
    request_json = req.model_dump(mode="json")
    payload = {"request": request_json, "intent": "question", "intent_confidence": 1.0, "intent_method": "hint"}
    letter = DeadLetter(job_id=req.job_id, request=request_json, stage="retrieve", stage_input=payload,
                        failure_class=failure_class, error_type="InvalidInput", error_message="not ingested",
                        attempts=1, created_at=created_at or datetime.now(UTC))
    assert state.fail(letter)
    return letter


def test_a_large_request_is_stored_once_and_comes_back_whole(state: SqliteStateStore) -> None:
    payload = {"job_id": "big-1", "text": "x" * 2_000_000, "priority": "high"}  # invalid: too long, extra field
    letter = write_dead_letter(state, stage="intent", payload=payload, error=InvalidInput("too big"), attempts=1,
                               retries_exhausted=False)
    body, _ = state._letter(letter.dead_letter_id) or ("", None)
    assert len(body.encode()) < 2_001_000 < len(letter.model_dump_json())
    stored = state.get_dead_letter(letter.dead_letter_id)
    assert stored is not None and stored.request == payload and stored.stage_input == payload


def test_an_unreadable_payload_is_kept_bounded_with_its_size_and_digest(state: SqliteStateStore) -> None:
    huge = ["not a message"] * 200_000
    letter = write_dead_letter(state, stage="generate", payload=huge, error=InvalidInput("not a dict"), attempts=1,
                               retries_exhausted=False)
    data = json.dumps(huge, ensure_ascii=False).encode()
    assert letter.request == letter.stage_input
    raw = letter.request
    assert raw["_raw_bytes"] == len(data) and raw["_raw_sha256"] == hashlib.sha256(data).hexdigest()
    assert data.decode().startswith(raw["_raw_head"]) and len(raw["_raw_head"]) == RAW_KEEP_BYTES
    body, _ = state._letter(letter.dead_letter_id) or ("", None)
    assert len(body.encode()) < 2 * RAW_KEEP_BYTES, "bounded (the head is JSON text, escaped once more)"
    small = write_dead_letter(state, stage="generate", payload=[1, 2], error=InvalidInput("not a dict"), attempts=1,
                              retries_exhausted=False)
    assert small.request == {"_raw": [1, 2]}, "a small payload is kept exactly as received"


def test_replay_enqueues_at_the_failed_stage_then_marks_the_letter(app: Celery, state: SqliteStateStore) -> None:
    letter = _fail_at_retrieve(state)
    replayed = replay_dead_letter(app, state, letter.dead_letter_id)
    assert (replayed.state, replayed.replays) == ("replayed", 1)
    ((task, payload),) = _drain(app)
    assert task == "conveyor.retrieve" and payload == letter.stage_input, "the request is re-assembled"
    status = state.get_status(letter.job_id)
    assert status is not None and (status.state, status.stage) == ("queued", "retrieve")
    assert state.batch_counts("b1") == {"failed": 0}
    with pytest.raises(AlreadyReplayed, match="already replayed"):
        replay_dead_letter(app, state, letter.dead_letter_id)
    assert _drain(app) == []


def test_a_broker_that_refuses_the_replay_changes_nothing(broker_down: Celery, state: SqliteStateStore) -> None:
    letter = _fail_at_retrieve(state)
    with pytest.raises(ProviderUnavailable) as info:
        replay_dead_letter(broker_down, state, letter.dead_letter_id)
    message = str(info.value)
    assert "127.0.0.1:1" in message and "s3cret" not in message and "left unchanged" in message
    stored = state.get_dead_letter(letter.dead_letter_id)
    assert stored is not None and (stored.state, stored.replays) == ("open", 0)
    status = state.get_status(letter.job_id)
    assert status is not None and (status.state, status.dead_letter_id) == ("failed", letter.dead_letter_id)
    assert state.batch_counts("b1") == {"failed": 1}


def test_replay_with_a_fixed_request_restarts_at_intent_with_the_same_job_id(
    app: Celery, state: SqliteStateStore
) -> None:
    bad = {"job_id": "bad-1", "text": "", "priority": "high"}
    letter = write_dead_letter(state, stage="intent", payload=bad, error=InvalidInput("extra field"), attempts=1,
                               retries_exhausted=False)
    with pytest.raises(ValueError, match="validation error"):
        replay_dead_letter(app, state, letter.dead_letter_id)
    assert _drain(app) == [] and state.get_dead_letter(letter.dead_letter_id).state == "open"  # type: ignore[union-attr]
    replay_dead_letter(app, state, letter.dead_letter_id, fixed_request={"text": "Summarize.", "document_id": "d"})
    ((task, payload),) = _drain(app)
    assert task == "conveyor.intent" and payload["job_id"] == "bad-1" and payload["text"] == "Summarize."


def test_bulk_replay_by_filter_and_its_dry_run(app: Celery, state: SqliteStateStore) -> None:
    old = datetime.now(UTC) - timedelta(hours=1)
    b1_old = [_fail_at_retrieve(state, created_at=old, custom_id=f"o{i}") for i in range(3)]
    b1_new = [_fail_at_retrieve(state) for _ in range(2)]
    b1_timeout = _fail_at_retrieve(state, failure_class="timeout", created_at=old)
    b2 = _fail_at_retrieve(state, batch_id="b2", created_at=old)
    where = LetterFilter(batch_id="b1", failure_class="invalid_input", created_before=datetime.now(UTC)
                         - timedelta(minutes=10))

    dry = replay_matching(app, state, where, dry_run=True)
    assert {s.dead_letter_id for s in dry.matched} == {dl.dead_letter_id for dl in b1_old}
    assert dry.replayed == [] and _drain(app) == [] and state.batch_counts("b1") == {"failed": 6}
    assert len(state.dead_letter_page(LetterFilter(), limit=100)) == 7, "the dry run changed nothing"

    done = replay_matching(app, state, where)
    assert {s.dead_letter_id for s in done.replayed} == {dl.dead_letter_id for dl in b1_old}
    assert (done.not_enqueued, done.skipped) == ([], [])
    assert sorted(p["request"]["custom_id"] for _, p in _drain(app)) == ["o0", "o1", "o2"]
    still_open = {s.dead_letter_id for s in state.dead_letter_page(LetterFilter(), limit=100)}
    assert still_open == {dl.dead_letter_id for dl in [*b1_new, b1_timeout, b2]}
    assert state.batch_counts("b1") == {"failed": 3}


def test_a_job_that_has_a_record_is_not_replayed(app: Celery, state: SqliteStateStore) -> None:
    """A duplicate delivery may have finished the job after its letter was written."""
    letter = _fail_at_retrieve(state, batch_id="dup")
    state._db.execute("INSERT INTO kv VALUES ('record', ?, '{}', 0)", (letter.job_id,))
    with pytest.raises(ValueError, match="already has a record"):
        replay_dead_letter(app, state, letter.dead_letter_id)
    done = replay_matching(app, state, LetterFilter(batch_id="dup"))
    assert done.replayed == [] and [s.dead_letter_id for s, _ in done.skipped] == [letter.dead_letter_id]
    assert _drain(app) == []


def test_bulk_replay_walks_more_than_one_page_and_replays_each_letter_once(
    app: Celery, state: SqliteStateStore
) -> None:
    letters = [_fail_at_retrieve(state, batch_id="big") for _ in range(230)]
    done = replay_matching(app, state, LetterFilter(batch_id="big"))
    assert len(done.replayed) == 230 and len(done.matched) == 230
    assert sorted(p["request"]["job_id"] for _, p in _drain(app)) == sorted(dl.job_id for dl in letters)
    assert state.dead_letter_page(LetterFilter(batch_id="big")) == []


def test_bulk_replay_stops_at_the_first_job_the_broker_refuses_and_keeps_every_letter_open(
    broker_down: Celery, state: SqliteStateStore
) -> None:
    letters = [_fail_at_retrieve(state, batch_id="down") for _ in range(120)]
    done = replay_matching(broker_down, state, LetterFilter(batch_id="down"))
    assert done.replayed == [] and len(done.not_enqueued) == 1 and len(done.not_tried) == 119
    assert len(done.matched) == 120 and "127.0.0.1:1" in done.not_enqueued[0][1]
    assert len(state.dead_letter_page(LetterFilter(batch_id="down"), limit=200)) == len(letters)
    assert state.batch_counts("down") == {"failed": 120}
