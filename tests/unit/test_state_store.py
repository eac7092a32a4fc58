"""One contract for both state stores: embedded SQLite, Redis on fakeredis, and a real Redis
(the atomic writes are Lua scripts: their semantics are the server's, so they run there too)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from pipeline.errors import ProviderUnavailable
from pipeline.state import LetterFilter, RedisStateStore, SqliteStateStore, StateStore
from schemas import DeadLetter, Intent, JobRecord, JobRequest, JobStatus
from schemas.stages import GuardReport, Usage


@pytest.fixture(params=["sqlite", "fakeredis", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        s: StateStore = SqliteStateStore(tmp_path / "state.sqlite3")
    elif request.param == "fakeredis":
        s = RedisStateStore(fakeredis.FakeRedis(decode_responses=True))
    else:
        s = RedisStateStore.from_url(request.getfixturevalue("redis_url"))
    yield s
    s.close()


BASE = datetime(2025, 1, 1, tzinfo=UTC)


def _letter(job_id: str, *, stage: str = "retrieve", failure_class: str = "invalid_input",
            batch_id: str | None = None, created_at: datetime | None = None, **request: Any) -> DeadLetter:
    req = {"job_id": job_id, "text": "x", **({"batch_id": batch_id} if batch_id else {}), **request}
    return DeadLetter(
        job_id=job_id,
        request=req,
        stage=stage,
        stage_input=req if stage == "intent" else {"request": req, "intent": "question"},
        failure_class=failure_class,
        error_type="InvalidInput",
        error_message="no such document",
        attempts=1,
        created_at=created_at or datetime.now(UTC),
    )


def _record(job_id: str, batch_id: str | None = None, summary: str = "done") -> JobRecord:
    return JobRecord(
        job_id=job_id,
        request=JobRequest(job_id=job_id, text="Summarize.", batch_id=batch_id),
        intent=Intent.summarize,
        intent_confidence=1.0,
        chunks_used=[],
        output={"summary": summary},
        provider="extractive",
        model="extractive-v1",
        prompt_version="summarize/v1",
        usage=Usage(),
        cost_usd=0.0,
        llm_calls=0,
        cached=False,
        guard=GuardReport(verdict="pass"),
        timings_ms={},
    )


def _state(store: StateStore, job_id: str) -> str | None:
    status = store.get_status(job_id)
    return status.state if status else None


def test_idempotency_key_first_claimant_wins(store: StateStore) -> None:
    assert store.claim_idempotency_key("t", "k1", "job-a") is None
    assert store.claim_idempotency_key("t", "k1", "job-b") == "job-a"
    assert store.claim_idempotency_key("other-tenant", "k1", "job-c") is None


def test_released_idempotency_key_can_be_claimed_again(store: StateStore) -> None:
    assert store.claim_idempotency_key("t", "k", "job-a") is None
    store.release_idempotency_key("t", "k")
    assert store.claim_idempotency_key("t", "k", "job-b") is None


def test_status_round_trip(store: StateStore) -> None:
    assert store.get_status("j") is None
    assert store.set_status(JobStatus(job_id="j", state="running", stage="retrieve", attempts=2))
    got = store.get_status("j")
    assert got is not None and (got.state, got.stage, got.attempts) == ("running", "retrieve", 2)


def test_complete_writes_record_status_and_count_once(store: StateStore) -> None:
    assert not store.has_record("j")
    assert store.complete(_record("j", "b", summary="first")) is True
    assert store.complete(_record("j", "b", summary="redelivered")) is False
    stored = store.get_record("j")
    assert stored is not None and stored.output == {"summary": "first"}
    assert store.has_record("j") and _state(store, "j") == "succeeded"
    assert store.batch_counts("b") == {"succeeded": 1}


def test_concurrent_completions_of_one_job_count_once(store: StateStore) -> None:
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(store.complete(_record("j", "b")))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert store.batch_counts("b") == {"succeeded": 1}


def test_a_finished_job_never_goes_back_to_queued_or_running(store: StateStore) -> None:
    store.complete(_record("done"))
    assert store.set_status(JobStatus(job_id="done", state="running", stage="guard")) is False
    assert _state(store, "done") == "succeeded"
    store.fail(_letter("lost"))
    assert store.set_status(JobStatus(job_id="lost", state="queued", stage="intent")) is False
    assert _state(store, "lost") == "failed"
    with pytest.raises(ValueError, match="complete\\(\\) or fail\\(\\)"):
        store.set_status(JobStatus(job_id="x", state="succeeded"))


def test_fail_stores_the_letter_marks_the_job_and_counts_it_once(store: StateStore) -> None:
    first, again = _letter("j", batch_id="b"), _letter("j", batch_id="b")
    assert store.fail(first) is True
    status = store.get_status("j")
    assert status is not None and (status.state, status.dead_letter_id) == ("failed", first.dead_letter_id)
    assert store.fail(again) is True  # a redelivered stage failing once more: one failed job, not two
    assert store.batch_counts("b") == {"failed": 1}
    status = store.get_status("j")
    assert status is not None and status.dead_letter_id == again.dead_letter_id


def test_a_failure_after_the_record_changes_nothing(store: StateStore) -> None:
    store.complete(_record("j", "b"))
    letter = _letter("j", batch_id="b")
    assert store.fail(letter) is False
    assert store.get_dead_letter(letter.dead_letter_id) is None
    assert _state(store, "j") == "succeeded" and store.batch_counts("b") == {"succeeded": 1}


def test_reopen_marks_the_letter_and_puts_the_job_back_in_the_queue(store: StateStore) -> None:
    letter = _letter("j", batch_id="b")
    store.fail(letter)
    reopened = store.reopen(letter.dead_letter_id, "retrieve")
    assert reopened is not None and (reopened.state, reopened.replays) == ("replayed", 1)
    status = store.get_status("j")
    assert status is not None and (status.state, status.stage, status.dead_letter_id) == ("queued", "retrieve", None)
    assert store.batch_counts("b") == {"failed": 0}
    stored = store.get_dead_letter(letter.dead_letter_id)
    assert stored is not None and (stored.state, stored.replays) == ("replayed", 1) and stored.replayed_at
    assert store.reopen(letter.dead_letter_id, "retrieve") is None, "a letter is replayed once"
    assert store.dead_letter_page(LetterFilter(state="open")) == []
    assert [s.dead_letter_id for s in store.dead_letter_page(LetterFilter(state="replayed"))] == [
        letter.dead_letter_id]


def test_reopen_after_the_replayed_job_already_finished_leaves_it_finished(store: StateStore) -> None:
    """Replay enqueues before it reopens: a fast worker may write the record in between."""
    letter = _letter("j", batch_id="b")
    store.fail(letter)
    store.complete(_record("j", "b"))
    assert store.batch_counts("b") == {"succeeded": 1, "failed": 0}
    assert store.reopen(letter.dead_letter_id, "retrieve") is not None
    assert _state(store, "j") == "succeeded" and store.batch_counts("b") == {"succeeded": 1, "failed": 0}


def test_a_dead_letter_stores_its_request_once_and_reads_back_whole(store: StateStore) -> None:
    big = "clause " * 300_000  # ≈ 2 MB of request text
    later, first = _letter("later", text=big), _letter("first", stage="intent", text=big)
    for letter in (later, first):
        store.fail(letter)
        body, _summary = store._letter(letter.dead_letter_id) or ("", None)
        assert len(body.encode()) < len(big) * 1.01, "the request is not stored twice"
        assert store.get_dead_letter(letter.dead_letter_id) == letter
    assert len(later.model_dump_json()) > 2 * len(big), "the letter itself carries it twice"


def test_pages_are_newest_first_filtered_and_offset(store: StateStore) -> None:
    letters = [
        _letter(f"j{i}", created_at=BASE + timedelta(seconds=i), batch_id=f"b{i % 3}",
                failure_class="invalid_input" if i % 2 else "timeout", stage="retrieve" if i % 5 else "generate",
                document_id=f"doc-{i}", custom_id=f"order-{i}")
        for i in range(300)
    ]
    for letter in letters:
        store.fail(letter)
    for i in range(0, 300, 7):
        store.reopen(letters[i].dead_letter_id, "retrieve")
    newest_first = letters[::-1]
    replayed = {letters[i].dead_letter_id for i in range(0, 300, 7)}

    def expect(where: LetterFilter, limit: int, offset: int) -> list[str]:
        match = [dl.dead_letter_id for dl in newest_first
                 if (where.state is None or (dl.dead_letter_id in replayed) == (where.state == "replayed"))
                 and where.batch_id in (None, dl.request["batch_id"])
                 and where.failure_class in (None, dl.failure_class) and where.stage in (None, dl.stage)
                 and (where.created_before is None or dl.created_at < where.created_before)]
        return match[offset:offset + limit]

    cases = [
        (LetterFilter(state=None), 25, 0),
        (LetterFilter(), 25, 50),
        (LetterFilter(state="replayed"), 10, 3),
        (LetterFilter(batch_id="b1"), 30, 10),
        (LetterFilter(batch_id="b2", failure_class="timeout", stage="retrieve"), 20, 5),
        (LetterFilter(state=None, stage="generate", created_before=BASE + timedelta(seconds=150)), 50, 0),
        (LetterFilter(batch_id="b0", failure_class="invalid_input"), 100, 40),
        (LetterFilter(batch_id="nope"), 10, 0),
    ]
    for where, limit, offset in cases:
        page = store.dead_letter_page(where, limit=limit, offset=offset)
        assert [s.dead_letter_id for s in page] == expect(where, limit, offset), where
    top = store.dead_letter_page(LetterFilter(state=None), limit=1)[0]
    assert (top.job_id, top.batch_id, top.document_id, top.custom_id) == ("j299", "b2", "doc-299", "order-299")
    assert [dl.job_id for dl in store.list_dead_letters(limit=3)] == ["j299", "j298", "j297"]


class _Commands:
    """Every command the fake Redis server runs, scripts' own calls included."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from fakeredis._socket._base import BaseFakeSocket

        self.seen: list[tuple[str, list[Any]]] = []
        original = BaseFakeSocket._run_command

        def spy(sock: Any, func: Any, sig: Any, args: list[Any], from_script: bool) -> Any:
            self.seen.append((sig.name, [a.decode() if isinstance(a, bytes) else a for a in args]))
            return original(sock, func, sig, args, from_script)

        monkeypatch.setattr(BaseFakeSocket, "_run_command", spy)


