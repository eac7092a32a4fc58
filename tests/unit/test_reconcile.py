"""`reconcile` on a real SQLite store and a real Celery app on the in-memory transport."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.settings import load_settings
from pipeline.state import SqliteStateStore
from schemas import JobRequest, JobStatus
from tests.fakes import drain_queue
from workers.app import create_app
from workers.reconcile import reconcile


def _stalled(state: SqliteStateStore, job_id: str, stage: str, minutes: int) -> None:
    state.set_status(JobStatus(job_id=job_id, state="running", stage=stage, attempts=1,
                               updated_at=datetime.now(UTC) - timedelta(minutes=minutes)))


def test_stalled_jobs_are_re_enqueued_at_their_checkpoint_or_dead_lettered(tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path))
    for queue in ("intent", "retrieve", "llm"):
        drain_queue(app, queue)
    state = SqliteStateStore(tmp_path / "state.sqlite3")
    request = JobRequest(job_id="resumable", text="What is the rent?", document_id="lease")
    payload = {"request": request.model_dump(mode="json"), "intent": "question", "intent_confidence": 1.0,
               "intent_method": "hint", "chunks": []}
    _stalled(state, "resumable", "retrieve", 45)
    state.checkpoint("resumable", "generate", payload)
    _stalled(state, "no-checkpoint", "guard", 45)
    _stalled(state, "recent", "generate", 1)

    dry = reconcile(app, state, older_than=timedelta(minutes=30), dry_run=True)
    assert (dry.stalled, dry.requeued, dry.dead_lettered) == (2, ["resumable"], ["no-checkpoint"])
    assert drain_queue(app, "llm") == [] and state.list_dead_letters() == [], "a dry run changes nothing"

    done = reconcile(app, state, older_than=timedelta(minutes=30))
    (message,) = drain_queue(app, "llm")
    assert message.headers["task"] == "conveyor.generate" and message.decode()[0] == [payload]
    status = state.get_status("resumable")
    assert status is not None and (status.state, status.stage) == ("queued", "generate")
    (letter,) = state.list_dead_letters()
    assert (letter.job_id, letter.failure_class, letter.stage) == ("no-checkpoint", "interrupted", "guard")
    assert done.requeued == ["resumable"]
    assert reconcile(app, state, older_than=timedelta(minutes=30)).stalled == 0, "nothing left stalled"
