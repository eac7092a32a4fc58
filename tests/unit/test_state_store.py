"""One contract for both state stores: embedded SQLite and Redis (fakeredis here, real Redis in integration)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

from pipeline.state import RedisStateStore, SqliteStateStore, StateStore
from schemas import DeadLetter, JobStatus


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        s: StateStore = SqliteStateStore(tmp_path / "state.sqlite3")
    else:
        s = RedisStateStore(fakeredis.FakeRedis(decode_responses=True))
    yield s
    s.close()


def _letter(job_id: str, **kw: object) -> DeadLetter:
    return DeadLetter(
        job_id=job_id,
        request={"job_id": job_id, "text": "x"},
        stage="retrieve",
        stage_input={"request": {"job_id": job_id}},
        failure_class="invalid_input",
        error_type="InvalidInput",
        error_message="no such document",
        attempts=1,
        **kw,
    )


def test_idempotency_key_first_claimant_wins(store: StateStore) -> None:
    assert store.claim_idempotency_key("t", "k1", "job-a") is None
    assert store.claim_idempotency_key("t", "k1", "job-b") == "job-a"
    assert store.claim_idempotency_key("other-tenant", "k1", "job-c") is None


def test_status_round_trip(store: StateStore) -> None:
    assert store.get_status("j") is None
    store.set_status(JobStatus(job_id="j", state="running", stage="retrieve", attempts=2))
    got = store.get_status("j")
    assert got is not None and (got.state, got.stage, got.attempts) == ("running", "retrieve", 2)


def test_dead_letters_newest_first_and_filtered_by_state(store: StateStore) -> None:
    first, second = _letter("j1"), _letter("j2")
    store.put_dead_letter(first)
    store.put_dead_letter(second)
    assert [dl.job_id for dl in store.list_dead_letters()] == ["j2", "j1"]
    store.put_dead_letter(first.model_copy(update={"state": "replayed", "replays": 1}))
    assert [dl.job_id for dl in store.list_dead_letters()] == ["j2"]
    assert [dl.job_id for dl in store.list_dead_letters(state=None)] == ["j2", "j1"]
    got = store.get_dead_letter(first.dead_letter_id)
    assert got is not None and got.state == "replayed" and got.request["text"] == "x"


def test_batch_counters(store: StateStore) -> None:
    store.batch_incr("b", "submitted", 3)
    store.batch_incr("b", "succeeded")
    store.batch_incr("b", "failed")
    store.batch_incr("b", "failed", -1)
    assert store.batch_counts("b") == {"submitted": 3, "succeeded": 1, "failed": 0}
    assert store.batch_counts("nothing") == {}


def test_sqlite_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    s = SqliteStateStore(path)
    s.put_dead_letter(_letter("j9"))
    s.close()
    again = SqliteStateStore(path)
    assert [dl.job_id for dl in again.list_dead_letters()] == ["j9"]
    again.close()


def test_redis_store_unreachable_is_retryable() -> None:
    import redis

    from pipeline.errors import ProviderUnavailable

    s = RedisStateStore(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    with pytest.raises(ProviderUnavailable, match="state store unreachable"):
        s.ping()


def test_released_idempotency_key_can_be_claimed_again(store: StateStore) -> None:
    assert store.claim_idempotency_key("t", "k", "job-a") is None
    store.release_idempotency_key("t", "k")
    assert store.claim_idempotency_key("t", "k", "job-b") is None
