"""``conveyor worker --metrics-port N``: the endpoint Prometheus scrapes, in the worker's main process.

A prefork pool's children are processes of their own, so their counters are not in the main
process's memory. prometheus_client's multiprocess mode handles that: every process writes its
values to files of its own in ``PROMETHEUS_MULTIPROC_DIR`` and the endpoint sums them
(``MultiProcessCollector``); the counts of a child that exited stay in the sum, as counters must.
prometheus_client picks that mode when it is first imported, so this module imports it only inside
functions, and ``conveyor worker`` calls ``use_private_multiprocess_dir`` before it builds the app.
The threads pool uses the same files (one process), and the embedded worker records into
``workers.metrics.REGISTRY`` of its own process.

Queue depth and batch progress are not recorded by any process: ``SampledGauges`` reads them at
each scrape, from the broker and the state store, so no multiprocess gauge mode is involved.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from schemas import QUEUES

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import GaugeMetricFamily

    from pipeline.state import StateStore
    from schemas.batch import BatchInfo

log = logging.getLogger("conveyor.metrics")

ENV = "PROMETHEUS_MULTIPROC_DIR"
#: a finished batch stays on the dashboard this long after it was created.
RECENT_BATCH = timedelta(hours=24)


def use_private_multiprocess_dir() -> str:
    """A fresh directory for this worker's processes, removed when the worker exits."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the metrics directory was set: "
                           "prefork children would not be counted")
    path = tempfile.mkdtemp(prefix="conveyor-metrics-")
    os.environ[ENV] = path
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # never from a forked child
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path


def forget_process(pid: int | None) -> None:
    """A pool child exited: drop its live-gauge files (``worker_process_shutdown``); counts stay."""
    path = os.environ.get(ENV)
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid(), path)


def exporter_registry(sampled: Any) -> CollectorRegistry:
    """What the endpoint serves: every process's recorded values, and the sampled gauges."""
    from prometheus_client import CollectorRegistry, multiprocess

    from workers import metrics

    registry = CollectorRegistry()
    if os.environ.get(ENV):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(metrics.REGISTRY)
    registry.register(sampled)
    return registry


def serve(app: Any, port: int, address: str = "0.0.0.0") -> None:
    """Start the HTTP endpoint in a daemon thread of this process (raises OSError if the port is taken)."""
    from prometheus_client import start_http_server

    from workers.runtime import components_for, settings_for

    sampled = SampledGauges(settings_for(app).broker_url or "", lambda: components_for(app).state)
    start_http_server(port, addr=address, registry=exporter_registry(sampled))
    log.info("metrics on http://%s:%d/metrics", address, port)


class SampledGauges:
    """``conveyor_queue_depth`` and ``conveyor_batch_items``, read at scrape time.

    Queue depth on Redis is the ``LLEN`` of each queue's lists (kombu keeps one per priority step:
    ``queue``, ``queue\\x06\\x163`` ...); on RabbitMQ a passive declare's message count. Batches: the
    state store's counters (submitted, succeeded, failed, written with each record and letter) of
    every batch with items pending and every batch created in the last ``RECENT_BATCH``. A source
    that does not answer leaves its gauge empty for that scrape; the scrape itself never fails.
    """

    def __init__(self, broker_url: str, state: Callable[[], StateStore], queues: tuple[str, ...] = QUEUES) -> None:
        self.broker_url = broker_url
        self.state = state
        self.queues = queues
        self._redis: Any = None
        self._warned_at = 0.0

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._family("conveyor_queue_depth"), self._family("conveyor_batch_items")]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = self._family("conveyor_queue_depth")
        with self._quietly("queue depth"):
            for queue, count in self.queue_depths().items():
                depth.add_metric([queue], count)
        yield depth
        items = self._family("conveyor_batch_items")
        with self._quietly("batch items"):
            for batch_id, counts in self.batch_items().items():
                for state, count in counts.items():
                    items.add_metric([batch_id, state], count)
        yield items

    @staticmethod
    def _family(name: str) -> GaugeMetricFamily:
        from prometheus_client.core import GaugeMetricFamily

        from workers.metrics import SPEC

        return GaugeMetricFamily(name, SPEC[name].help, labels=SPEC[name].labels)

    @contextlib.contextmanager
    def _quietly(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # a broker or store away: no sample, one warning a minute
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("metrics: could not read %s: %s: %s", what, type(exc).__name__, exc)

    def queue_depths(self) -> dict[str, int]:
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self._redis_depths()
        if self.broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
            return self._amqp_depths()
        return {}

    def _redis_depths(self) -> dict[str, int]:
        import redis
        from kombu.transport.redis import Channel

        if self._redis is None:
            self._redis = redis.Redis.from_url(self.broker_url, socket_timeout=5, socket_connect_timeout=5)
        lists = {q: [f"{q}{Channel.sep}{p}" if p else q for p in Channel.priority_steps] for q in self.queues}
        with self._redis.pipeline(transaction=False) as pipe:
            for keys in lists.values():
                for key in keys:
                    pipe.llen(key)
            lengths = iter(pipe.execute())
        return {q: sum(next(lengths) for _ in keys) for q, keys in lists.items()}

    def _amqp_depths(self) -> dict[str, int]:
        from kombu import Connection

        depths = {}
        with Connection(self.broker_url, connect_timeout=5) as conn:
            for queue in self.queues:
                with contextlib.suppress(Exception), conn.channel() as channel:  # not declared yet: no sample
                    depths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
        return depths

    def batch_items(self) -> dict[str, dict[str, int]]:
        found = {}
        for info, counts in recent_batches(self.state()):
            done = {"succeeded": counts.get("succeeded", 0), "failed": counts.get("failed", 0)}
            found[info.batch_id] = {**done, "pending": batch_pending(counts)}
        return found


def batch_pending(counts: dict[str, int]) -> int:
    """Items of a batch sent and not settled yet, from its counters."""
    return max(0, counts.get("submitted", 0) - counts.get("succeeded", 0) - counts.get("failed", 0))


def recent_batches(state: StateStore) -> list[tuple[BatchInfo, dict[str, int]]]:
    """Every batch with items pending or created in the last ``RECENT_BATCH``, newest first, with its
    counters (submitted, succeeded, failed, and the usage fields): ``conveyor_batch_items`` and ``conveyor top``."""
    since = datetime.now(UTC) - RECENT_BATCH
    found = []
    for info in state.list_batches():
        counts = state.batch_counts(info.batch_id)
        if batch_pending(counts) or info.created_at >= since:
            found.append((info, counts))
    return found
