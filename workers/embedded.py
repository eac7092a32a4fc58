"""Embedded mode: a real Celery worker in this process, on the in-memory transport.

No service is needed: all five queues are consumed by a ``WorkController`` running in a
thread (threads pool), Qdrant runs in local mode and state lives in SQLite, both under the
data directory. Results are read from the state store by the client, so the producer never
calls ``AsyncResult.get()`` and never trips Celery's "result.get() within a task" guard.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from celery.worker import WorkController

from pipeline.errors import Interrupted
from pipeline.settings import Settings
from pipeline.wiring import Components
from schemas import QUEUES
from schemas.pipeline import INTENT
from workers.app import create_app
from workers.client import ConveyorClient
from workers.deadletters import write_dead_letter
from workers.runtime import components_for, release_components
from workers.signals import init_process

log = logging.getLogger("conveyor.embedded")


class _ReadyWorkController(WorkController):
    """A WorkController that signals when its consumer is ready to take messages."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: object) -> None:
        self.ready.set()


class EmbeddedRuntime:
    """``with EmbeddedRuntime(settings) as rt: rt.client.submit(...)``"""

    def __init__(self, settings: Settings, *, concurrency: int | None = None, start_timeout_s: float = 30) -> None:
        if not settings.embedded:
            raise ValueError("EmbeddedRuntime needs CONVEYOR_BROKER_URL unset (memory transport)")
        self.settings = settings
        self.app = create_app(settings)
        self._concurrency = concurrency or settings.worker_concurrency
        self._start_timeout_s = start_timeout_s
        self._worker: _ReadyWorkController | None = None
        self._thread: threading.Thread | None = None
        self.client = ConveyorClient(self.app, track=True)

    @property
    def components(self) -> Components:
        return components_for(self.app)

    def start(self) -> EmbeddedRuntime:
        init_process(self.settings)
        # the threads pool traces tasks with Celery's *default* app (thread-local "current"
        # does not reach pool threads): without this, chain continuations would be published
        # through an unconfigured app to amqp://localhost.
        self.app.set_default()
        self._purge_transport()
        worker = _ReadyWorkController(
            app=self.app,
            concurrency=self._concurrency,
            pool="threads",
            queues=list(QUEUES),
            hostname="conveyor-embedded@localhost",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel=self.settings.log_level,
        )
        self._worker = worker
        self._thread = threading.Thread(target=worker.start, name="conveyor-embedded-worker", daemon=True)
        self._thread.start()
        if not worker.ready.wait(self._start_timeout_s):
            raise RuntimeError("embedded worker did not start")
        return self

    def stop(self) -> None:
        """Warm shutdown: running tasks finish; jobs still queued in memory become dead letters."""
        if self._worker is not None:
            self._worker.stop(in_sighandler=False, exitcode=0)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._worker = self._thread = None
        self._dead_letter_unfinished()
        self._purge_transport()
        release_components(self.app)

    def _purge_transport(self) -> int:
        """Empty our queues on the in-memory transport, which is global to the process: messages a
        stopped runtime left behind (already dead-lettered as interrupted) must not run in the next."""
        purged = 0
        with self.app.connection_for_write() as conn:
            channel = conn.default_channel
            for queue in QUEUES:
                purged += channel.queue_purge(queue) or 0
        return purged

    def _dead_letter_unfinished(self) -> None:
        """The memory transport dies with this process: keep every unfinished job replayable."""
        submitted = self.client.submitted or {}
        state = self.components.state
        for job_id in self.client.unfinished():
            # from where it stopped: its last checkpoint (a batch item's ingest input, a later stage's)
            stage, payload = state.get_checkpoint(job_id) or (INTENT.name, submitted[job_id])
            write_dead_letter(
                state,
                stage=stage,
                payload=payload,
                error=Interrupted("the embedded worker stopped before the job finished; replay it"),
                attempts=1,
                retries_exhausted=False,
            )
            log.warning("job %s was still in flight at shutdown: dead-lettered as interrupted", job_id)

    def __enter__(self) -> EmbeddedRuntime:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
