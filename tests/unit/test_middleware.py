"""Each middleware on its own, around a stand-in stage, with a real SQLite state store and a
real Celery app on the in-memory transport (the re-queue is a real published message)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from pydantic import BaseModel

from pipeline.errors import (
    GuardrailBlocked,
    InternalError,
    InvalidInput,
    ProviderUnavailable,
    RateLimited,
    Requeue,
    StageTimeout,
)
from pipeline.settings import load_settings
from pipeline.state import SqliteStateStore
from pipeline.wiring import Components
from schemas import IntentResult, JobRecord, JobRequest
from schemas.pipeline import GENERATE, INTENT
from tests.fakes import drain_queue
from workers import logcontext
from workers.app import create_app
from workers.middleware import (
    DeadLetter,
    Delivery,
    LogContext,
    RequeueOnSignal,
    SkipFinished,
    StageRetry,
    StopCancelled,
    Timing,
    TrackStatus,
    TranslateErrors,
    ValidatePayload,
    compose,
    default_middleware,
)

REQUEST = JobRequest(text="What is the rent?", document_id="lease", tenant="t", batch_id="b-1")


class Retried(Exception):
    """What the fake task's ``retry`` raises, standing in for celery.exceptions.Retry."""


@dataclass
class FakeTask:
    """The part of a bound Celery task the middleware uses: ``request.retries``, ``retry``, ``app``."""

    app: Any = None
    retries: int = 0
    retry_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def request(self) -> Any:
        return type("Req", (), {"retries": self.retries})()

    def retry(self, **kwargs: Any) -> Exception:
        self.retry_calls.append(kwargs)
        raise Retried()


@dataclass
class FakeComponents:
    state: SqliteStateStore


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SqliteStateStore]:
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    yield store
    store.close()


def delivery(state: SqliteStateStore, payload: Any = None, *, task: FakeTask | None = None,
             spec: Any = INTENT, validated: bool = True) -> Delivery:
    payload = REQUEST.model_dump(mode="json") if payload is None else payload
    d = Delivery(spec=spec, payload=payload, task=cast(Any, task or FakeTask()),
                 components=cast(Components, FakeComponents(state)))
    if validated:
        d.message = spec.input.model_validate(payload)
    return d


def intent_result() -> IntentResult:
    return IntentResult(request=REQUEST, intent="question", intent_confidence=1.0, intent_method="hint")


def returning(value: BaseModel) -> Callable[[Delivery], BaseModel]:
    return lambda d: value


def raising(exc: BaseException) -> Callable[[Delivery], BaseModel]:
    def handler(d: Delivery) -> BaseModel:
        raise exc

    return handler


def test_compose_runs_the_first_middleware_outermost() -> None:
    order: list[str] = []

    def layer(name: str) -> Any:
        def mw(d: Delivery, call_next: Callable[[Delivery], BaseModel]) -> BaseModel:
            order.append(f"{name}>")
            out = call_next(d)
            order.append(f"<{name}")
            return out

        return mw

    def inner(d: Delivery) -> BaseModel:
        order.append("stage")
        return intent_result()

    compose([layer("a"), layer("b")], inner)(cast(Delivery, None))
    assert order == ["a>", "b>", "stage", "<b", "<a"]


def test_validate_payload_names_the_stage_and_the_bad_fields(state: SqliteStateStore) -> None:
    bad = delivery(state, {"text": "hi", "tenant": "no spaces allowed", "colour": "red"}, validated=False)
    with pytest.raises(InvalidInput, match="intent input does not match its schema") as info:
        ValidatePayload()(bad, returning(intent_result()))
    assert "tenant" in info.value.message and "colour" in info.value.message
    good = delivery(state, validated=False)
    ValidatePayload()(good, returning(intent_result()))
    assert isinstance(good.message, JobRequest) and good.message.job_id == REQUEST.job_id


def test_translate_errors_keeps_ours_and_translates_the_rest(state: SqliteStateStore) -> None:
    d = delivery(state)
    with pytest.raises(InternalError, match="intent failed unexpectedly: KeyError"):
        TranslateErrors()(d, raising(KeyError("x")))
    with pytest.raises(StageTimeout, match="soft time limit"):
        TranslateErrors()(d, raising(SoftTimeLimitExceeded()))
    for ours in (GuardrailBlocked("no"), Requeue(1.0, "not yet")):
        with pytest.raises(type(ours)):
            TranslateErrors()(d, raising(ours))


def test_timing_stamps_stage_messages_and_leaves_the_record_alone(state: SqliteStateStore) -> None:
    out = Timing()(delivery(state), returning(intent_result()))
    assert isinstance(out, IntentResult) and set(out.timings_ms) == {"intent"} and out.timings_ms["intent"] >= 0
    record = JobRecord.model_construct(timings_ms={"intent": 1.0})
    assert Timing()(delivery(state), returning(record)).timings_ms == {"intent": 1.0}  # type: ignore[attr-defined]


