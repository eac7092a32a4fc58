"""Durable job state: status, records, dead letters, idempotency keys, batch counters.

One interface, two backends. ``RedisStateStore`` is used whenever a Redis URL is configured
(distributed mode); ``SqliteStateStore`` keeps the same data in a file under the data
directory so that embedded mode needs no service and a later ``conveyor dlq list`` in another
process still sees what an earlier ``conveyor demo`` left. One contract test suite runs on both.

Bookkeeping that touches several things is ONE atomic write (a Lua script in Redis, one
transaction in SQLite), so no reader sees half of it and no crash leaves half of it:

    complete(record)        record (only the first, SET NX) + status succeeded + batch "succeeded"
    fail(letter)            dead letter + its index entries + status failed + batch "failed"
    reopen(id, stage)       letter replayed + status failed -> queued + batch "failed" - 1 (replay only)

``set_status`` only records progress (queued, running) and never moves a terminal status
(succeeded, failed) back, so a redelivered stage cannot undo a finished job. The batch's
``failed`` counter counts the jobs whose status is ``failed``.

A dead letter is stored lean: its request once (``stage_input`` without its copy of the
request), and the fields that change (state, replays) in a small summary beside the body. The
summaries are what ``dlq list`` pages through; listing or replaying never reads or rewrites a body.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ProviderUnavailable
from schemas import DeadLetter, JobRecord, JobStatus
from schemas.batch import BatchInfo, BatchItem
from schemas.deadletter import DeadLetterSummary
from schemas.pipeline import RECORD

if TYPE_CHECKING:
    from pipeline.settings import Settings

_DLQ = "dlq"
_RECORD = "record"
_STATUS = "status"
_IDEM = "idem"
_BATCH = "batch"
_USAGE = "usage"
_CHECKPOINT = "checkpoint"
_SENT = "sent"
_BLOB = "blob"
_BLOB_REFS = "blobrefs"
_BATCH_INFO = "batchinfo"
_BATCH_ITEMS = "batchitems"
#: what expires after the retention time (CONVEYOR_RETENTION_S); dead letters stay until resolved
RETAINED = frozenset({_RECORD, _STATUS, _IDEM, _BATCH, _BATCH_INFO, _BATCH_ITEMS, _USAGE})
#: a batch's usage counters, added up atomically with each of its records
BATCH_USAGE_FIELDS = ("llm_calls", "prompt_tokens", "completion_tokens", "cost_micro_usd", "unpriced_jobs")


def batch_usage(record: JobRecord) -> dict[str, int]:
    """What the record adds to its batch's bill (fields that are zero are left out). A record whose
    cost is unknown (``cost_usd`` None: a model with no known price) counts in ``unpriced_jobs``, not as $0."""
    usage = {"llm_calls": record.llm_calls, "prompt_tokens": record.usage.prompt_tokens,
             "completion_tokens": record.usage.completion_tokens,
             "cost_micro_usd": round((record.cost_usd or 0.0) * 1_000_000),
             "unpriced_jobs": int(record.cost_usd is None)}
    return {k: v for k, v in usage.items() if v}
#: a checkpoint outlives any sane stage run; Redis forgets it after this long.
CHECKPOINT_TTL_S = 7 * 24 * 3600

_TERMINAL = ("succeeded", "failed")
#: what changes on a letter after it is written; kept in its summary, never in its body.
_MUTABLE = {"state", "replays", "replayed_at"}
#: ids read per round trip while a filtered Redis page walks its smallest sorted set.
_SCAN_CHUNK = 200


@dataclass(frozen=True)
class LetterFilter:
    """Which dead letters a page or a bulk replay covers; None matches anything."""

    state: str | None = "open"
    batch_id: str | None = None
    failure_class: str | None = None
    stage: str | None = None
    created_before: datetime | None = None


def _pack(letter: DeadLetter) -> str:
    """The stored body: the request once, without the fields that live in the summary."""
    body = letter.model_dump(mode="json", exclude=_MUTABLE)
    request, stage_input = body["request"], body["stage_input"]
    if stage_input == request:  # the intent stage's input is the request
        body["stage_input"], body["stage_input_request"] = {}, "is"
    elif stage_input.get("request") == request:  # later stages carry it in their input
        del stage_input["request"]
        body["stage_input_request"] = "inside"
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _unpack(body: str, summary: DeadLetterSummary) -> DeadLetter:
    doc = json.loads(body)
    where = doc.pop("stage_input_request", None)
    if where == "is":
        doc["stage_input"] = doc["request"]
    elif where == "inside":
        doc["stage_input"] = {"request": doc["request"], **doc["stage_input"]}
    return DeadLetter.model_validate(
        {**doc, "state": summary.state, "replays": summary.replays, "replayed_at": summary.replayed_at}
    )


def _failed_status(letter: DeadLetter) -> JobStatus:
    return JobStatus(job_id=letter.job_id, state="failed", stage=letter.stage, attempts=letter.attempts,
                     dead_letter_id=letter.dead_letter_id, error=f"{letter.failure_class}: {letter.error_message}")


def _succeeded_status(record: JobRecord) -> JobStatus:
    return JobStatus(job_id=record.job_id, state="succeeded", stage=RECORD.name)


def _replayed(summary: DeadLetterSummary) -> DeadLetterSummary:
    return summary.model_copy(update={"state": "replayed", "replays": summary.replays + 1,
                                      "replayed_at": datetime.now(UTC)})


class StateStore(ABC):
    """The operations the pipeline needs; subclasses provide storage and the atomic writes."""

    # --- single-key primitives ------------------------------------------------------------
    @abstractmethod
    def _get(self, ns: str, key: str) -> str | None: ...

    @abstractmethod
    def _exists(self, ns: str, key: str) -> bool: ...

    @abstractmethod
    def _put_if_absent(self, ns: str, key: str, value: str) -> str | None:
        """Store value unless key exists; return the existing value or None if stored."""

    @abstractmethod
    def _delete(self, ns: str, key: str) -> None: ...

    @abstractmethod
    def _put(self, ns: str, key: str, value: str, ttl_s: int) -> None: ...

    @abstractmethod
    def _values(self, ns: str) -> Iterator[str]:
        """Every value of a namespace (an operator's scan, never a worker's hot path)."""

    @abstractmethod
    def _incr(self, ns: str, key: str, field: str, amount: int) -> int: ...

    @abstractmethod
    def _counters(self, ns: str, key: str) -> dict[str, int]: ...

    def count_delivery(self, message_key: str) -> int:
        """How many times a broker message has now been received (the Redis broker keeps no count)."""
        return self._incr("deliveries", message_key, "n", 1)

    def claim_turn(self, name: str, ttl_s: int) -> bool:
        """True for one caller per ``ttl_s`` (a periodic chore that one worker of many should do).
        A single-process store has one caller, so it is always its turn."""
        return True

    @abstractmethod
    def _hset(self, ns: str, key: str, mapping: dict[str, str]) -> None: ...

    @abstractmethod
    def _hgetall(self, ns: str, key: str) -> dict[str, str]: ...

    @abstractmethod
    def _hscan(self, ns: str, key: str, page: int) -> Iterator[list[tuple[str, str]]]:
        """A hash's fields in pages of about ``page``, so a reader never holds all of them."""

    @abstractmethod
    def _hlen(self, ns: str, key: str) -> int: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise ProviderUnavailable if the store cannot be reached."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # --- atomic writes (see the module docstring) -----------------------------------------
    @abstractmethod
    def _set_progress(self, status: JobStatus) -> bool: ...

    @abstractmethod
    def complete(self, record: JobRecord) -> bool:
        """Record, status succeeded and batch count in one write; False (nothing changed) if
        the job already has a record, e.g. when the record stage is redelivered."""

    @abstractmethod
    def fail(self, letter: DeadLetter) -> bool:
        """Dead letter, status failed and batch count in one write; False (nothing stored) if
        the job already has a record: a late failure of a redelivered stage changes nothing."""

    @abstractmethod
    def reopen(self, dead_letter_id: str, stage: str) -> DeadLetterSummary | None:
        """After a replay was enqueued: mark the letter replayed and, if the job is still
        failed, set it back to queued at ``stage``, in one write. None if the letter was not open."""

    @abstractmethod
    def _letter(self, dead_letter_id: str) -> tuple[str, DeadLetterSummary] | None:
        """The stored body and summary of a letter."""

    @abstractmethod
    def dead_letter_page(self, where: LetterFilter, *, limit: int = 50, offset: int = 0) -> list[DeadLetterSummary]:
        """Summaries of the matching letters, newest first; reads the index, never a body."""

    # --- jobs -----------------------------------------------------------------------------
    def claim_idempotency_key(self, tenant: str, key: str, job_id: str) -> str | None:
        """First claimant wins; returns the earlier job_id when this key was already used."""
        return self._put_if_absent(_IDEM, f"{tenant}:{key}", job_id)

    def release_idempotency_key(self, tenant: str, key: str) -> None:
        """Undo a claim whose job could not be enqueued, so a resubmission is not swallowed."""
        self._delete(_IDEM, f"{tenant}:{key}")

    def set_status(self, status: JobStatus) -> bool:
        """Record progress; False, and nothing changes, when the job is already succeeded or failed."""
        if status.state in _TERMINAL:
            raise ValueError(f"status {status.state!r} is written by complete() or fail(), never set directly")
        return self._set_progress(status)

    def set_status_if_absent(self, status: JobStatus) -> bool:
        """A first status only: a worker that already wrote ``running`` (or finished the job) is not undone."""
        if status.state in _TERMINAL:
            raise ValueError(f"status {status.state!r} is written by complete() or fail(), never set directly")
        return self._put_if_absent(_STATUS, status.job_id, status.model_dump_json()) is None

    def get_status(self, job_id: str) -> JobStatus | None:
        raw = self._get(_STATUS, job_id)
        return JobStatus.model_validate_json(raw) if raw else None

    def get_statuses(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """The statuses that exist among ``job_ids`` (a batch's status reads thousands at once)."""
        found = {}
        for job_id in job_ids:
            status = self.get_status(job_id)
            if status is not None:
                found[job_id] = status
        return found

    def has_record(self, job_id: str) -> bool:
        """Cheap (no record is read): lets a worker skip a stage of a job that already finished.

        Not the same as a terminal status: a replayed job is still ``failed`` until ``reopen``
        runs, which is after its message was enqueued."""
        return self._exists(_RECORD, job_id)

    def get_record(self, job_id: str) -> JobRecord | None:
        raw = self._get(_RECORD, job_id)
        return JobRecord.model_validate_json(raw) if raw else None

    # --- dead letters ---------------------------------------------------------------------
    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        found = self._letter(dead_letter_id)
        return _unpack(*found) if found else None

    def list_dead_letters(self, *, state: str | None = "open", limit: int = 100) -> list[DeadLetter]:
        """Whole letters of the newest page (for code and tests; ``dlq list`` shows summaries)."""
        page = self.dead_letter_page(LetterFilter(state=state), limit=limit)
        letters = (self.get_dead_letter(s.dead_letter_id) for s in page)
        return [dl for dl in letters if dl is not None]

    # --- batches --------------------------------------------------------------------------
    def checkpoint(self, job_id: str, stage: str, payload: Any) -> None:
        """The input of the stage the job is entering, so ``reconcile`` can re-enqueue it there."""
        self._put(_CHECKPOINT, job_id, json.dumps({"stage": stage, "payload": payload}), CHECKPOINT_TTL_S)

    def mark_sent(self, job_id: str, stage: str) -> None:
        """The message that enters ``stage`` has left (written after the publish, never before)."""
        self._put(_SENT, f"{job_id}:{stage}", "1", CHECKPOINT_TTL_S)

    def was_sent(self, job_id: str, stage: str) -> bool:
        """Whether a message entering ``stage`` was published: a checkpoint alone does not say so (a
        worker killed between its checkpoint and its publish leaves a checkpoint and no message)."""
        return self._exists(_SENT, f"{job_id}:{stage}")

    def get_checkpoint(self, job_id: str) -> tuple[str, Any] | None:
        raw = self._get(_CHECKPOINT, job_id)
        if raw is None:
            return None
        found = json.loads(raw)
        return str(found["stage"]), found["payload"]

    def stalled(self, older_than: datetime) -> list[JobStatus]:
        """Jobs still queued or running whose status has not moved since ``older_than``."""
        found = []
        for raw in self._values(_STATUS):
            status = JobStatus.model_validate_json(raw)
            if status.state not in _TERMINAL and status.updated_at < older_than:
                found.append(status)
        return sorted(found, key=lambda s: s.updated_at)

    def add_usage(self, job_id: str, usage: dict[str, int]) -> None:
        """What a failed attempt of the job made upstream (and was billed for), kept for its record."""
        for field, amount in usage.items():
            if amount:
                self._incr(_USAGE, job_id, field, int(amount))

    def take_usage(self, job_id: str) -> dict[str, int]:
        """The usage earlier attempts left, handed over once: read, then subtracted (a concurrent
        add is never lost, a second take finds nothing)."""
        found = {field: n for field, n in self._counters(_USAGE, job_id).items() if n}
        for field, n in found.items():
            self._incr(_USAGE, job_id, field, -n)
        return found

    def batch_incr(self, batch_id: str, field: str, amount: int = 1) -> int:
        return self._incr(_BATCH, batch_id, field, amount)

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        return self._counters(_BATCH, batch_id)

    # --- batches ----------------------------------------------------------------------------
    def put_batch(self, info: BatchInfo) -> None:
        self._put(_BATCH_INFO, info.batch_id, info.model_dump_json(), ttl_s=0)

    def get_batch(self, batch_id: str) -> BatchInfo | None:
        raw = self._get(_BATCH_INFO, batch_id)
        return BatchInfo.model_validate_json(raw) if raw else None

    def list_batches(self) -> list[BatchInfo]:
        return sorted((BatchInfo.model_validate_json(v) for v in self._values(_BATCH_INFO)),
                      key=lambda b: b.created_at, reverse=True)

    def add_batch_items(self, batch_id: str, items: list[BatchItem]) -> None:
        """Register items under their ``custom_id`` (a resubmitted item's newer version replaces it)."""
        for start in range(0, len(items), 500):
            self._hset(_BATCH_ITEMS, batch_id, {i.custom_id: i.model_dump_json() for i in items[start:start + 500]})

    def batch_items(self, batch_id: str) -> dict[str, BatchItem]:
        return {cid: BatchItem.model_validate_json(raw) for cid, raw in self._hgetall(_BATCH_ITEMS, batch_id).items()}

    def iter_batch_items(self, batch_id: str, page: int = 1000) -> Iterator[list[BatchItem]]:
        """A batch's items page by page (a 10,000-item batch's status does not hold them all at once)."""
        for fields in self._hscan(_BATCH_ITEMS, batch_id, page):
            yield [BatchItem.model_validate_json(raw) for _, raw in fields]

    def batch_item_count(self, batch_id: str) -> int:
        return self._hlen(_BATCH_ITEMS, batch_id)

    # --- documents by reference ---------------------------------------------------------------
    def put_blob(self, sha256: str, data: bytes, ttl_s: int) -> None:
        """Keep a document's bytes for the ingest stage, one reference more per item that needs them."""
        self._put(_BLOB, sha256, base64.b64encode(data).decode("ascii"), ttl_s=ttl_s)
        self._incr(_BLOB_REFS, sha256, "n", 1)

    def get_blob(self, sha256: str) -> bytes | None:
        raw = self._get(_BLOB, sha256)
        return base64.b64decode(raw) if raw is not None else None

    def release_blob(self, sha256: str) -> None:
        """One item is done with the bytes; the last one deletes them."""
        if self._incr(_BLOB_REFS, sha256, "n", -1) <= 0:
            self._delete(_BLOB, sha256)


# the last ARGV of every script is the retention in seconds (0: keep for ever)
_EXPIRE = """
local function retain(key)
  local ttl = tonumber(ARGV[#ARGV])
  if key and ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
"""

# KEYS[1] status; ARGV[1] status JSON
_SET_PROGRESS = _EXPIRE + """
local current = redis.call('GET', KEYS[1])
if current then
  local state = cjson.decode(current).state
  if state == 'succeeded' or state == 'failed' then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
retain(KEYS[1])
return 1
"""

# KEYS record, status, [batch counters]; ARGV record JSON, status JSON, usage field/amount pairs
_COMPLETE = _EXPIRE + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local previous = redis.call('GET', KEYS[2])
local was_failed = previous and cjson.decode(previous).state == 'failed'
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
if KEYS[3] then
  redis.call('HINCRBY', KEYS[3], 'succeeded', 1)
  if was_failed then redis.call('HINCRBY', KEYS[3], 'failed', -1) end
  for i = 3, #ARGV - 1, 2 do redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1]) end
end
retain(KEYS[1]); retain(KEYS[2]); retain(KEYS[3])
return 1
"""

# KEYS record, status, body, summaries, <ARGV[6] sorted sets>, [batch counters]
# ARGV id, body, summary JSON, score (created_at), status JSON, number of sorted sets
_FAIL = _EXPIRE + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local previous = redis.call('GET', KEYS[2])
local was_failed = previous and cjson.decode(previous).state == 'failed'
local sets = tonumber(ARGV[6])
redis.call('SET', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
for i = 5, 4 + sets do redis.call('ZADD', KEYS[i], ARGV[4], ARGV[1]) end
redis.call('SET', KEYS[2], ARGV[5])
local counters = KEYS[5 + sets]
if counters and not was_failed then redis.call('HINCRBY', counters, 'failed', 1) end
retain(KEYS[2]); retain(counters)
return 1
"""

# KEYS summaries, open set, replayed set, status, [batch counters]
# ARGV id, new summary JSON, score (created_at), queued status JSON
_REOPEN = _EXPIRE + """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current or cjson.decode(current).state ~= 'open' then return 0 end
local previous = redis.call('GET', KEYS[4])
local was_failed = previous and cjson.decode(previous).state == 'failed'
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
if was_failed then
  redis.call('SET', KEYS[4], ARGV[4])
  retain(KEYS[4])
  if KEYS[5] then redis.call('HINCRBY', KEYS[5], 'failed', -1) end
end
return 1
"""


class RedisStateStore(StateStore):
    """Keys ``conveyor:<ns>:<key>``. A dead letter's body is ``conveyor:dlq:<id>``, its summary a
    field of the hash ``conveyor:dlq:_summary``; sorted sets by creation time index them:
    ``conveyor:dlq:_index`` (all) and ``conveyor:dlq:_by:<state|batch|class|stage>:<value>``."""

    def __init__(self, client: Any, prefix: str = "conveyor", *, retention_s: int = 0) -> None:
        self._r = client
        self._prefix = prefix
        self.retention_s = retention_s
        kwargs = client.connection_pool.connection_kwargs
        #: host:port (or socket path) for error messages; never the URL, which may hold a password.
        self.where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        self._set_progress_script = client.register_script(_SET_PROGRESS)
        self._complete_script = client.register_script(_COMPLETE)
        self._fail_script = client.register_script(_FAIL)
        self._reopen_script = client.register_script(_REOPEN)

    @classmethod
    def from_url(cls, url: str) -> RedisStateStore:
        import redis

        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=10, health_check_interval=30))

    def _k(self, ns: str, key: str) -> str:
        return f"{self._prefix}:{ns}:{key}"

    def _by(self, field: str, value: str) -> str:
        return self._k(_DLQ, f"_by:{field}:{value}")

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ProviderUnavailable(f"state store unreachable at {self.where}: {type(exc).__name__}") from exc

    def _get(self, ns: str, key: str) -> str | None:
        value: str | None = self._call(self._r.get, self._k(ns, key))
        return value

    def _exists(self, ns: str, key: str) -> bool:
        return bool(self._call(self._r.exists, self._k(ns, key)))

    def count_delivery(self, message_key: str, ttl_s: int = 7 * 24 * 3600) -> int:
        pipe = self._r.pipeline()
        key = self._k("deliveries", message_key)
        pipe.incr(key)
        pipe.expire(key, ttl_s)
        count, _ = self._call(pipe.execute)
        return int(count)

    def get_statuses(self, job_ids: list[str]) -> dict[str, JobStatus]:
        found = {}
        for start in range(0, len(job_ids), 1000):
            part = job_ids[start:start + 1000]
            values = self._call(self._r.mget, [self._k(_STATUS, j) for j in part])
            found.update({j: JobStatus.model_validate_json(v) for j, v in zip(part, values, strict=True) if v})
        return found

    def _hset(self, ns: str, key: str, mapping: dict[str, str]) -> None:
        if mapping:
            self._call(self._r.hset, self._k(ns, key), mapping=mapping)
            self._expire(ns, key)

    def _hgetall(self, ns: str, key: str) -> dict[str, str]:
        found: dict[str, str] = self._call(self._r.hgetall, self._k(ns, key))
        return found

    def _hscan(self, ns: str, key: str, page: int) -> Iterator[list[tuple[str, str]]]:
        cursor: int = 0
        while True:
            cursor, fields = self._call(self._r.hscan, self._k(ns, key), cursor, count=page)
            if fields:
                yield list(fields.items())
            if not cursor:
                return

    def _hlen(self, ns: str, key: str) -> int:
        return int(self._call(self._r.hlen, self._k(ns, key)))

    def claim_turn(self, name: str, ttl_s: int) -> bool:
        return bool(self._call(self._r.set, self._k("turn", name), "1", nx=True, ex=max(1, ttl_s)))

    def _retained(self, ns: str) -> int | None:
        return self.retention_s if self.retention_s and ns in RETAINED else None

    def _expire(self, ns: str, key: str) -> None:
        if ttl := self._retained(ns):
            self._call(self._r.expire, self._k(ns, key), ttl)

    def _put_if_absent(self, ns: str, key: str, value: str) -> str | None:
        if self._call(self._r.set, self._k(ns, key), value, nx=True, ex=self._retained(ns)):
            return None
        existing: str | None = self._call(self._r.get, self._k(ns, key))
        return existing

    def _delete(self, ns: str, key: str) -> None:
        self._call(self._r.delete, self._k(ns, key))

    def _put(self, ns: str, key: str, value: str, ttl_s: int) -> None:
        self._call(self._r.set, self._k(ns, key), value, ex=ttl_s or self._retained(ns))  # 0: the namespace's

    def _values(self, ns: str) -> Iterator[str]:
        keys = list(self._call(self._r.scan_iter, match=self._k(ns, "*"), count=1000))
        for start in range(0, len(keys), 500):
            for value in self._call(self._r.mget, keys[start : start + 500]):
                if value is not None:
                    yield value

    def _incr(self, ns: str, key: str, field: str, amount: int) -> int:
        found = int(self._call(self._r.hincrby, self._k(ns, key), field, amount))
        self._expire(ns, key)
        return found

    def _counters(self, ns: str, key: str) -> dict[str, int]:
        raw = self._call(self._r.hgetall, self._k(ns, key))
        return {k: int(v) for k, v in raw.items()}

    def ping(self) -> None:
        self._call(self._r.ping)

    def close(self) -> None:
        self._r.close()

    # --- atomic writes --------------------------------------------------------------------
    def _set_progress(self, status: JobStatus) -> bool:
        return bool(self._call(self._set_progress_script, keys=[self._k(_STATUS, status.job_id)],
                               args=[status.model_dump_json(), self.retention_s]))

    def complete(self, record: JobRecord) -> bool:
        keys = [self._k(_RECORD, record.job_id), self._k(_STATUS, record.job_id)]
        if record.request.batch_id:
            keys.append(self._k(_BATCH, record.request.batch_id))
        args: list[Any] = [record.model_dump_json(), _succeeded_status(record).model_dump_json()]
        for field, amount in batch_usage(record).items():
            args += [field, amount]
        return bool(self._call(self._complete_script, keys=keys, args=[*args, self.retention_s]))

    def fail(self, letter: DeadLetter) -> bool:
        summary = DeadLetterSummary.of(letter)
        sets = [self._k(_DLQ, "_index"), self._by("state", summary.state), self._by("class", summary.failure_class),
                self._by("stage", summary.stage)]
        if summary.batch_id:
            sets.append(self._by("batch", summary.batch_id))
        keys = [self._k(_RECORD, letter.job_id), self._k(_STATUS, letter.job_id),
                self._k(_DLQ, letter.dead_letter_id), self._k(_DLQ, "_summary"), *sets]
        if summary.batch_id:
            keys.append(self._k(_BATCH, summary.batch_id))
        args = [letter.dead_letter_id, _pack(letter), summary.model_dump_json(), repr(letter.created_at.timestamp()),
                _failed_status(letter).model_dump_json(), len(sets), self.retention_s]
        return bool(self._call(self._fail_script, keys=keys, args=args))

    def reopen(self, dead_letter_id: str, stage: str) -> DeadLetterSummary | None:
        raw = self._call(self._r.hget, self._k(_DLQ, "_summary"), dead_letter_id)
        if raw is None:
            return None
        current = DeadLetterSummary.model_validate_json(raw)
        updated = _replayed(current)
        keys = [self._k(_DLQ, "_summary"), self._by("state", "open"), self._by("state", "replayed"),
                self._k(_STATUS, current.job_id)]
        if current.batch_id:
            keys.append(self._k(_BATCH, current.batch_id))
        queued = JobStatus(job_id=current.job_id, state="queued", stage=stage)
        args = [dead_letter_id, updated.model_dump_json(), repr(current.created_at.timestamp()),
                queued.model_dump_json(), self.retention_s]
        return updated if self._call(self._reopen_script, keys=keys, args=args) else None

    # --- dead letters ---------------------------------------------------------------------
    def _letter(self, dead_letter_id: str) -> tuple[str, DeadLetterSummary] | None:
        pipe = self._r.pipeline(transaction=True)
        pipe.get(self._k(_DLQ, dead_letter_id))
        pipe.hget(self._k(_DLQ, "_summary"), dead_letter_id)
        body, summary = self._call(pipe.execute)
        if body is None or summary is None:
            return None
        return body, DeadLetterSummary.model_validate_json(summary)

    def dead_letter_page(self, where: LetterFilter, *, limit: int = 50, offset: int = 0) -> list[DeadLetterSummary]:
        filters = [("state", where.state), ("batch", where.batch_id), ("class", where.failure_class),
                   ("stage", where.stage)]
        sets = [self._by(field, value) for field, value in filters if value] or [self._k(_DLQ, "_index")]
        top = f"({where.created_before.timestamp()!r}" if where.created_before else "+inf"
        ids = self._page_ids(sets, top, limit, offset)
        if not ids:
            return []
        summaries = self._call(self._r.hmget, self._k(_DLQ, "_summary"), ids)
        return [DeadLetterSummary.model_validate_json(s) for s in summaries if s is not None]

    def _page_ids(self, sets: list[str], top: str, limit: int, offset: int) -> list[str]:
        """Ids in every set, newest first: one range read, or a walk of the smallest set
        checking membership in the others, until the page is full."""
        walk, *others = sorted(sets, key=lambda key: int(self._call(self._r.zcard, key)))
        if not others:
            ids: list[str] = self._call(self._r.zrevrangebyscore, walk, top, "-inf", start=offset, num=limit)
            return ids
        found: list[str] = []
        position, skip = 0, offset
        while len(found) < limit:
            chunk = self._call(self._r.zrevrangebyscore, walk, top, "-inf", start=position, num=_SCAN_CHUNK)
            if not chunk:
                break
            position += len(chunk)
            scores = [self._call(self._r.zmscore, key, chunk) for key in others]
            for i, dead_letter_id in enumerate(chunk):
                if any(s[i] is None for s in scores):
                    continue
                if skip:
                    skip -= 1
                else:
                    found.append(dead_letter_id)
        return found[:limit]