def test_a_redis_page_reads_the_index_and_page_summaries_only(monkeypatch: pytest.MonkeyPatch) -> None:
    store = RedisStateStore(fakeredis.FakeRedis(decode_responses=True))
    for i in range(300):
        store.fail(_letter(f"j{i}", created_at=BASE + timedelta(seconds=i), batch_id=f"b{i % 3}",
                           failure_class="invalid_input" if i % 2 else "timeout"))
    commands = _Commands(monkeypatch)
    page = store.dead_letter_page(LetterFilter(batch_id="b1", failure_class="timeout"), limit=20, offset=10)
    assert len(page) == 20
    names = [name for name, _ in commands.seen]
    assert "get" not in names and "mget" not in names, "no letter body is read"
    (hmget,) = [args for name, args in commands.seen if name == "hmget"]
    assert len(hmget) == 1 + 20, "summaries of the page only"
    assert len(commands.seen) <= 10, commands.seen


def test_a_sqlite_page_is_an_index_range_that_never_reads_a_body(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    for i in range(300):
        store.fail(_letter(f"j{i}", created_at=BASE + timedelta(seconds=i), batch_id=f"b{i % 3}"))
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    assert len(store.dead_letter_page(LetterFilter(batch_id="b1"), limit=20, offset=10)) == 20
    (query,) = statements
    assert query.startswith("SELECT summary FROM dead_letters") and "body" not in query
    plan = " ".join(str(row[3]) for row in store._db.execute("EXPLAIN QUERY PLAN " + query))
    assert "USING INDEX" in plan and "TEMP B-TREE" not in plan, plan
    store.close()


def test_sqlite_rolls_back_a_bookkeeping_write_that_fails_half_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStateStore(tmp_path / "state.sqlite3")

    def broken(*args: Any) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SqliteStateStore, "_add", staticmethod(broken))
    with pytest.raises(sqlite3.OperationalError):
        store.complete(_record("j", "b"))
    letter = _letter("k", batch_id="b")
    with pytest.raises(sqlite3.OperationalError):
        store.fail(letter)
    monkeypatch.undo()
    assert not store.has_record("j") and store.get_status("j") is None
    assert store.get_dead_letter(letter.dead_letter_id) is None and store.get_status("k") is None
    assert store.complete(_record("j", "b")) is True, "nothing half-written blocks the retry"
    store.close()


