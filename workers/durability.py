"""Say loudly at start when the Redis behind the broker would lose the batch on a restart.

A Redis with neither an append-only file nor snapshots forgets every queued message, job
status and dead letter when it restarts; an eviction policy other than ``noeviction`` drops
keys under memory pressure. Neither is visible from a worker's behaviour until jobs are gone,
so a consumer step checks ``CONFIG GET`` each time the worker (re)connects and logs an error
naming the host. A managed Redis that refuses ``CONFIG`` gets an info line instead.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

log = logging.getLogger("conveyor.durability")


def durability_problems(client: Any) -> list[str]:
    """What in this Redis's configuration can lose jobs; empty when it is durable."""
    config = {}
    for key in ("appendonly", "save", "maxmemory-policy"):
        config.update({str(k): str(v) for k, v in client.config_get(key).items()})
    problems = []
    if config.get("appendonly") != "yes" and not config.get("save", "").strip():
        problems.append("NO PERSISTENCE: appendonly is off and no snapshots are configured (save ''); "
                        "a restart loses every queued job, status and dead letter - set appendonly yes")
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        problems.append(f"maxmemory-policy is {policy}: under memory pressure Redis drops queued jobs - "
                        "set maxmemory-policy noeviction")
    return problems


class RedisDurabilityCheck(bootsteps.StartStopStep):
    """Consumer step: check the broker's Redis on every (re)connect."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        channel = getattr(c.task_consumer, "channel", None)
        if channel is None or getattr(c.connection.transport, "driver_type", "") != "redis":
            return
        where = c.connection.as_uri()  # password masked by kombu
        try:
            with channel.conn_or_acquire() as client:
                problems = durability_problems(client)
        except Exception as exc:  # CONFIG disabled (managed Redis) or not answering yet
            log.info("could not check the durability of %s: %s", where, exc)
            return
        for problem in problems:
            log.error("the broker Redis at %s: %s", where, problem)
