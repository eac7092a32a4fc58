"""kombu's Redis transport, with a worker-killing bug around a Redis restart defused.

When Redis goes away, Celery's consumer tears its connection down; afterwards the channel
still gets used — closing it restores the messages it held, and a pool child that finishes
its task has the parent ack it on that channel. In kombu 5.x both need a connection pool the
teardown already dropped, and fail with an AttributeError (``'NoneType' object has no
attribute 'hostname'`` / ``'client'``) instead of a connection error. Celery treats that as
unrecoverable and the worker process exits (seen with ``scripts/chaos.py --scenario
redis-restart``: the prefork ``guard,record`` worker died on most restarts).

Here a channel whose connection is gone raises ``redis.ConnectionError``, which Celery
handles as the connection loss it is ("Couldn't ack", "Restoring ... unacknowledged
messages" fails and is logged). Nothing is lost: the messages are still in Redis' ``unacked``
hash under their lease, and any worker puts them back when it runs out (``workers/lease.py``).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger("conveyor.transport")


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> Any:
        try:
            return super().restore_unacked(client)
        except self.channel.connection_errors as exc:
            delivered = self._delivered
            held = len(delivered) if delivered is not None else 0
            if delivered is not None:
                delivered.clear()
            log.warning("could not hand back %d message(s) on a lost connection (%s); their leases "
                        "bring them back", held, type(exc).__name__)
            return None


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise redis.ConnectionError("the broker connection of this channel is closed")
        return super()._connparams(asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
