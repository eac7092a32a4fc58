"""Say loudly at start when the Redis behind the broker or the state store would lose the batch on a restart.

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


def report(role: str, where: str, check: Any) -> None:
    """Log every problem ``check()`` finds; a Redis that refuses CONFIG (managed) gets an info line."""
    try:
        problems = check()
    except Exception as exc:  # CONFIG disabled (managed Redis) or not answering yet
        log.info("could not check the durability of the %s Redis at %s: %s", role, where, exc)
        return
    for problem in problems:
        log.error("the %s Redis at %s: %s", role, where, problem)


class RedisDurabilityCheck(bootsteps.StartStopStep):
    """Consumer step: check the broker's Redis, and the state store's when it is another one
    (a RabbitMQ broker keeps messages; job state and dead letters are still in Redis), on every (re)connect."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        from kombu.utils.url import maybe_sanitize_url

        from workers.runtime import settings_for

        channel = getattr(c.task_consumer, "channel", None)
        broker_is_redis = getattr(c.connection.transport, "driver_type", "") == "redis"
        if channel is not None and broker_is_redis:
            def broker_check() -> list[str]:
                with channel.conn_or_acquire() as client:
                    return durability_problems(client)

            report("broker", c.connection.as_uri(), broker_check)  # password masked by kombu
        store_url = settings_for(c.app).store_url
        if store_url and not (broker_is_redis and store_url == settings_for(c.app).broker_url):
            import redis

            def store_check() -> list[str]:
                with redis.Redis.from_url(store_url, socket_timeout=5) as client:
                    return durability_problems(client)

            report("state store", str(maybe_sanitize_url(store_url)), store_check)
