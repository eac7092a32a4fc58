"""Broker messages no task can run, as a broken producer in any language would publish them.

Shared by the chaos suite (``scripts/chaos.py``, scenario ``poison``) and the poison-message
integration test. Each is published with plain kombu, on any broker kombu speaks.
"""

from __future__ import annotations

import json
import pickle
import uuid
from typing import Any, NamedTuple


def job_request(job_id: str) -> dict[str, Any]:
    return {"job_id": job_id, "tenant": "acme", "text": "Summarize the termination clause."}


_req = job_request


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


class Poison(NamedTuple):
    body: bytes
    failure_class: str
    job_id: str
    stage: str = "intent"
    content_type: str = "application/json"
    task: str | None = "conveyor.intent"  # None: no headers at all
    queue: str = "intent"
    headers: dict[str, Any] = {}


POISON = {
    "json-object": Poison(_json(_req("p-object")), "malformed_message", "p-object"),
    "not-json": Poison(b"{this is not json", "malformed_message", "unknown"),
    "unknown-task": Poison(_json([[_req("p-unknown")], {}, {}]), "unknown_task", "p-unknown",
                           task="conveyor.summarise"),
    "no-arguments": Poison(_json([[], {}, {}]), "invalid_input", "unknown"),
    "no-headers": Poison(_json([[_req("p-headless")], {}, {}]), "malformed_message", "p-headless", task=None),
    "pickle": Poison(pickle.dumps([[_req("p-pickle")], {}, {}]), "content_disallowed", "unknown",
                     content_type="application/x-python-serialize"),
    "20-mb": Poison(_json([[{**_req("p-big"), "text": "x" * 20_000_000}], {}, {}]), "oversized_message", "p-big"),
    # killed a prefork worker (only it consumes record): the pool does arithmetic on the time limits
    "bad-timelimit": Poison(_json([[{"request": _req("p-limit")}], {}, {}]), "malformed_message", "p-limit",
                            stage="record", task="conveyor.record", queue="record",
                            headers={"timelimit": ["x", "y"]}),
    # lost the job after the stage ran: Celery reads the chain only to publish the next hop
    "bad-chain": Poison(_json([[_req("p-chain")], {}, {"chain": [{"task": "conveyor.retrieve", "options": "x"}]}]),
                        "malformed_message", "p-chain"),
    # on later stages' queues: the stage comes from the task, the job id from the request inside
    "object-on-llm": Poison(_json({"request": _req("p-llm")}), "malformed_message", "p-llm", stage="generate",
                            task="conveyor.generate", queue="llm"),
    "object-on-guard": Poison(_json({"request": _req("p-guard")}), "malformed_message", "p-guard", stage="guard",
                              task="conveyor.guard", queue="guard"),
}


def publish(broker_url: str, poison: Poison) -> None:
    """Plain kombu, no Celery API, through the default exchange straight to the queue."""
    from kombu import Connection

    task_id = uuid.uuid4().hex
    headers = {"lang": "py", "task": poison.task, "id": task_id, "root_id": task_id, "parent_id": None,
               "group": None, "retries": 0, "eta": None, "expires": None, **poison.headers} if poison.task else {}
    encoding = "utf-8" if poison.content_type == "application/json" else "binary"
    with Connection(broker_url) as conn:
        conn.Producer().publish(poison.body, routing_key=poison.queue, exchange="", headers=headers,
                                content_type=poison.content_type, content_encoding=encoding, serializer=None)