def test_track_status_marks_the_job_running_at_this_stage_and_attempt(state: SqliteStateStore) -> None:
    TrackStatus()(delivery(state, task=FakeTask(retries=2)), returning(intent_result()))
    status = state.get_status(REQUEST.job_id)
    assert status is not None and (status.state, status.stage, status.attempts) == ("running", "intent", 3)


def test_skip_finished_acks_a_stage_the_job_has_moved_past_and_runs_the_current_one(
        tmp_path: Path, state: SqliteStateStore) -> None:
    app = create_app(load_settings(data_dir=tmp_path))
    drain_queue(app, "llm")
    ran: list[str] = []

    def run(d: Delivery) -> BaseModel:
        ran.append(d.spec.name)
        return intent_result()

    state.checkpoint(REQUEST.job_id, "generate", {"request": REQUEST.model_dump(mode="json")})
    state.mark_sent(REQUEST.job_id, "generate")
    with pytest.raises(Ignore):  # intent finished, its ack was lost: the job is at generate already
        SkipFinished()(delivery(state, task=FakeTask(app=app)), run)
    assert ran == [] and drain_queue(app, "llm") == [], "the generate message left: nothing is sent again"
    state.checkpoint(REQUEST.job_id, "intent", REQUEST.model_dump(mode="json"))
    SkipFinished()(delivery(state), run)  # a replay or a retry at the stage the job is at runs
    assert ran == ["intent"]


def test_skip_finished_publishes_a_checkpoint_whose_message_never_left(
        tmp_path: Path, state: SqliteStateStore) -> None:
    """A worker killed after its checkpoint and before its publish: the redelivered stage does not run
    again (no second bill) and the job is not lost either: the next stage goes out from the checkpoint."""
    app = create_app(load_settings(data_dir=tmp_path))
    drain_queue(app, "llm")
    checkpointed = {"request": REQUEST.model_dump(mode="json"), "marker": "from-the-checkpoint"}
    state.checkpoint(REQUEST.job_id, "generate", checkpointed)
    ran: list[str] = []
    with pytest.raises(Ignore):
        SkipFinished()(delivery(state, task=FakeTask(app=app)), lambda d: ran.append("intent") or intent_result())
    assert ran == []
    (message,) = drain_queue(app, "llm")
    args, _kwargs, _embed = message.decode()
    assert message.headers["task"] == "conveyor.generate" and args == [checkpointed]
    assert state.was_sent(REQUEST.job_id, "generate")
    with pytest.raises(Ignore):  # a second redelivery finds the mark: nothing more is published
        SkipFinished()(delivery(state, task=FakeTask(app=app)), lambda d: intent_result())
    assert drain_queue(app, "llm") == []


def test_stop_cancelled_stops_a_cancelled_batch_s_first_stages_and_forgets_the_cancel_on_resume(
        state: SqliteStateStore) -> None:
    from pipeline.errors import Cancelled
    from schemas.batch import BatchInfo

    request = REQUEST.model_copy(update={"batch_id": "b1"})
    info = BatchInfo(batch_id="b1", source="x")
    state.put_batch(info)
    stop = StopCancelled(ttl_s=60)
    done = returning(intent_result())
    stop(delivery(state, request.model_dump(mode="json")), done)  # running: the item runs
    state.put_batch(info.model_copy(update={"state": "cancelled"}))
    stop(delivery(state, request.model_dump(mode="json")), done)  # "running" remembered for ttl_s
    with pytest.raises(Cancelled):
        StopCancelled(ttl_s=60)(delivery(state, request.model_dump(mode="json")), done)
    fresh = StopCancelled(ttl_s=60)
    with pytest.raises(Cancelled):
        fresh(delivery(state, request.model_dump(mode="json")), done)
    state.put_batch(info)  # resumed: the very next item runs, nothing stale is remembered
    fresh(delivery(state, request.model_dump(mode="json")), done)
    later = GENERATE
    cancelled_again = info.model_copy(update={"state": "cancelled"})
    state.put_batch(cancelled_again)
    StopCancelled()(delivery(state, {"request": request.model_dump(mode="json"), "intent": "question",
                                     "intent_confidence": 1.0, "intent_method": "hint"}, spec=later),
                    done)  # past its first stages an item finishes


def test_stage_retry_retries_retryable_errors_with_backoff_until_the_budget_is_spent(state: SqliteStateStore) -> None:
    retry = StageRetry(max_retries=2, backoff_base_s=0.1, backoff_max_s=10.0)
    task = FakeTask(retries=0)
    with pytest.raises(Retried):
        retry(delivery(state, task=task), raising(RateLimited("429", retry_after=5.0)))
    assert task.retry_calls[0]["max_retries"] == 2 and task.retry_calls[0]["countdown"] >= 5.0
    spent = FakeTask(retries=2)
    with pytest.raises(RateLimited):
        retry(delivery(state, task=spent), raising(RateLimited("429")))
    assert spent.retry_calls == []
    permanent = FakeTask()
    with pytest.raises(GuardrailBlocked):
        retry(delivery(state, task=permanent), raising(GuardrailBlocked("no")))
    assert permanent.retry_calls == []


