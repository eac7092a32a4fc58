"""`conveyor dlq` in-process (click's runner): pages and filters on the embedded SQLite store,
bulk replay through a real Redis broker, and one-line errors when Redis or the broker is down."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from pipeline.state import LetterFilter, RedisStateStore, SqliteStateStore, StateStore
from schemas import DeadLetter, JobRequest
from workers.cli import main

DOWN = "redis://:s3cret@127.0.0.1:1/0"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _seed(state: StateStore, n: int, batch_id: str, failure_class: str = "invalid_input",
          created_at: datetime | None = None) -> list[DeadLetter]:
    letters = []
    for i in range(n):
        req = JobRequest(text="What is the term?", document_id=f"doc-{batch_id}-{i}", custom_id=f"order-{i}",
                         batch_id=batch_id).model_dump(mode="json")
        letter = DeadLetter(job_id=req["job_id"], request=req, stage="retrieve",
                            stage_input={"request": req, "intent": "question", "intent_confidence": 1.0,
                                         "intent_method": "hint"},
                            failure_class=failure_class, error_type="X", error_message="not ingested", attempts=1,
                            created_at=(created_at or datetime.now(UTC)) + timedelta(milliseconds=i))
        assert state.fail(letter)
        letters.append(letter)
    return letters


@pytest.fixture
def sqlite_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SqliteStateStore:
    data = tmp_path / "data"
    monkeypatch.setenv("CONVEYOR_DATA_DIR", str(data))
    return SqliteStateStore(data / "state.sqlite3")


def test_list_pages_with_filters_and_shows_document_and_custom_ids(sqlite_state: SqliteStateStore) -> None:
    _seed(sqlite_state, 120, "b1")
    _seed(sqlite_state, 30, "b1", failure_class="timeout")
    _seed(sqlite_state, 40, "b2")
    table = run("dlq", "list", "--batch", "b1", "--class", "invalid_input", "--limit", "5")
    assert table.exit_code == 0, table.output
    header, *rows, more = table.output.splitlines()
    assert "document" in header and "custom id" in header and len(rows) == 5
    assert "doc-b1-119" in rows[0] and "order-119" in rows[0] and "--offset 5" in more
    listed = json.loads(run("dlq", "list", "--batch", "b1", "--class", "invalid_input", "--limit", "5",
                            "--offset", "5", "--json").output)
    expected = sqlite_state.dead_letter_page(LetterFilter(batch_id="b1", failure_class="invalid_input"),
                                             limit=5, offset=5)
    assert [s["dead_letter_id"] for s in listed] == [s.dead_letter_id for s in expected]
    assert listed[0]["document_id"] == "doc-b1-114" and "request" not in listed[0], "a summary, not the letter"
    assert run("dlq", "list", "--stage", "nope").exit_code == 2


def test_replay_dry_run_lists_and_changes_nothing(sqlite_state: SqliteStateStore) -> None:
    old = _seed(sqlite_state, 3, "b1", created_at=datetime.now(UTC) - timedelta(hours=2))
    _seed(sqlite_state, 2, "b1")
    dry = run("dlq", "replay", "--batch", "b1", "--older-than", "1h", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "dry run: 3 dead letter(s) would be replayed; nothing changed" in dry.output
    assert all(dl.dead_letter_id in dry.output for dl in old)
    assert len(sqlite_state.dead_letter_page(LetterFilter())) == 5 and sqlite_state.batch_counts("b1") == {"failed": 5}


@pytest.mark.parametrize("args", [["dlq", "replay"], ["dlq", "replay", "abc", "--batch", "b1"],
                                  ["dlq", "replay", "--batch", "b1", "--request", "-"],
                                  ["dlq", "replay", "--older-than", "soon"]])
def test_replay_needs_an_id_or_filters(args: list[str], sqlite_state: SqliteStateStore) -> None:
    assert run(*args).exit_code == 2


def test_bulk_replay_enqueues_on_the_broker_and_prints_counts(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_BROKER_URL", redis_url)
    state = RedisStateStore.from_url(redis_url)
    replay = _seed(state, 3, "b1")
    keep = _seed(state, 2, "b1", failure_class="timeout") + _seed(state, 2, "b2")
    out = run("dlq", "replay", "--batch", "b1", "--class", "invalid_input")
    assert out.exit_code == 0, out.output
    assert "replayed 3, failed to enqueue 0, skipped 0, not tried 0 of 3 matching dead letter(s)" in out.output
    assert redis.Redis.from_url(redis_url).llen("retrieve") == 3
    replayed = {s.dead_letter_id for s in state.dead_letter_page(LetterFilter(state="replayed"))}
    assert replayed == {dl.dead_letter_id for dl in replay}
    assert {s.dead_letter_id for s in state.dead_letter_page(LetterFilter())} == {dl.dead_letter_id for dl in keep}
    state.close()


def test_a_broker_that_is_down_stops_the_bulk_replay_and_leaves_the_letters_open(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One publish only: Celery retries it for several seconds before it gives up."""
    monkeypatch.setenv("CONVEYOR_REDIS_URL", redis_url)
    monkeypatch.setenv("CONVEYOR_BROKER_URL", DOWN)
    state = RedisStateStore.from_url(redis_url)
    _seed(state, 3, "b1")
    bulk = run("dlq", "replay", "--batch", "b1")
    assert bulk.exit_code == 1, bulk.output
    assert "broker redis://:**@127.0.0.1:1/0 unreachable" in bulk.output and "s3cret" not in bulk.output
    assert "replayed 0, failed to enqueue 1, skipped 0, not tried 2 of 3 matching" in bulk.output
    assert "Traceback" not in bulk.output and bulk.output.endswith("3 dead letter(s) stay open\n")
    assert len(state.dead_letter_page(LetterFilter(batch_id="b1"))) == 3
    assert state.batch_counts("b1") == {"failed": 3}
    state.close()


@pytest.fixture
def redis_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """By default a store call rides out ~20 s of Redis outage; the message is the same without it."""
    monkeypatch.setenv("CONVEYOR_REDIS_RETRY_S", "0")


@pytest.mark.parametrize("args", [["dlq", "list"], ["dlq", "show", "abc"], ["dlq", "replay", "abc"],
                                  ["dlq", "replay", "--batch", "b1", "--dry-run"]])
def test_unreachable_redis_is_one_line_naming_the_server(
    args: list[str], monkeypatch: pytest.MonkeyPatch, redis_fails_fast: None
) -> None:
    monkeypatch.setenv("CONVEYOR_BROKER_URL", DOWN)
    out = run(*args)
    assert out.exit_code == 1
    assert out.output == "Error: state store unreachable at 127.0.0.1:1: ConnectionError\n"
