"""The worker's consumer: a message no task can run becomes a dead letter; the worker keeps running.

Celery's consumer logs and discards most such messages (no trace of the job is left), and a
JSON body that is not ``[args, kwargs, embed]`` raises out of ``Request.__init__``
(``celery/worker/request.py``, unpacking the payload) into the consumer loop:
"Unrecoverable error: ValueError", the worker exits, the message is restored to the queue and
kills the next worker too. ``DeadLetteringConsumer`` (the app's ``worker_consumer``) checks a
message before Celery builds a request from it, and turns every problem into a dead letter,
then acknowledges the message:

    oversized_message    body over MAX_MESSAGE_BYTES (never decoded)
    content_disallowed   content type outside accept_content: pickle, yaml… (never decoded)
    malformed_message    not JSON, no ``task``/``id`` headers, not ``[args, kwargs, embed]``, or
                         headers Celery cannot use (a ``timelimit`` that is not two numbers, ...)
    unknown_task         a task name no Conveyor worker registers
    invalid_input        a stage task given anything but its one JSON argument
    delivery_limit       delivered ``broker_delivery_limit`` times already: workers died under it
                         each time; its stage input is kept whole, so it can be replayed. RabbitMQ
                         counts deliveries (a quorum queue's ``x-delivery-count``); for Redis, which
                         does not, the state store counts them per message (task id and retry)

A letter keeps the body bounded (its first RAW_KEPT_BYTES, total size and sha256, under
``stage_input._message``), the stage the task or the queue names, and the job's ids when the
body can be read. Celery's own hooks for bad messages (unknown task, invalid task, decode
error, unknown message) dead-letter too, so no path drops a message silently.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import logging
import re
from typing import Any

from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.message import Message
from vine import promise

from pipeline.errors import (
    ConveyorError,
    DeliveryLimitExceeded,
    DisallowedContent,
    InvalidInput,
    MalformedMessage,
    OversizedMessage,
    UnknownTask,
)
from schemas import PIPELINE
from schemas.pipeline import INTENT
from workers import metrics
from workers.chain import MAX_MESSAGE_BYTES
from workers.deadletters import write_dead_letter
from workers.runtime import components_for

log = logging.getLogger("conveyor.worker")

#: how much of a bad message's body its dead letter keeps.
RAW_KEPT_BYTES = 64 * 1024
#: seconds between attempts to store a dead letter while the state store does not answer.
STORE_RETRY_S = 5.0

_STAGE_OF_TASK = {spec.task: spec.name for spec in PIPELINE}
_STAGE_OF_QUEUE = {spec.queue: spec.name for spec in PIPELINE}
#: the ids of a body that is not decoded, found in its kept part (the schema's Identifier pattern).
_ID_IN_BODY = re.compile(rb'"(job_id|batch_id)"\s*:\s*"([A-Za-z0-9][A-Za-z0-9._:-]{0,127})"')


def body_bytes(message: Message) -> bytes:
    body = message.body
    return body if isinstance(body, bytes) else str(body).encode("utf-8", "surrogateescape")


def decode_problem(exc: Exception, content_type: str | None) -> ConveyorError:
    if isinstance(exc, ContentDisallowed):
        return DisallowedContent(f"content type {content_type!r} is not accepted (JSON only): {exc}")
    return MalformedMessage(f"body does not decode as {content_type!r}: {exc}")


def check_message(message: Message, tasks: Any) -> ConveyorError | None:
    """What is wrong with ``message`` before Celery sees it; None for a message a task can run.

    Each check stands for a message that, unchecked, killed the worker or was lost (dropped with
    a log line, or failed in Celery's trace after the stage ran, where no dead letter is written).
    """
    size = len(body_bytes(message))
    if size > MAX_MESSAGE_BYTES:
        return OversizedMessage(f"body of {size} bytes is over the {MAX_MESSAGE_BYTES}-byte message limit")
    headers = message.headers if isinstance(message.headers, dict) else {}
    name = headers.get("task")
    if not isinstance(name, str) or not headers.get("id"):
        return MalformedMessage("not a Celery protocol-2 task message: the 'task' and 'id' headers are required")
    if name not in tasks:
        return UnknownTask(f"no worker runs a task named {name[:200]!r}")
    problem = _headers_problem(headers)
    if problem:
        return MalformedMessage(problem)
    try:
        body = message.decode()
    except (ContentDisallowed, DecodeError) as exc:
        return decode_problem(exc, message.content_type)
    if not (isinstance(body, list) and len(body) == 3):
        kind = "a JSON object" if isinstance(body, dict) else f"a {type(body).__name__} of length {_len(body)}"
        return MalformedMessage(f"body is {kind}; a task message body is [args, kwargs, embed]")
    args, kwargs, embed = body
    if not (isinstance(args, list) and isinstance(kwargs, dict) and isinstance(embed, dict | None)):
        return MalformedMessage("body is not [args (a list), kwargs (an object), embed (an object or null)]")
    problem = _embed_problem(embed or {})
    if problem:
        return MalformedMessage(problem)
    if name in _STAGE_OF_TASK and (len(args) != 1 or kwargs):
        return InvalidInput(
            f"{name} takes one argument, the stage's JSON input; got {len(args)} positional and "
            f"{len(kwargs)} keyword argument(s)"
        )
    return None


def _headers_problem(headers: dict[str, Any]) -> str | None:
    limits = headers.get("timelimit")
    if limits is not None and not (isinstance(limits, list) and len(limits) == 2 and all(
            x is None or isinstance(x, int | float) for x in limits)):
        return "the 'timelimit' header is not [hard seconds or null, soft seconds or null]"  # the pool's arithmetic
    if not isinstance(headers.get("retries") or 0, int):
        return "the 'retries' header is not an integer"
    return None


def _embed_problem(embed: dict[str, Any]) -> str | None:
    """Celery reads these after the task ran, to send what comes next: a bad one loses the stage's output."""
    for key in ("chain", "callbacks", "errbacks"):
        value = embed.get(key)
        if value is not None and not (isinstance(value, list) and all(_is_signature(s) for s in value)):
            return f"embed.{key} is not a list of signatures ({{'task': NAME, 'args': [], 'kwargs': {{}}, ...}})"
    if not isinstance(embed.get("chord"), dict | None):
        return "embed.chord is not an object or null"
    if any(s["task"] in _STAGE_OF_TASK and (s.get("args") or s.get("kwargs")) for s in embed.get("chain") or []):
        return "embed.chain: a stage takes only the previous stage's output; its 'args' and 'kwargs' must be empty"
    return None


def _len(value: Any) -> str:
    return str(len(value)) if isinstance(value, list | str) else "-"


def _is_signature(value: Any) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("task"), str)
            and isinstance(value.get("args") or [], list) and isinstance(value.get("kwargs") or {}, dict)
            and isinstance(value.get("options") or {}, dict))