def test_dead_letter_keeps_the_request_and_says_whether_retries_ran_out(state: SqliteStateStore) -> None:
    with pytest.raises(GuardrailBlocked):
        DeadLetter()(delivery(state), raising(GuardrailBlocked("blocked")))
    with pytest.raises(ProviderUnavailable):
        DeadLetter()(delivery(state, task=FakeTask(retries=4)), raising(ProviderUnavailable("down")))
    letters = {dl.failure_class: dl for dl in state.list_dead_letters()}
    assert set(letters) == {"guardrail_blocked", "provider_unavailable"}
    assert letters["guardrail_blocked"].retries_exhausted is False
    assert (letters["provider_unavailable"].retries_exhausted, letters["provider_unavailable"].attempts) == (True, 5)
    assert letters["guardrail_blocked"].request["job_id"] == REQUEST.job_id
    status = state.get_status(REQUEST.job_id)
    assert status is not None and status.state == "failed"


def test_requeue_publishes_the_same_payload_at_the_same_stage_with_its_countdown(
    tmp_path: Path, state: SqliteStateStore
) -> None:
    app = create_app(load_settings(data_dir=tmp_path))
    drain_queue(app, "llm")  # the memory transport is process-wide: start from an empty queue
    payload = {"request": REQUEST.model_dump(mode="json"), "marker": "unchanged"}
    task = FakeTask(app=app)
    with pytest.raises(Ignore):
        RequeueOnSignal()(delivery(state, payload, task=task, spec=GENERATE, validated=False),
                          raising(Requeue(7.5, "no slot")))
    (message,) = drain_queue(app, "llm")
    assert message.headers["task"] == "conveyor.generate" and message.headers["eta"]
    args, _kwargs, _embed = message.decode()
    assert args == [payload]
    assert task.retry_calls == [], "a re-queue spends no retry"


def test_a_requeue_the_broker_refuses_becomes_a_retryable_error_not_a_loss(
    tmp_path: Path, state: SqliteStateStore
) -> None:
    app = create_app(load_settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0",
                                   redis_url="redis://127.0.0.1:1/0"))
    app.conf.task_publish_retry = False
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_max_retries = 0
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "max_retries": 0}
    with pytest.raises(ProviderUnavailable, match="could not re-queue"):
        RequeueOnSignal()(delivery(state, task=FakeTask(app=app)), raising(Requeue(1.0, "no slot")))


def test_every_log_line_of_a_stage_carries_job_stage_and_batch(
    state: SqliteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    logcontext.install()
    caplog.set_level(logging.INFO)

    def stage(d: Delivery) -> BaseModel:
        logging.getLogger("some.library").warning("inside the stage")
        return intent_result()

    LogContext()(delivery(state, validated=False), stage)
    logging.getLogger("some.library").warning("outside")
    inside, outside = (r for r in caplog.records if r.name == "some.library")
    assert (inside.job_id, inside.stage, inside.batch_id) == (REQUEST.job_id, "intent", "b-1")  # type: ignore[attr-defined]
    assert inside.job_context == f" [job_id={REQUEST.job_id} stage=intent batch_id=b-1]"  # type: ignore[attr-defined]
    assert (outside.job_id, outside.job_context) == ("-", "")  # type: ignore[attr-defined]


def test_the_default_chain_dead_letters_a_malformed_payload_with_its_log_context(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Validation sits inside DeadLetter and LogContext: a bad message is a letter, logged with its job id."""
    logcontext.install()
    caplog.set_level(logging.ERROR, logger="conveyor.tasks")
    settings = load_settings(data_dir=tmp_path)
    components = Components(settings)
    try:
        handler = compose(default_middleware(settings))
        bad = {"job_id": "job-bad-1", "text": "x", "params": {"top_k": 0}}
        with pytest.raises(InvalidInput):
            handler(Delivery(spec=INTENT, payload=bad, task=cast(Any, FakeTask()), components=components))
        (letter,) = components.state.list_dead_letters()
        assert (letter.job_id, letter.stage, letter.failure_class) == ("job-bad-1", "intent", "invalid_input")
        assert letter.request == bad
        logged = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
        assert logged and logged[0].job_id == "job-bad-1"  # type: ignore[attr-defined]
    finally:
        components.close()


def test_a_late_failure_of_a_finished_job_stores_no_letter_and_does_not_claim_one(
    state: SqliteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A redelivered stage failing after the job got its record: no letter, no "dead-lettered" line."""
    from tests.unit.test_state_store import _record

    assert state.complete(_record(REQUEST.job_id))
    caplog.set_level(logging.INFO)
    with pytest.raises(ProviderUnavailable):
        DeadLetter()(delivery(state), raising(ProviderUnavailable("down")))
    assert state.list_dead_letters() == []
    messages = [r.getMessage() for r in caplog.records]
    assert not any("dead-lettered" in m for m in messages), messages
    assert any("already has a record" in m for m in messages), messages
