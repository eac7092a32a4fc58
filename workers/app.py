"""The Celery app: one queue per stage, JSON only, late acks, events on for Flower (ids only).

``app`` (what ``celery -A workers.app`` finds) is the worker's app, built on first access and
holding no configuration until first use: ``add_defaults`` takes a callable that Celery
evaluates lazily, so the environment is read when the app is configured, not when it is
imported. A producer gets ``create_app(worker=False)``: the same configuration and routing, but
no stage tasks, signals or consumer steps, so enqueueing a job loads neither the stages nor
their libraries (onnxruntime, the embedding model, qdrant-client): see ``conveyor[worker]``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from pipeline.settings import Settings
from schemas import PIPELINE, QUEUES
from schemas.pipeline import INTENT

#: how often the in-memory transport polls in embedded mode (the default 1 s crawls).
EMBEDDED_POLLING_INTERVAL_S = 0.005


def is_amqp(broker_url: str | None) -> bool:
    return (broker_url or "").startswith(("amqp://", "amqps://", "pyamqp://"))


def stage_queues(settings: Settings) -> list[Queue]:
    """One queue per stage. On RabbitMQ, quorum queues (replicated, kept on disk) whose
    ``x-delivery-limit`` stops a message that keeps killing workers, on topic exchanges so that
    countdowns (retries, re-queues) use Celery's native delayed delivery instead of a worker's memory."""
    if not is_amqp(settings.broker_url):
        return [Queue(name) for name in QUEUES]
    arguments = {"x-queue-type": "quorum", "x-delivery-limit": settings.broker_delivery_limit}
    return [Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments=arguments)
            for name in QUEUES]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Everything Celery needs, derived from the one settings object."""
    embedded = settings.embedded
    transport_options: dict[str, Any] = {
        # a short lease that live workers renew (workers/lease.py), swept every 10 s
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        # the sweep's lock: kombu holds it for up to 300 s, so a Redis stopped mid-sweep (the lock is in
        # the append-only file) blocked every sweep, and the jobs of lost connections, for 5 minutes
        "unacked_mutex_expire": 15,
    }
    if embedded:
        transport_options["polling_interval"] = EMBEDDED_POLLING_INTERVAL_S
    if is_amqp(settings.broker_url):
        # a publish returns once the broker has the message (quorum queues: on a majority's disk)
        transport_options = {"confirm_publish": True}
    redis_broker = (settings.broker_url or "").startswith(("redis://", "rediss://"))
    return {
        "broker_url": settings.broker_url or "memory://",
        # kombu's Redis transport with the restart bug defused (workers/redis_transport.py)
        "broker_transport": "workers.redis_transport:Transport" if redis_broker else None,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        # a chain's next step, a retry or a re-queue published while Redis restarts waits for it
        # (about 30 s) instead of failing the task, which would ack the message and lose the job
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 20, "interval_start": 0.2, "interval_step": 0.5,
                                      "interval_max": 2.0},
        # results live in Conveyor's own state store (records, dead letters), not Celery's backend
        "result_backend": None,
        "task_ignore_result": True,
        # JSON only on the wire
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        # a task is acknowledged after it ran; a worker killed mid-task hands it back
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # one message at a time per worker process: long LLM calls must not hoard messages
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        # Flower
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # routing: one queue per stage
        "task_queues": stage_queues(settings),
        "task_default_queue": INTENT.queue,
        "task_routes": {spec.task: {"queue": spec.queue} for spec in PIPELINE},
        "task_create_missing_queues": False,
        "worker_hijack_root_logger": False,
        # job_id, stage and batch_id on every line a stage emits (workers/logcontext.py)
        "worker_log_format": "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s%(job_context)s",
        "worker_task_log_format": "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: "
        "%(message)s%(job_context)s",
        # a message no task can run (not JSON, wrong shape, unknown task, pickle, oversized) is
        # dead-lettered and acknowledged instead of killing the worker or vanishing (workers/consumer.py)
        "worker_consumer": "workers.consumer:DeadLetteringConsumer",
        # logs, task events and Flower show a stage task's job ids, never its arguments or result
        # (workers/reprs.py; the producer side is the app's amqp class)
        "task_annotations": {spec.task: {"Request": "workers.reprs:IdOnlyRequest"} for spec in PIPELINE},
        # a prefork child warms its clients in worker_process_init (the embedder takes seconds)
        "worker_proc_alive_timeout": 60.0,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def create_app(settings: Settings | None = None, *, worker: bool = True) -> Celery:
    """A configured app. Without settings, configuration is read lazily from the environment.

    ``worker=False``: a producer's app (enqueue by task name, read the store), light to import."""
    from workers.runtime import bind_settings, settings_for

    celery = Celery("conveyor", set_as_current=False, amqp="workers.reprs:IdOnlyAMQP")
    if settings is None:
        celery.add_defaults(lambda: celery_config(settings_for(celery)))
    else:
        bind_settings(celery, settings)
        celery.add_defaults(celery_config(settings))
    if not worker:
        return celery
    import workers.signals  # noqa: F401  (connects per-process setup: clients, Sentry, log scrubbing)
    from workers import logcontext
    from workers.durability import RedisDurabilityCheck
    from workers.lease import LeaseKeeper
    from workers.reconcile import PeriodicReconcile
    from workers.tasks import register_stage_tasks

    logcontext.install()
    register_stage_tasks(celery)
    celery.steps["consumer"].add(LeaseKeeper)
    celery.steps["consumer"].add(RedisDurabilityCheck)
    celery.steps["consumer"].add(PeriodicReconcile)
    return celery


_apps: dict[str, Celery] = {}


def __getattr__(name: str) -> Celery:
    """``app`` (the worker's, for ``celery -A workers.app`` and Flower) and ``producer_app`` (the
    default client's), each built on first access and then kept."""
    if name not in ("app", "producer_app"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _apps:
        _apps[name] = create_app(worker=name == "app")
    return _apps[name]
