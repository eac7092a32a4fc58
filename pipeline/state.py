"""Durable job state: status, records, dead letters, idempotency keys, batch counters.

One interface, two backends. ``RedisStateStore`` is used whenever a Redis URL is configured
(distributed mode); ``SqliteStateStore`` keeps the same data in a file under the data
directory so that embedded mode needs no service and a later ``conveyor dlq list`` in another
process still sees what an earlier ``conveyor demo`` left. Both are written in terms of the
same few primitives, so behaviour cannot drift between them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from pipeline.errors import ProviderUnavailable
from schemas import DeadLetter, JobRecord, JobStatus

_DLQ = "dlq"
_RECORD = "record"
_STATUS = "status"
_IDEM = "idem"
_BATCH = "batch"


class StateStore(ABC):
    """The operations the pipeline needs; subclasses provide the storage primitives."""

    # --- primitives ---------------------------------------------------------------------
    @abstractmethod
    def _put(self, ns: str, key: str, value: str, *, indexed: bool = False) -> None: ...

    @abstractmethod
    def _get(self, ns: str, key: str) -> str | None: ...

    @abstractmethod
    def _put_if_absent(self, ns: str, key: str, value: str) -> str | None:
        """Store value unless key exists; return the existing value or None if stored."""

    @abstractmethod
    def _delete(self, ns: str, key: str) -> None: ...

    @abstractmethod
    def _newest(self, ns: str, limit: int) -> list[str]:
        """Values of an indexed namespace, newest first."""

    @abstractmethod
    def _incr(self, ns: str, key: str, field: str, amount: int) -> int: ...

    @abstractmethod
    def _counters(self, ns: str, key: str) -> dict[str, int]: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise ProviderUnavailable if the store cannot be reached."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # --- jobs ---------------------------------------------------------------------------
    def claim_idempotency_key(self, tenant: str, key: str, job_id: str) -> str | None:
        """First claimant wins; returns the earlier job_id when this key was already used."""
        return self._put_if_absent(_IDEM, f"{tenant}:{key}", job_id)

    def release_idempotency_key(self, tenant: str, key: str) -> None:
        """Undo a claim whose job could not be enqueued, so a resubmission is not swallowed."""
        self._delete(_IDEM, f"{tenant}:{key}")

    def set_status(self, status: JobStatus) -> None:
        self._put(_STATUS, status.job_id, status.model_dump_json())

    def get_status(self, job_id: str) -> JobStatus | None:
        raw = self._get(_STATUS, job_id)
        return JobStatus.model_validate_json(raw) if raw else None

    def put_record(self, record: JobRecord) -> bool:
        """Store the record; True when it is the first one for this job (redelivery is not new)."""
        return self._put_if_absent(_RECORD, record.job_id, record.model_dump_json()) is None

    def get_record(self, job_id: str) -> JobRecord | None:
        raw = self._get(_RECORD, job_id)
        return JobRecord.model_validate_json(raw) if raw else None

    # --- dead letters -------------------------------------------------------------------
    def put_dead_letter(self, letter: DeadLetter) -> None:
        self._put(_DLQ, letter.dead_letter_id, letter.model_dump_json(), indexed=True)

    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        raw = self._get(_DLQ, dead_letter_id)
        return DeadLetter.model_validate_json(raw) if raw else None

    def list_dead_letters(self, *, state: str | None = "open", limit: int = 100) -> list[DeadLetter]:
        letters = [DeadLetter.model_validate_json(raw) for raw in self._newest(_DLQ, 100_000)]
        return [dl for dl in letters if state is None or dl.state == state][:limit]

    # --- batches ------------------------------------------------------------------------
    def batch_incr(self, batch_id: str, field: str, amount: int = 1) -> int:
        return self._incr(_BATCH, batch_id, field, amount)

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        return self._counters(_BATCH, batch_id)


class RedisStateStore(StateStore):
    """Keys: ``conveyor:<ns>:<key>``; dead letters also in the sorted set ``conveyor:<ns>:_index``."""

    def __init__(self, client: Any, prefix: str = "conveyor") -> None:
        self._r = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str) -> RedisStateStore:
        import redis

        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=10, health_check_interval=30))

    def _k(self, ns: str, key: str) -> str:
        return f"{self._prefix}:{ns}:{key}"

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ProviderUnavailable(f"state store unreachable: {type(exc).__name__}") from exc

    def _put(self, ns: str, key: str, value: str, *, indexed: bool = False) -> None:
        if not indexed:
            self._call(self._r.set, self._k(ns, key), value)
            return
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self._k(ns, key), value)
        pipe.zadd(self._k(ns, "_index"), {key: time.time()}, nx=True)  # keep first-failure order
        self._call(pipe.execute)

    def _get(self, ns: str, key: str) -> str | None:
        value: str | None = self._call(self._r.get, self._k(ns, key))
        return value

    def _put_if_absent(self, ns: str, key: str, value: str) -> str | None:
        if self._call(self._r.set, self._k(ns, key), value, nx=True):
            return None
        existing: str | None = self._call(self._r.get, self._k(ns, key))
        return existing

    def _delete(self, ns: str, key: str) -> None:
        self._call(self._r.delete, self._k(ns, key))

    def _newest(self, ns: str, limit: int) -> list[str]:
        keys = self._call(self._r.zrevrange, self._k(ns, "_index"), 0, limit - 1)
        if not keys:
            return []
        values = self._call(self._r.mget, [self._k(ns, k) for k in keys])
        return [v for v in values if v is not None]

    def _incr(self, ns: str, key: str, field: str, amount: int) -> int:
        return int(self._call(self._r.hincrby, self._k(ns, key), field, amount))

    def _counters(self, ns: str, key: str) -> dict[str, int]:
        raw = self._call(self._r.hgetall, self._k(ns, key))
        return {k: int(v) for k, v in raw.items()}

    def ping(self) -> None:
        self._call(self._r.ping)

    def close(self) -> None:
        self._r.close()


class SqliteStateStore(StateStore):
    """Embedded-mode store: one SQLite file, safe for the in-process worker's threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS kv (ns TEXT, key TEXT, value TEXT, ts REAL, PRIMARY KEY (ns, key))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS counters (ns TEXT, key TEXT, field TEXT, n INTEGER,"
            " PRIMARY KEY (ns, key, field))"
        )

    def _put(self, ns: str, key: str, value: str, *, indexed: bool = False) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO kv VALUES (?, ?, ?, ?) ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
                (ns, key, value, time.time()),
            )

    def _get(self, ns: str, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE ns = ? AND key = ?", (ns, key)).fetchone()
        return row[0] if row else None

    def _put_if_absent(self, ns: str, key: str, value: str) -> str | None:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO kv VALUES (?, ?, ?, ?) ON CONFLICT (ns, key) DO NOTHING", (ns, key, value, time.time())
            )
            if cur.rowcount == 1:
                return None
            row = self._db.execute("SELECT value FROM kv WHERE ns = ? AND key = ?", (ns, key)).fetchone()
        return str(row[0])

    def _delete(self, ns: str, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM kv WHERE ns = ? AND key = ?", (ns, key))

    def _newest(self, ns: str, limit: int) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT value FROM kv WHERE ns = ? ORDER BY ts DESC LIMIT ?", (ns, limit)
            ).fetchall()
        return [r[0] for r in rows]

    def _incr(self, ns: str, key: str, field: str, amount: int) -> int:
        with self._lock:
            row = self._db.execute(
                "INSERT INTO counters VALUES (?, ?, ?, ?) ON CONFLICT (ns, key, field) DO UPDATE SET n = n + ?"
                " RETURNING n",
                (ns, key, field, amount, amount),
            ).fetchone()
        return int(row[0])

    def _counters(self, ns: str, key: str) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT field, n FROM counters WHERE ns = ? AND key = ?", (ns, key)).fetchall()
        return {f: int(n) for f, n in rows}

    def ping(self) -> None:
        with self._lock:
            self._db.execute("SELECT 1")

    def close(self) -> None:
        with self._lock:
            self._db.close()
