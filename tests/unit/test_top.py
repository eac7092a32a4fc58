"""``conveyor top``: the renderer from hand-built snapshots, the collector against the test Redis
(queues with raw messages, batch counters and dead letters written through the state store), and the
worker table from canned ``inspect`` replies."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from rich.console import Console

from pipeline.settings import load_settings
from pipeline.state import RedisStateStore, StateStore
from schemas import DeadLetter, JobRequest
from schemas.batch import BatchInfo
from workers.top import BatchProgress, Snapshot, TopCollector, WorkerInfo, render, run, throughput

SECRET_TEXT = "Confidential: Alice Smith, alice@example.com, owes 1,000,000"


def _text(renderable: Any, width: int = 160) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(renderable)
    return console.export_text()


def _row(text: str, first_cell: str) -> list[str]:
    """The cells of the row that starts with ``first_cell`` (box.SIMPLE_HEAD: cells split by spaces), at the
    start of a line or, for the table beside the queues, further on."""
    lines = [line.split() for line in text.splitlines()]
    for cells in lines:
        if cells and cells[0] == first_cell:
            return cells
    for cells in lines:
        if first_cell in cells:
            return cells[cells.index(first_cell):]
    raise AssertionError(f"no row {first_cell!r} in:\n{text}")


def _snapshot(at: float, **changes: Any) -> Snapshot:
    base = Snapshot(
        taken_at=at, at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), broker="redis://:**@redis:6379/0",
        queues={"ingest": 0, "intent": 3, "retrieve": 0, "llm": 41, "guard": 2, "record": 0},
        workers=[WorkerInfo("llm-3f9a1c@host1", queues=("llm",), pool="threads", concurrency=32, active=7,
                            processed=1200),
                 WorkerInfo("front-77aa01@host2", queues=("ingest", "intent", "retrieve"), pool="prefork",
                            concurrency=4, active=1, processed=300),
                 WorkerInfo("back-00ff00@host3", answering=False)],
        dead_letters={"timeout": 4, "invalid_input": 9},
        batches=[BatchProgress("contracts-east", "running", submitted=200, succeeded=90, failed=10, pending=100,
                               llm_calls=95, prompt_tokens=40_000, completion_tokens=5_000, cost_usd=0.5,
                               unpriced_jobs=2),
                 BatchProgress("old-batch", "completed", submitted=5, succeeded=5, failed=0, pending=0,
                               prompt_tokens=100, completion_tokens=10, cost_usd=0.01)])
    return dataclasses.replace(base, **changes)


def test_the_frame_puts_each_number_in_its_row() -> None:
    before = _snapshot(100.0)
    assert before.workers is not None
    now = _snapshot(110.0, workers=[dataclasses.replace(before.workers[0], processed=1250), *before.workers[1:]],
                    batches=[dataclasses.replace(before.batches[0], succeeded=110, failed=10, pending=80),
                             before.batches[1]])
    text = _text(render(now, before))
    assert "broker redis://:**@redis:6379/0" in text
    assert "throughput 2.00 jobs/s" in text  # (110 + 10) - (90 + 10) in 10 s
    assert "1 running batch(es): 45000 tokens, $0.5000 (+2 unpriced) so far" in text
    assert _row(text, "llm")[:3] == ["llm", "41", "1"]  # waiting, consumers
    assert _row(text, "guard")[:3] == ["guard", "2", "0"]
    assert _row(text, "intent")[:3] == ["intent", "3", "1"]
    assert "open dead letters: 13" in text
    assert _row(text, "invalid_input")[:2] == ["invalid_input", "9"] and _row(text, "timeout")[:2] == ["timeout", "4"]
    assert text.index("invalid_input") < text.index("timeout")  # most letters first
    assert _row(text, "llm-3f9a1c@host1") == ["llm-3f9a1c@host1", "llm", "threads×32", "7", "1250", "5.00", "ok"]
    assert _row(text, "front-77aa01@host2")[1:] == ["ingest,intent,retrieve", "prefork×4", "1", "300", "0.00", "ok"]
    assert _row(text, "back-00ff00@host3")[1:] == ["not", "answering"]
    east = _row(text, "contracts-east")
    assert east[1] == "running" and east[3:] == ["120/200", "10", "2.00", "0m40s", "45000", "$0.5000"]
    assert text.split("contracts-east", 1)[1].splitlines()[1].split() == ["(+2", "unpriced)"]  # under its cost
    old = _row(text, "old-batch")
    assert old[1] == "completed" and old[3:] == ["5/5", "0", "0.00", "-", "110", "$0.0100"]


def test_the_first_frame_has_no_rates_and_an_empty_system_says_so() -> None:
    text = _text(render(_snapshot(1.0)))
    assert "throughput — jobs/s" in text
    assert _row(text, "contracts-east")[5:7] == ["—", "—"]  # items/s, ETA
    assert _row(text, "llm-3f9a1c@host1")[5] == "—"
    empty = _text(render(_snapshot(1.0, queues=None, workers=None, dead_letters={}, batches=[])))
    assert "open dead letters: 0" in empty and re.search(r"failure class\s+open\s.*\n.*\n.*none\s+0", empty)
    assert "no broker" in empty


def test_throughput_counts_batches_both_snapshots_saw_and_never_goes_negative() -> None:
    before = _snapshot(0.0)
    replayed = dataclasses.replace(before.batches[0], failed=0, pending=110)  # a replay took 10 failures back
    fresh = BatchProgress("new", "running", submitted=50, succeeded=50, failed=0, pending=0)
    assert throughput(_snapshot(5.0, batches=[replayed, fresh]), before) == 0.0
    assert throughput(before, None) is None and throughput(before, before) is None


def test_problems_are_shown_in_the_frame() -> None:
    text = _text(render(_snapshot(1.0, queues=None, workers=None, problems=["broker unreachable at x: Error"])))
    assert "! broker unreachable at x: Error" in text and "not answering" in text


# --- the collector, against the test Redis ------------------------------------------------------
def _letter(batch_id: str, i: int, failure_class: str) -> DeadLetter:
    req = JobRequest(text=SECRET_TEXT, document_id=f"doc-{i}", custom_id=f"item-{i}", batch_id=batch_id)
    raw = req.model_dump(mode="json")
    return DeadLetter(job_id=req.job_id, request=raw, stage="intent", stage_input=raw, failure_class=failure_class,
                      error_type="X", error_message=SECRET_TEXT, attempts=1)


def _seed(state: StateStore, r: redis.Redis) -> None:
    r.rpush("llm", b"raw-1", b"raw-2")
    r.rpush("llm\x06\x163", b"raw-3")  # a kombu priority list of the same queue
    r.rpush("guard", b"raw-4")
    state.put_batch(BatchInfo(batch_id="east", source="contracts/east"))
    state.put_batch(BatchInfo(batch_id="west", source="contracts/west", state="cancelled"))
    for batch_id, counts in (("east", {"submitted": 10, "succeeded": 4, "prompt_tokens": 1000,
                                       "completion_tokens": 200, "cost_micro_usd": 12_345, "unpriced_jobs": 1}),
                             ("west", {"submitted": 3, "succeeded": 1})):
        for name, n in counts.items():
            state.batch_incr(batch_id, name, n)
    for i, failure_class in enumerate(["timeout", "timeout", "invalid_input", "cancelled", "cancelled"]):
        assert state.fail(_letter("east" if i < 3 else "west", i, failure_class))


@pytest.fixture
def seeded(redis_url: str) -> Any:
    settings = load_settings(broker_url=redis_url, redis_retry_s=0)
    from workers.app import create_app

    app = create_app(settings)
    state = RedisStateStore.from_url(redis_url)
    client = redis.Redis.from_url(redis_url)
    _seed(state, client)
    yield app, state, client
    state.close()
    client.close()


def test_the_collector_reads_queues_letters_and_batches_from_redis(seeded: Any, redis_url: str) -> None:
    app, state, client = seeded
    collector = TopCollector(app, state, redis_url, inspect_timeout=0.2)
    first = collector.collect()
    assert first.problems == []
    assert first.queues == {"ingest": 0, "intent": 0, "retrieve": 0, "llm": 3, "guard": 1, "record": 0}
    assert first.workers is not None  # none, or another test's worker on db 13
    assert first.dead_letters == {"timeout": 2, "invalid_input": 1, "cancelled": 2} and not first.dead_letters_capped
    by_id = {b.batch_id: b for b in first.batches}
    east, west = by_id["east"], by_id["west"]
    assert (east.state, east.submitted, east.succeeded, east.failed, east.pending) == ("running", 10, 4, 3, 3)
    assert (east.tokens, east.cost_usd, east.unpriced_jobs) == (1200, 0.012345, 1)
    assert (west.state, west.succeeded, west.failed, west.pending) == ("cancelled", 1, 2, 0)
    assert [b.batch_id for b in first.batches] == ["east", "west"]  # unfinished first

    state.batch_incr("east", "succeeded", 2)
    second = collector.collect()
    rate = throughput(second, first)
    assert rate is not None and rate > 0 and second.finished["east"] == first.finished["east"] + 2

    limited = TopCollector(app, state, redis_url, inspect_timeout=0.2, dlq_limit=2).collect()
    assert sum(limited.dead_letters.values()) == 2 and limited.dead_letters_capped
    exact = TopCollector(app, state, redis_url, inspect_timeout=0.2, dlq_limit=5).collect()
    assert exact.dead_letters == first.dead_letters and not exact.dead_letters_capped

    frame = _text(render(second, first))
    assert SECRET_TEXT not in frame and "alice" not in frame.lower() and "contracts/" not in frame
    assert _row(frame, "llm")[:2] == ["llm", "3"] and _row(frame, "timeout")[:2] == ["timeout", "2"]


def test_an_unreachable_broker_is_one_problem_and_ends_the_first_frame(seeded: Any) -> None:
    app, state, _ = seeded
    snapshot = TopCollector(app, state, "redis://:s3cret@127.0.0.1:1/0").collect()
    assert snapshot.queues is None and snapshot.workers is None
    assert snapshot.problems == ["broker unreachable at redis://:**@127.0.0.1:1/0: ConnectionError"]
    from pipeline.errors import ProviderUnavailable

    with pytest.raises(ProviderUnavailable, match="broker unreachable"):
        run(TopCollector(app, state, "redis://:s3cret@127.0.0.1:1/0"), interval=1, once=True)


def test_live_mode_refreshes_until_ctrl_c(seeded: Any, redis_url: str) -> None:
    app, state, _ = seeded
    ticks: list[float] = []

    def sleep(seconds: float) -> None:
        ticks.append(seconds)
        if len(ticks) == 2:
            raise KeyboardInterrupt

    console = Console(record=True, width=160, color_system=None, force_terminal=False)
    run(TopCollector(app, state, redis_url, inspect_timeout=0.1), interval=0.5, once=False, console=console,
        sleep=sleep)
    assert ticks == [0.5, 0.5] and "conveyor top" in console.export_text()


# --- workers, from canned inspect replies ---------------------------------------------------------
class _Inspect:
    def __init__(self, replies: dict[str, Any]) -> None:
        self.replies = replies

    def stats(self) -> Any:
        return self.replies.get("stats")

    def active_queues(self) -> Any:
        return self.replies.get("active_queues")

    def active(self) -> Any:
        return self.replies.get("active")


class _App:
    def __init__(self) -> None:
        self.replies: dict[str, Any] = {}
        self.control = self
        self.asked: list[dict[str, Any]] = []

    def inspect(self, **kwargs: Any) -> _Inspect:
        self.asked.append(kwargs)
        return _Inspect(self.replies)


def test_workers_from_inspect_and_one_that_stopped_answering() -> None:
    app = _App()
    app.replies = {
        "stats": {"llm-1@h": {"pool": {"implementation": "celery.concurrency.thread:TaskPool", "max-concurrency": 32},
                              "total": {"conveyor.generate": 40, "conveyor.noop": 2}},
                  "front-2@h": {"pool": {"implementation": "celery.concurrency.prefork:TaskPool",
                                         "max-concurrency": 4}}},
        "active_queues": {"llm-1@h": [{"name": "llm"}], "front-2@h": [{"name": "intent"}, {"name": "ingest"}]},
        "active": {"llm-1@h": [{"id": "a"}, {"id": "b"}], "front-2@h": []},
    }
    collector = TopCollector(app, state=None, broker_url=None, inspect_timeout=0.3)  # type: ignore[arg-type]
    assert collector._workers() == [
        WorkerInfo("front-2@h", queues=("ingest", "intent"), pool="prefork", concurrency=4, active=0, processed=0),
        WorkerInfo("llm-1@h", queues=("llm",), pool="threads", concurrency=32, active=2, processed=42)]
    assert app.asked[1] == {"destination": ["front-2@h", "llm-1@h"], "limit": 2, "timeout": 0.3}
    app.replies = {"stats": {"llm-1@h": app.replies["stats"]["llm-1@h"]}, "active_queues": {}, "active": {}}
    assert [(w.name, w.answering) for w in collector._workers()] == [("llm-1@h", True), ("front-2@h", False)]
