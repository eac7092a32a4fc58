"""Renew the broker lease of every message this worker holds, so a dead worker's jobs come back fast.

The Redis transport has no per-consumer delivery: kombu keeps each unacknowledged message in
the ``unacked`` hash, its delivery time in the ``unacked_index`` sorted set, and every worker
periodically puts back on its queue the messages older than ``visibility_timeout``. With
kombu's default hour, the jobs of a killed worker wait an hour, and a task that runs (or a
countdown that waits) longer than the timeout is handed to a second worker while the first
still has it.

Here the timeout is a short lease (``CONVEYOR_VISIBILITY_TIMEOUT_S``, default 60 s), and a
consumer step renews, every quarter lease, the index score of each message this worker still
holds — running, waiting for a pool slot or held for a countdown. ``ZADD XX`` only touches
members that exist, so a message acknowledged in between is never brought back. A killed
worker stops renewing; the others restore its messages within the lease plus one sweep
(``unacked_restore_interval``, 10 s, with the throttle at 1).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps

log = logging.getLogger("conveyor.lease")


def held_delivery_tags(channel: Any) -> list[str]:
    """The delivery tags the channel has not acknowledged yet (kombu's virtual QoS keeps them)."""
    delivered = getattr(getattr(channel, "qos", None), "_delivered", None)
    if not delivered:
        return []
    for _ in range(3):  # the consumer thread may add or ack one while we copy
        try:
            return [str(tag) for tag in list(delivered)]
        except RuntimeError:
            continue
    return []


def renew(client: Any, index_key: str, tags: list[str], now: float | None = None) -> int:
    """Set the delivery time of ``tags`` to now, for those still in the index; returns how many."""
    if not tags:
        return 0
    stamp = time.time() if now is None else now
    client.zadd(index_key, {tag: stamp for tag in tags}, xx=True, ch=True)
    return len(tags)


class LeaseKeeper(bootsteps.StartStopStep):
    """Consumer step: renew the leases on the consumer's timer (the main process, any pool)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._tref: Any = None

    def start(self, c: Any) -> None:
        channel = getattr(c.task_consumer, "channel", None)
        if channel is None or getattr(c.connection.transport, "driver_type", "") != "redis":
            return
        lease_s = float(channel.visibility_timeout)
        index_key = channel.unacked_index_key  # the channel's client adds any global_keyprefix itself

        def tick() -> None:
            try:
                # the same sync connection pool kombu's own restore sweep uses on this timer
                with channel.conn_or_acquire() as client:
                    renew(client, index_key, held_delivery_tags(channel))
            except Exception as exc:  # Redis away for a moment: the next tick tries again
                log.warning("could not renew message leases: %s: %s", type(exc).__name__, exc)

        self._tref = c.timer.call_repeatedly(max(lease_s / 4, 1.0), tick)
        log.info("renewing message leases every %.0fs (lease %.0fs)", max(lease_s / 4, 1.0), lease_s)

    def stop(self, c: Any) -> None:
        if self._tref is not None:
            self._tref.cancel()
            self._tref = None

    shutdown = stop