def stage_input(body: Any) -> dict[str, Any] | None:
    """The one argument of a stage task's decoded body, if that is what it holds."""
    if isinstance(body, list) and body and isinstance(body[0], list) and len(body[0]) == 1:
        first = body[0][0]
        return first if isinstance(first, dict) else None
    return None


def stage_of(message: Message) -> str:
    """The stage the task names, else the stage of the queue it came from."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    queue = (message.delivery_info or {}).get("routing_key")
    return _STAGE_OF_TASK.get(str(headers.get("task")), _STAGE_OF_QUEUE.get(str(queue), "unknown"))


def readable_body(message: Message, problem: ConveyorError) -> Any:
    """The decoded body, or None: an oversized body is never decoded, nor one kombu refuses."""
    if isinstance(problem, OversizedMessage | DisallowedContent):
        return None
    try:
        return message.decode()
    except Exception:
        return None


def job_ids(message: Message, body: Any) -> dict[str, str]:
    """``job_id``/``batch_id`` from the decoded body, else searched for in the body's kept part."""
    ids: dict[str, str] = {}
    if body is not None:
        first = body[0][0] if isinstance(body, list) and body and isinstance(body[0], list) and body[0] else body
        request = first.get("request", first) if isinstance(first, dict) else None
        if isinstance(request, dict):
            ids = {k: request[k][:128] for k in ("job_id", "batch_id") if isinstance(request.get(k), str)}
    else:
        for match in _ID_IN_BODY.finditer(body_bytes(message)[:RAW_KEPT_BYTES]):
            ids.setdefault(match.group(1).decode(), match.group(2).decode())
    return ids


def raw_message(message: Message) -> dict[str, Any]:
    """The message as received, bounded: headers that name it, the first RAW_KEPT_BYTES of the body."""
    raw = body_bytes(message)
    kept = raw[:RAW_KEPT_BYTES]
    try:  # text if it is UTF-8 (a character cut at the end is dropped), else base64
        text, encoding = codecs.getincrementaldecoder("utf-8")().decode(kept, final=len(raw) <= len(kept)), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode(), "base64"
    headers = message.headers if isinstance(message.headers, dict) else {}
    return {
        "queue": (message.delivery_info or {}).get("routing_key"),
        "task": str(headers.get("task"))[:200] if headers.get("task") is not None else None,
        "task_id": str(headers.get("id"))[:200] if headers.get("id") is not None else None,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "body_size": len(raw),
        "body_sha256": hashlib.sha256(raw).hexdigest(),
        "body_truncated": len(raw) > len(kept),
        "body_encoding": encoding,
        "body": text,
    }


