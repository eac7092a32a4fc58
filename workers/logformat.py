"""``CONVEYOR_LOG_FORMAT=json``: one JSON object per log line.

Each line holds ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``process`` (the
process name: ``MainProcess``, ``ForkPoolWorker-2``), ``message``, then ``job_id``, ``stage``,
``batch_id`` and ``tenant`` when the line was emitted inside a stage run (``workers/logcontext.py``),
and ``exception`` (the formatted traceback) when there is one.

The formatter only formats: the PII/secret redaction is ``PiiRedactingFilter`` on the same handlers
(``workers/signals.py``), which runs before any formatter, so what is encoded here is already clean
and the encoding keeps it valid JSON on one line whatever the message holds (quotes, newlines,
control and line-separator characters are escaped).

Applied to Celery's worker and task loggers (``after_setup_logger`` / ``after_setup_task_logger``)
and to the CLI (``configure_cli_logging``).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from workers import logcontext

#: characters ``json.dumps(ensure_ascii=False)`` leaves as they are but ``str.splitlines`` (and some
#: log shippers) treat as line breaks: escaped, so one record is always one line.
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


class JsonFormatter(logging.Formatter):
    """A log record as one line of JSON (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # mismatched %-args: keep what there is
            message = f"{record.msg} {record.args!r}"
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": message,
        }
        for name in logcontext.FIELDS:
            value = getattr(record, name, None)
            if value and value != "-":
                entry[name] = str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str).translate(_LINE_BREAKS)


def use_json(handlers: list[logging.Handler]) -> None:
    """Give these handlers the JSON formatter (idempotent)."""
    for handler in handlers:
        if not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter())


def configure_cli_logging(log_format: str) -> None:
    """The CLI's own log lines and Python warnings as JSON on stderr, scrubbed, when the format is json.

    Text (the default) leaves logging as it is: Python's last-resort handler prints warnings bare."""
    if log_format != "json":
        return
    from workers.signals import install_log_scrubbing

    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    use_json(root.handlers)
    install_log_scrubbing()
    logging.captureWarnings(True)  # a warning (Celery's, a library's) is a JSON record too, not bare stderr
