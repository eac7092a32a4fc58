"""``job_id``, ``stage``, ``batch_id`` and ``tenant`` on every log record emitted while a stage runs.

A context variable holds the ids of the delivery in progress (per thread, so a threads pool
keeps jobs apart); a log-record factory copies them onto every record the process creates,
whichever logger or handler it goes through (Celery's, the stage's, a library's). Records
outside a stage get ``-``. ``job_context`` is the same as one text suffix for plain-text
formats: `` [job_id=… stage=… batch_id=…]``, empty outside a stage (the tenant is a field of the
JSON format only, ``workers/logformat.py``: the text suffix is parsed by scripts as it is).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

FIELDS: tuple[str, ...] = ("job_id", "stage", "batch_id", "tenant")
#: the fields of the text suffix ``job_context``
TEXT_FIELDS: tuple[str, ...] = ("job_id", "stage", "batch_id")
_CURRENT: ContextVar[dict[str, str] | None] = ContextVar("conveyor_log_context", default=None)
_installed = False


@contextmanager
def log_context(*, job_id: str, stage: str, batch_id: str | None, tenant: str | None = None) -> Iterator[None]:
    token = _CURRENT.set({"job_id": job_id, "stage": stage, "batch_id": batch_id or "-", "tenant": tenant or "-"})
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current() -> dict[str, str] | None:
    return _CURRENT.get()


def install() -> None:
    """Wrap the process's log-record factory once (idempotent; inherited by forked children)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ctx = _CURRENT.get()
        for name in FIELDS:
            setattr(record, name, ctx[name] if ctx else "-")
        record.job_context = (" [" + " ".join(f"{k}={ctx[k]}" for k in TEXT_FIELDS) + "]") if ctx else ""
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