class DeadLetteringConsumer(Consumer):
    """Celery's consumer, with every message it cannot run dead-lettered and acknowledged."""

    def create_task_handler(self, promise: Any = promise) -> Any:
        on_task_received = super().create_task_handler(promise)

        def on_message(message: Message) -> Any:
            problem = check_message(message, self.app.tasks)
            if problem is None and (before := self.deliveries_before(message)) >= self.delivery_limit:
                # on RabbitMQ the broker's last delivery (x-delivery-limit): dead-letter it here, where
                # the letter keeps the request, rather than let the broker drop it
                problem = DeliveryLimitExceeded(
                    f"delivered {before + 1} times; workers stopped under it each time "
                    f"(CONVEYOR_BROKER_DELIVERY_LIMIT={self.delivery_limit})")
            if problem is not None:
                return self.dead_letter(message, problem)
            try:
                return on_task_received(message)
            except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
                # what Celery raises on content it trusted and could not use (never a broker or store
                # outage, which must reach Celery's reconnect logic): the message, not the worker, ends
                return self.dead_letter(message, MalformedMessage(f"Celery could not read the message: "
                                                                  f"{type(exc).__name__}: {exc}"))

        return on_message

    @property
    def delivery_limit(self) -> int:
        return components_for(self.app).settings.broker_delivery_limit

    def deliveries_before(self, message: Message) -> int:
        """How often the message was delivered before this time. A store that does not answer gives 0:
        the message runs rather than waits (the count is a guard against a crash loop, not bookkeeping)."""
        headers = message.headers if isinstance(message.headers, dict) else {}
        count = headers.get("x-delivery-count")
        if isinstance(count, int):
            return count
        if getattr(self.connection.transport, "driver_type", "") != "redis":
            return 0
        try:
            return components_for(self.app).state.count_delivery(f"{headers['id']}:{headers.get('retries') or 0}") - 1
        except Exception as exc:
            log.warning("could not count the deliveries of task %s: %s: %s", headers.get("id"), type(exc).__name__, exc)
            return 0

    def dead_letter(self, message: Message, problem: ConveyorError) -> None:
        """Store the letter, then acknowledge. While the store is down the message is kept and retried:
        not lost, and no hot loop (the consumer's timer, every STORE_RETRY_S)."""
        stage = stage_of(message)
        body = readable_body(message, problem)
        ids = job_ids(message, body)
        raw = raw_message(message)
        # shaped like the stage's input, so that write_dead_letter finds the job's ids where it looks
        payload = {**ids, "_message": raw} if stage == INTENT.name else {"request": ids, "_message": raw}
        if isinstance(problem, DeliveryLimitExceeded) and stage_input(body) is not None:
            payload = stage_input(body) or payload  # a valid message: the letter replays like any other
        try:
            letter = write_dead_letter(components_for(self.app).state, stage=stage, payload=payload, error=problem,
                                       attempts=1, retries_exhausted=False)
        except Exception as exc:
            log.warning("could not store the dead letter of a bad message (%s, queue %s): %s: %s; again in %.0f s",
                        problem.failure_class, raw["queue"], type(exc).__name__, exc, STORE_RETRY_S)
            self.timer.call_after(STORE_RETRY_S, self.dead_letter, (message, problem))
            return
        if letter is not None:  # None: its job has a record already, nothing was stored (logged there)
            log.error("dead-lettered a message from queue %s as %s: %s [job_id=%s stage=%s] (%s)", raw["queue"],
                      problem.failure_class, problem.message, letter.job_id, stage, letter.dead_letter_id)
            metrics.dead_letter(stage, problem.failure_class)
        message.ack_log_error(log, self.connection_errors)

    # Celery's hooks for bad messages, a dead letter each: the checks above catch most first; Celery
    # still calls on_invalid_task for an unreadable eta or expires header.
    def on_unknown_message(self, body: Any, message: Message) -> None:
        self.dead_letter(message, MalformedMessage("not a Celery task message"))

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        self.dead_letter(message, UnknownTask(f"no worker runs this task: {exc}"))

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        if isinstance(exc, ContentDisallowed):
            self.dead_letter(message, decode_problem(exc, message.content_type))
        else:
            self.dead_letter(message, MalformedMessage(f"invalid task message: {exc}"))

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        self.dead_letter(message, decode_problem(exc, message.content_type))