def test_redis_scripts_read_everything_before_their_first_write(redis_url: str) -> None:
    """Redis does not roll a script back: one that stops on bad data must stop before writing."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisStateStore(client)
    client.set("conveyor:status:j", "not json")
    letter = _letter("j", batch_id="b")
    with pytest.raises(redis.ResponseError):
        store.complete(_record("j", "b"))
    with pytest.raises(redis.ResponseError):
        store.fail(letter)
    assert not store.has_record("j") and store.get_dead_letter(letter.dead_letter_id) is None
    assert store.batch_counts("b") == {} and store.dead_letter_page(LetterFilter(state=None)) == []
    store.close()


def test_sqlite_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    s = SqliteStateStore(path)
    s.fail(_letter("j9"))
    s.close()
    again = SqliteStateStore(path)
    assert [dl.job_id for dl in again.list_dead_letters()] == ["j9"]
    again.close()


def test_redis_store_unreachable_is_retryable_and_names_the_server() -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    s = RedisStateStore(redis.Redis(host="127.0.0.1", port=1, password="s3cret", socket_connect_timeout=0.2,
                                    retry=Retry(NoBackoff(), 0)))
    with pytest.raises(ProviderUnavailable, match="state store unreachable at 127.0.0.1:1") as info:
        s.ping()
    assert "s3cret" not in str(info.value)


def test_usage_of_failed_attempts_is_added_up_and_handed_over_once(tmp_path: Path) -> None:
    stores: list[StateStore] = [SqliteStateStore(tmp_path / "usage.sqlite3"),
                                RedisStateStore(fakeredis.FakeRedis(decode_responses=True))]
    for store in stores:
        store.add_usage("j1", {"llm_calls": 3, "cost_nusd": 1500})
        store.add_usage("j1", {"llm_calls": 2, "prompt_tokens": 40})
        assert store.take_usage("j1") == {"llm_calls": 5, "cost_nusd": 1500, "prompt_tokens": 40}
        assert store.take_usage("j1") == {}
        assert store.take_usage("unknown") == {}


def test_deliveries_are_counted_per_message(store: StateStore) -> None:
    assert [store.count_delivery("task-1:0") for _ in range(3)] == [1, 2, 3]
    assert store.count_delivery("task-1:1") == 1, "a retry is a new message"


def test_a_periodic_turn_goes_to_one_caller_per_interval(store: StateStore) -> None:
    first, second = store.claim_turn("reconcile", 60), store.claim_turn("reconcile", 60)
    if isinstance(store, SqliteStateStore):
        assert first and second, "one process per SQLite store: always its turn"
    else:
        assert (first, second) == (True, False)


def test_records_statuses_and_batches_expire_after_the_retention_but_open_letters_stay(tmp_path: Path) -> None:
    """Redis: every retained key carries the retention as its TTL (Lua scripts included)."""
    client = fakeredis.FakeRedis(decode_responses=True)
    store = RedisStateStore(client, retention_s=3600)
    record = _record("kept-a-while", batch_id="b")
    store.set_status(JobStatus(job_id="kept-a-while", state="running", stage="record"))
    assert store.complete(record)
    store.fail(_letter("failed-job", batch_id="b"))
    store.claim_idempotency_key("t", "k", "kept-a-while")
    ttls = {key: client.ttl(key) for key in client.keys("conveyor:*")}
    for key in ("conveyor:record:kept-a-while", "conveyor:status:kept-a-while", "conveyor:status:failed-job",
                "conveyor:batch:b", "conveyor:idem:t:k"):
        assert 3500 < ttls[key] <= 3600, key
    letters = [k for k in ttls if k.startswith("conveyor:dlq:")]
    assert letters and all(ttls[k] == -1 for k in letters), "dead letters never expire on their own"


def test_sqlite_expires_old_rows_at_open_and_keeps_open_letters(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SqliteStateStore(path, retention_s=3600)
    store.complete(_record("old", batch_id="b"))
    store.fail(_letter("old-failure", batch_id="b"))
    store.close()
    reopened = SqliteStateStore(path, retention_s=3600)
    assert reopened.get_record("old") is not None, "within the retention"
    assert reopened.expire(now=time.time() + 7200) > 0
    assert reopened.get_record("old") is None and reopened.get_status("old") is None
    assert reopened.batch_counts("b") == {}
    assert [dl.job_id for dl in reopened.list_dead_letters()] == ["old-failure"]


def test_a_batchs_items_are_read_in_pages_and_its_counters_tell_when_it_may_be_finished(store: StateStore) -> None:
    """``batch status`` reads items page by page; ``wait_batch`` polls two counters and reads every
    status only when they say the batch may be finished (they never count fewer settled items)."""
    from schemas.batch import BatchInfo, BatchItem
    from workers.batch import batch_status, may_be_finished

    store.put_batch(BatchInfo(batch_id="b", source="docs"))
    items = [BatchItem(custom_id=f"doc-{i:02d}.md", job_id=f"b.{i:02d}", document_id=f"doc-{i:02d}.md",
                       identity=str(i)) for i in range(25)]
    store.add_batch_items("b", items)
    pages = list(store.iter_batch_items("b", page=10))
    assert sorted(item.custom_id for page in pages for item in page) == sorted(i.custom_id for i in items)
    assert len(pages) >= 2 and store.batch_item_count("b") == 25
    assert not may_be_finished(store, "b")
    for item in items[:24]:
        store.complete(_record(item.job_id, batch_id="b"))
    assert not may_be_finished(store, "b") and batch_status(store, "b").pending == 1
    store.fail(_letter(items[24].job_id, batch_id="b", failure_class="invalid_input"))
    assert may_be_finished(store, "b")
    status = batch_status(store, "b")
    assert (status.items, status.succeeded, status.failed, status.failures) == (25, 24, 1, {"invalid_input": 1})
    assert status.finished


def test_an_item_a_scan_returns_twice_is_counted_once(tmp_path: Path) -> None:
    """Redis HSCAN may return an entry more than once when the hash grows during the scan."""
    from schemas.batch import BatchInfo, BatchItem
    from workers.batch import batch_status

    class Repeating(SqliteStateStore):
        def _hscan(self, ns: str, key: str, page: int) -> Iterator[list[tuple[str, str]]]:
            pages = list(super()._hscan(ns, key, page))
            yield from [*pages, pages[0]]

    store = Repeating(tmp_path / "s.db")
    store.put_batch(BatchInfo(batch_id="b", source="docs"))
    store.add_batch_items("b", [BatchItem(custom_id=f"d{i}.md", job_id=f"b.{i}", document_id=f"d{i}.md",
                                          identity=str(i)) for i in range(3)])
    store.complete(_record("b.0", batch_id="b"))
    status = batch_status(store, "b")
    assert (status.items, status.succeeded, status.pending) == (3, 1, 2)
    store.close()
