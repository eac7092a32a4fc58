"""Cross-cutting concerns hung on Celery signals, out of stage code.

- per-process clients: a worker warms the clients its queues need, after any fork
  (``workers.runtime`` keys clients by pid, so a child never uses its parent's);
- logging: every handler gets the PII-redacting filter, and the JSON formatter when
  ``CONVEYOR_LOG_FORMAT=json`` (``workers/logformat.py``);
- tracing (optional, ``workers/tracing.py``): set up in each process that runs tasks, after any fork;
- Sentry: initialised in each worker process (never in the parent before fork), with PII
  and secrets scrubbed by ``before_send``;
- metrics: every message published gets its publish time (the queue wait is measured from it),
  and a pool child that exits is marked dead for the multiprocess exporter.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    before_task_publish,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from pipeline.settings import Settings
from workers.runtime import settings_for

_initialised_pid: int | None = None


def install_log_scrubbing() -> None:
    """Redact PII and secrets from every log record, whichever handler ends up writing it."""
    from pipeline.guard.pii import PiiRedactingFilter

    root = logging.getLogger()
    if not any(isinstance(f, PiiRedactingFilter) for f in root.filters):
        root.addFilter(PiiRedactingFilter())
    for handler in root.handlers:
        if not any(isinstance(f, PiiRedactingFilter) for f in handler.filters):
            handler.addFilter(PiiRedactingFilter())


def init_sentry(settings: Settings) -> bool:
    """Start Sentry in this process if a DSN is configured; True when it did."""
    if settings.sentry_dsn is None:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration

    from pipeline.guard.pii import scrub_event

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.sentry_environment,
        integrations=[CeleryIntegration()],
        before_send=scrub_event,  # type: ignore[arg-type]
        max_request_body_size="never",
    )
    return True


def init_process(settings: Settings) -> None:
    """Everything a worker process sets up once, after any fork."""
    import os

    global _initialised_pid
    if _initialised_pid == os.getpid():
        return
    _initialised_pid = os.getpid()
    install_log_scrubbing()
    init_sentry(settings)


def warm_up_worker(app: Any) -> None:
    """Build the clients for the queues this worker consumes (set by `conveyor worker`)."""
    from pipeline.errors import ConveyorError
    from workers.runtime import components_for

    queues = getattr(app, "conveyor_queues", None)
    if not queues:
        return
    try:
        warmed = components_for(app).warm_up(queues)
        logging.getLogger("conveyor.worker").info("warmed up for %s: %s", ",".join(queues), ", ".join(warmed))
    except ConveyorError as exc:  # a dependency that is down now may be up by the first job
        logging.getLogger("conveyor.worker").warning("warm-up skipped: %s", exc)


def _app_of(sender: Any) -> Any:
    """The signal's app, else the default one (`conveyor worker` makes its app the default)."""
    app = getattr(sender, "app", None)
    if app is None:
        from celery import current_app

        app = current_app._get_current_object()
    return app


def init_tracing(app: Any) -> None:
    """Tracing in this process when configured (the tracing module imports nothing otherwise)."""
    from workers.tracing import enabled, setup_tracing

    settings = settings_for(app)
    if enabled(settings):
        setup_tracing(settings, getattr(app, "conveyor_queues", None))


def _forks_a_pool(worker: Any) -> bool:
    """The worker's pool is prefork: its tasks run in children, set up in worker_process_init."""
    pool = getattr(worker, "pool_cls", None)
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    return name in {"prefork", "processes"} or str(name).endswith(".prefork")


@worker_process_init.connect
def _on_worker_process_init(sender: Any = None, **_: Any) -> None:
    init_process(settings_for(_app_of(sender)))
    init_tracing(_app_of(sender))  # before warm-up, so the clients it builds are traced too
    warm_up_worker(_app_of(sender))  # prefork child: after the fork, never before


@worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    # threads and solo pools run tasks in this process: set it up here
    init_process(settings_for(_app_of(sender)))
    if not _forks_a_pool(sender):  # never a tracer (exporter threads) in a parent that forks
        init_tracing(_app_of(sender))


@before_task_publish.connect
def _on_before_task_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    import time

    from workers.metrics import stamp_published_at

    stamp_published_at(headers, time.time())


@worker_process_shutdown.connect
def _on_worker_process_shutdown(pid: int | None = None, **_: Any) -> None:
    from workers.exporter import forget_process
    from workers.tracing import flush

    flush()  # a pool child exits without atexit: export its buffered spans first
    forget_process(pid)


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    from workers.tracing import flush

    flush()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _on_logging_setup(logger: logging.Logger | None = None, **_: Any) -> None:
    # Celery configures its handlers after worker_init: scrub those too
    from pipeline.guard.pii import PiiRedactingFilter

    install_log_scrubbing()
    # Celery's "Task ... succeeded in 0.1s: {result}" prints the whole stage result (chunk texts,
    # the request) at INFO; the Timing middleware logs "done in N ms" with the job's ids instead.
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
    for handler in getattr(logger, "handlers", []):
        if not any(isinstance(f, PiiRedactingFilter) for f in handler.filters):
            handler.addFilter(PiiRedactingFilter())
    if settings_for(_app_of(None)).log_format == "json":
        from celery.utils.log import get_multiprocessing_logger

        from workers.logformat import use_json

        use_json([*logging.getLogger().handlers, *getattr(logger, "handlers", [])])
        mp_logger = get_multiprocessing_logger()
        if mp_logger is not None:
            use_json(mp_logger.handlers)