class SqliteStateStore(StateStore):
    """Embedded-mode store: one SQLite file, safe for the in-process worker's threads.

    Dead letters have their own table: the filter columns are indexed with the creation time,
    so a page is an index range scan; ``summary`` is what a page returns, ``body`` the rest."""

    def __init__(self, path: Path, *, retention_s: int = 0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.retention_s = retention_s
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
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS dead_letters (id TEXT PRIMARY KEY, ts REAL NOT NULL, state TEXT NOT NULL,"
            " batch_id TEXT, failure_class TEXT NOT NULL, stage TEXT NOT NULL, summary TEXT NOT NULL,"
            " body TEXT NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS dead_letters_ts ON dead_letters (ts, id)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS fields (ns TEXT, key TEXT, field TEXT, value TEXT, ts REAL,"
            " PRIMARY KEY (ns, key, field))"
        )
        if "ts" not in {row[1] for row in self._db.execute("PRAGMA table_info(counters)")}:  # an older file
            self._db.execute("ALTER TABLE counters ADD COLUMN ts REAL")
            self._db.execute("UPDATE counters SET ts = ?", (time.time(),))  # their retention starts now
        for column in ("state", "batch_id", "failure_class", "stage"):
            self._db.execute(f"CREATE INDEX IF NOT EXISTS dead_letters_{column} ON dead_letters ({column}, ts, id)")
        self.expire()

    def expire(self, now: float | None = None) -> int:
        """Delete what is past its time (run at open: one process per file): records, statuses, batches,
        idempotency keys and usage after the retention, checkpoints and documents after theirs. Dead
        letters stay until resolved. Returns the rows deleted."""
        now = time.time() if now is None else now
        deleted = 0
        with self._tx() as db:
            deleted += db.execute("DELETE FROM kv WHERE ns IN (?, ?, ?) AND ts < ?",
                                  (_CHECKPOINT, _SENT, _BLOB, now - CHECKPOINT_TTL_S)).rowcount
            if not self.retention_s:
                return deleted
            cutoff = now - self.retention_s
            marks = ", ".join("?" * len(RETAINED))
            for table in ("kv", "counters", "fields"):  # a row untouched for the retention
                deleted += db.execute(f"DELETE FROM {table} WHERE ns IN ({marks}) AND ts < ?",
                                      (*RETAINED, cutoff)).rowcount
        return deleted

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction, holding the write lock from the start (no upgrade deadlock)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _get(self, ns: str, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE ns = ? AND key = ?", (ns, key)).fetchone()
        return row[0] if row else None

    def _exists(self, ns: str, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM kv WHERE ns = ? AND key = ?", (ns, key)).fetchone() is not None

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

    def _put(self, ns: str, key: str, value: str, ttl_s: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO kv VALUES (?, ?, ?, ?) ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,"
                " ts = excluded.ts",
                (ns, key, value, time.time()),
            )

    def _values(self, ns: str) -> Iterator[str]:
        with self._lock:
            rows = self._db.execute("SELECT value FROM kv WHERE ns = ?", (ns,)).fetchall()
        return (str(row[0]) for row in rows)

    @staticmethod
    def _add(db: sqlite3.Connection, ns: str, key: str, field: str, amount: int) -> int:
        row = db.execute(
            "INSERT INTO counters (ns, key, field, n, ts) VALUES (?, ?, ?, ?, ?) ON CONFLICT (ns, key, field)"
            " DO UPDATE SET n = n + ?, ts = excluded.ts RETURNING n",
            (ns, key, field, amount, time.time(), amount),
        ).fetchone()
        return int(row[0])

    def _incr(self, ns: str, key: str, field: str, amount: int) -> int:
        with self._lock:
            return self._add(self._db, ns, key, field, amount)

    def _hset(self, ns: str, key: str, mapping: dict[str, str]) -> None:
        with self._tx() as db:
            now = time.time()
            db.executemany("INSERT INTO fields (ns, key, field, value, ts) VALUES (?, ?, ?, ?, ?) ON CONFLICT"
                           " (ns, key, field) DO UPDATE SET value = excluded.value, ts = excluded.ts",
                           [(ns, key, f, v, now) for f, v in mapping.items()])

    def _hgetall(self, ns: str, key: str) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute("SELECT field, value FROM fields WHERE ns = ? AND key = ?", (ns, key)).fetchall()
        return {str(f): str(v) for f, v in rows}

    def _hscan(self, ns: str, key: str, page: int) -> Iterator[list[tuple[str, str]]]:
        after = ""
        while True:
            with self._lock:
                rows = self._db.execute("SELECT field, value FROM fields WHERE ns = ? AND key = ? AND field > ?"
                                        " ORDER BY field LIMIT ?", (ns, key, after, page)).fetchall()
            if not rows:
                return
            yield [(str(f), str(v)) for f, v in rows]
            after = str(rows[-1][0])

    def _hlen(self, ns: str, key: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM fields WHERE ns = ? AND key = ?", (ns, key)).fetchone()
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

    # --- atomic writes --------------------------------------------------------------------
    @staticmethod
    def _job_state(db: sqlite3.Connection, job_id: str) -> str | None:
        row = db.execute("SELECT json_extract(value, '$.state') FROM kv WHERE ns = ? AND key = ?",
                         (_STATUS, job_id)).fetchone()
        return row[0] if row else None

    @staticmethod
    def _write_status(db: sqlite3.Connection, status: JobStatus) -> None:
        db.execute(
            "INSERT INTO kv VALUES (?, ?, ?, ?) ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,"
            " ts = excluded.ts",
            (_STATUS, status.job_id, status.model_dump_json(), time.time()),
        )

    def _set_progress(self, status: JobStatus) -> bool:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO kv VALUES (?, ?, ?, ?) ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,"
                " ts = excluded.ts WHERE json_extract(kv.value, '$.state') NOT IN ('succeeded', 'failed')",
                (_STATUS, status.job_id, status.model_dump_json(), time.time()),
            )
        return cur.rowcount == 1

    def complete(self, record: JobRecord) -> bool:
        batch_id = record.request.batch_id
        with self._tx() as db:
            cur = db.execute("INSERT INTO kv VALUES (?, ?, ?, ?) ON CONFLICT (ns, key) DO NOTHING",
                             (_RECORD, record.job_id, record.model_dump_json(), time.time()))
            if cur.rowcount == 0:
                return False
            was_failed = self._job_state(db, record.job_id) == "failed"
            self._write_status(db, _succeeded_status(record))
            if batch_id:
                self._add(db, _BATCH, batch_id, "succeeded", 1)
                if was_failed:
                    self._add(db, _BATCH, batch_id, "failed", -1)
                for field, amount in batch_usage(record).items():
                    self._add(db, _BATCH, batch_id, field, amount)
        return True

    def fail(self, letter: DeadLetter) -> bool:
        summary = DeadLetterSummary.of(letter)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM kv WHERE ns = ? AND key = ?", (_RECORD, letter.job_id)).fetchone():
                return False
            was_failed = self._job_state(db, letter.job_id) == "failed"
            db.execute(
                "INSERT INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (letter.dead_letter_id, letter.created_at.timestamp(), summary.state, summary.batch_id,
                 summary.failure_class, summary.stage, summary.model_dump_json(), _pack(letter)),
            )
            self._write_status(db, _failed_status(letter))
            if summary.batch_id and not was_failed:
                self._add(db, _BATCH, summary.batch_id, "failed", 1)
        return True

    def reopen(self, dead_letter_id: str, stage: str) -> DeadLetterSummary | None:
        with self._tx() as db:
            row = db.execute("SELECT summary FROM dead_letters WHERE id = ? AND state = 'open'",
                             (dead_letter_id,)).fetchone()
            if row is None:
                return None
            updated = _replayed(DeadLetterSummary.model_validate_json(row[0]))
            db.execute("UPDATE dead_letters SET state = ?, summary = ? WHERE id = ?",
                       (updated.state, updated.model_dump_json(), dead_letter_id))
            if self._job_state(db, updated.job_id) == "failed":
                self._write_status(db, JobStatus(job_id=updated.job_id, state="queued", stage=stage))
                if updated.batch_id:
                    self._add(db, _BATCH, updated.batch_id, "failed", -1)
        return updated

    # --- dead letters ---------------------------------------------------------------------
    def _letter(self, dead_letter_id: str) -> tuple[str, DeadLetterSummary] | None:
        with self._lock:
            row = self._db.execute("SELECT body, summary FROM dead_letters WHERE id = ?",
                                   (dead_letter_id,)).fetchone()
        return (row[0], DeadLetterSummary.model_validate_json(row[1])) if row else None

    def dead_letter_page(self, where: LetterFilter, *, limit: int = 50, offset: int = 0) -> list[DeadLetterSummary]:
        filters = [("state", where.state), ("batch_id", where.batch_id), ("failure_class", where.failure_class),
                   ("stage", where.stage)]
        clauses = [f"{column} = ?" for column, value in filters if value]
        params: list[Any] = [value for _, value in filters if value]
        if where.created_before:
            clauses.append("ts < ?")
            params.append(where.created_before.timestamp())
        sql = "SELECT summary FROM dead_letters" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?",
                                    (*params, limit, offset)).fetchall()
        return [DeadLetterSummary.model_validate_json(r[0]) for r in rows]


def redis_client(url: str, *, retry_s: float, decode_responses: bool = False) -> Any:
    """A Redis client that rides out a Redis restart of ``retry_s`` seconds.

    Connection errors and timeouts are retried with capped exponential backoff (0.1 s doubling
    to 2 s) for about ``retry_s`` (``CONVEYOR_REDIS_RETRY_S``) instead of failing the stage at
    the first refused connection: a status, record or dead letter written while Redis restarts
    lands once it is back (``scripts/chaos.py --scenario redis-restart``).
    """
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    retries, waited = 0, 0.0
    while waited < retry_s:
        waited += min(2.0, 0.1 * 2**retries)
        retries += 1
    return redis.Redis.from_url(
        url,
        decode_responses=decode_responses,
        socket_timeout=10,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def open_state_store(settings: Settings) -> StateStore:
    """The store the settings name: Redis (``CONVEYOR_REDIS_URL``, else the Redis broker) or SQLite
    under the data directory (embedded mode). Light on purpose: a producer opens it without
    building any worker component."""
    url = settings.store_url
    if url:
        client = redis_client(url, retry_s=settings.redis_retry_s, decode_responses=True)
        return RedisStateStore(client, retention_s=settings.retention_s)
    return SqliteStateStore(Path(settings.data_dir) / "state.sqlite3", retention_s=settings.retention_s)
