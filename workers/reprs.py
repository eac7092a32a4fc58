"""What Celery shows of a stage message (worker logs, task events, so Flower): the job's ids, never its content.

Celery puts a repr of a task's arguments in the message headers (``argsrepr``, made by the
producer in ``AMQP.as_task_v2``), in the ``task-sent`` and ``task-received`` events and in the
``inspect active/reserved/scheduled`` replies, and a repr of the return value in
``task-succeeded`` (``saferepr(R, resultrepr_maxsize)`` in ``celery/app/trace.py``). For
Conveyor those are the request text, chunk texts and the query embedding. Two supported
extension points put ids in their place:

- ``IdOnlyAMQP`` (``Celery(amqp=...)``): every stage message a Conveyor process publishes, be it
  ``send_job``, the chain's next hop (its argument is the previous stage's output) or a
  ``task.retry``, gets ``argsrepr="(<job ID stage=S batch=B>)"`` and ``kwargsrepr="{}"``;
- ``IdOnlyRequest`` (the stage tasks' ``Request`` class, set through ``task_annotations``): a
  worker describes what it received the same way, whatever the producer put in the headers
  (a producer in another language), answers ``inspect`` with those reprs only, reports
  ``<output of job ID stage=S>`` as the result and only the type of an exception (its message
  may quote the output: the dead letter keeps it). The return value itself is untouched: the
  chain passes it on.
"""

from __future__ import annotations

import re
from typing import Any

from celery.app.amqp import AMQP
from celery.worker.request import Request

from schemas import PIPELINE

_STAGE_OF_TASK = {spec.task: spec.name for spec in PIPELINE}
#: the schema's Identifier: anything else (an e-mail put in a job id by mistake) is not shown.
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def describe_job(stage: str, payload: Any) -> str:
    """``job ID stage=S batch=B`` from a stage's input (the request itself, or a message carrying it)."""
    request = payload.get("request") if isinstance(payload, dict) else None
    if not isinstance(request, dict):
        request = payload if isinstance(payload, dict) else {}
    job_id, batch_id = (str(request.get(k) or "") for k in ("job_id", "batch_id"))
    job = job_id if _IDENTIFIER.match(job_id) else "unknown"
    batch = f" batch={batch_id}" if _IDENTIFIER.match(batch_id) else ""
    return f"job {job} stage={stage}{batch}"


def args_repr(stage: str, args: Any) -> str:
    first = args[0] if isinstance(args, list | tuple) and args else None
    return f"(<{describe_job(stage, first)}>)"


class IdOnlyAMQP(AMQP):
    """Stage messages leave this process with id-only ``argsrepr``/``kwargsrepr`` (headers and task-sent)."""

    def as_task_v2(self, task_id: str, name: str, args: Any = None, kwargs: Any = None, *rest: Any,
                   **options: Any) -> Any:
        stage = _STAGE_OF_TASK.get(name)
        if stage is not None:
            options.update(argsrepr=args_repr(stage, args), kwargsrepr="{}")
        return super().as_task_v2(task_id, name, args, kwargs, *rest, **options)


class IdOnlyRequest(Request):
    """A stage task request that shows ids only: task-received/succeeded/failed/retried, inspect, log lines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stage: str = _STAGE_OF_TASK.get(self._type) or str(self._type)
        self._argsrepr = args_repr(self._stage, self._args)
        self._kwargsrepr = "{}"
        # the pool's trace reads these from the request dict for its own log lines
        self._request_dict.update(argsrepr=self._argsrepr, kwargsrepr=self._kwargsrepr)

    def info(self, safe: bool = False) -> dict[str, Any]:
        info: dict[str, Any] = super().info(safe=True)
        return info

    def send_event(self, type: str, **fields: Any) -> None:
        job = describe_job(self._stage, self._args[0] if self._args else None)
        if "result" in fields:
            fields["result"] = f"<output of {job}>"
        if "exception" in fields:
            # a message can quote the output (grounding) or the input (pydantic): the type only here;
            # the message and traceback are in the dead letter (conveyor dlq show) and the worker log
            fields["exception"] = f"{str(fields['exception']).partition('(')[0]}(<{job}>)"
            fields["traceback"] = ""
        super().send_event(type, **fields)
