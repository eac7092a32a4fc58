"""Requests-per-minute and tokens-per-minute limits shared by every worker.

Algorithm: GCRA (the "virtual scheduling" form of a token bucket), one budget per
dimension, both checked and committed in ONE Lua script so a call never spends its
request budget while being refused on tokens, and no two workers can race.

Why GCRA rather than a sliding-window log or fixed windows:

* O(1) state: each budget is one number, the theoretical arrival time (TAT), instead
  of a sorted set holding every request (and its token weight) of the last minute;
* the exact wait is computed, so a caller sleeps precisely that long instead of polling;
* it is a *reservation*: a granted caller is given its own future send time and the TAT
  moves past it, so N waiting workers are spread one emission interval apart rather
  than waking together and stampeding (no thundering herd, no retry loop on Redis);
* fixed windows allow 2x bursts at window edges, which a provider measuring a sliding
  minute answers with 429s.

The cost: a reservation cannot be handed back, so a caller that dies while sleeping
wastes one slot. ``burst_s`` (default 0) is how many seconds of budget may be spent at
once; 0 paces calls evenly, which is what a provider with a sliding-minute limit wants.
A single call larger than the burst is let through once the budget is idle, then pays
for its full weight, so the long-run rate stays exact. Time comes from Redis ``TIME``
inside the script so worker clocks never matter.

A caller whose slot is further away than ``max_wait_s`` gets ``Requeue(delay_s=that wait)``,
not an error: it is backpressure, so no retry layer sleeps on it and no fallback takes it
for a model that is down; the worker puts the job back on its queue with that countdown.

The provider counts arrivals on its own clock, so network jitter can bunch two paced
calls together; run the limiter a few percent under the provider's limit (the bench
uses 0.97).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from pipeline.errors import InternalError, InvalidInput, ProviderUnavailable, Requeue

_LUA = """
local now = tonumber(ARGV[5])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local r_inc = tonumber(ARGV[1])
local t_inc = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local r_tat = tonumber(redis.call('GET', KEYS[1])) or now
local t_tat = tonumber(redis.call('GET', KEYS[2])) or now
local send_at = now
if r_inc > 0 then
  send_at = math.max(send_at, math.max(r_tat, now) + r_inc - math.max(burst, r_inc))
end
if t_inc > 0 then
  send_at = math.max(send_at, math.max(t_tat, now) + t_inc - math.max(burst, t_inc))
end
local delay = send_at - now
if max_wait >= 0 and delay > max_wait then
  return {0, math.ceil(delay)}
end
if r_inc > 0 then
  local tat = math.max(r_tat, send_at) + r_inc
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
if t_inc > 0 then
  local tat = math.max(t_tat, send_at) + t_inc
  redis.call('SET', KEYS[2], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return {1, math.ceil(delay)}
"""

_US = 1_000_000


def _check(rpm: float | None, tpm: float | None, burst_s: float) -> None:
    if not rpm and not tpm:
        raise InvalidInput("a rate limiter needs rpm or tpm (or both)")
    if (rpm is not None and rpm < 0) or (tpm is not None and tpm < 0) or burst_s < 0:
        raise InvalidInput("rpm, tpm and burst_s must be >= 0")


def _wait_limit(block: bool, max_wait_s: float | None, default: float) -> float:
    if not block:
        return 0.0
    return default if max_wait_s is None else max_wait_s


def gcra_plan(
    now: float,
    tat_r: float | None,
    tat_t: float | None,
    inc_r: float,
    inc_t: float,
    burst: float,
    max_wait: float,
) -> tuple[bool, float, float | None, float | None]:
    """The script's arithmetic in Python (any time unit): (granted, delay, new_tat_r, new_tat_t).

    ``inc`` is the budget one call spends in time units (60 s / rpm, tokens x 60 s / tpm);
    ``max_wait < 0`` means unbounded. On refusal the TATs are returned unchanged.
    """
    tat_r = now if tat_r is None else tat_r
    tat_t = now if tat_t is None else tat_t
    send_at = now
    if inc_r > 0:
        send_at = max(send_at, max(tat_r, now) + inc_r - max(burst, inc_r))
    if inc_t > 0:
        send_at = max(send_at, max(tat_t, now) + inc_t - max(burst, inc_t))
    delay = send_at - now
    if 0 <= max_wait < delay:
        return False, delay, tat_r, tat_t
    new_r = max(tat_r, send_at) + inc_r if inc_r > 0 else tat_r
    new_t = max(tat_t, send_at) + inc_t if inc_t > 0 else tat_t
    return True, delay, new_r, new_t


class SharedRateLimiter:
    """rpm + tpm budget in Redis, shared by every process that uses the same ``key``.

    ``clock`` is for tests only: when given, its seconds replace Redis ``TIME``.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        key: str,
        rpm: float | None,
        tpm: float | None = None,
        *,
        burst_s: float = 0.0,
        max_wait_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] | None = None,
    ) -> None:
        _check(rpm, tpm, burst_s)
        self.key = key
        self.rpm = rpm
        self.tpm = tpm
        self.burst_s = burst_s
        self.max_wait_s = max_wait_s
        self._redis = redis_client
        self._keys = [f"{{{key}}}:rpm", f"{{{key}}}:tpm"]
        self._script: Any = redis_client.register_script(_LUA)
        self._sleep = sleep
        self._clock = clock

    def acquire(self, tokens: int = 0, *, block: bool = True, max_wait_s: float | None = None) -> float:
        """Reserve one call of ``tokens``; sleep until it may go; return the seconds slept.

        Raises Requeue(delay_s=needed wait) when that wait exceeds ``max_wait_s`` (or is
        non-zero with ``block=False``); nothing is reserved then.
        """
        limit = _wait_limit(block, max_wait_s, self.max_wait_s)
        inc_r = 60 * _US / self.rpm if self.rpm else 0
        inc_t = max(0, tokens) * 60 * _US / self.tpm if self.tpm else 0
        args = [
            repr(float(inc_r)),
            repr(float(inc_t)),
            repr(float(self.burst_s * _US)),
            -1 if math.isinf(limit) else int(limit * _US),
            int(self._clock() * _US) if self._clock else -1,
        ]
        try:
            granted, delay_us = self._script(keys=self._keys, args=args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ProviderUnavailable(f"rate limiter store unreachable ({type(exc).__name__})") from exc
        except redis.RedisError as exc:
            raise InternalError(f"rate limiter script failed ({type(exc).__name__})") from exc
        delay = int(delay_us) / _US
        if not int(granted):
            raise Requeue(
                delay_s=delay, reason=f"rate limit {self.key!r}: no slot for {tokens} tokens within {limit:.3f}s"
            )
        if delay > 0:
            self._sleep(delay)
        return delay

    def reset(self) -> None:
        """Forget all reservations (tests, benches, a changed limit)."""
        self._redis.delete(*self._keys)


class LocalRateLimiter:
    """The same GCRA budget for the single-process embedded mode: a lock, no Redis."""

    def __init__(
        self,
        rpm: float | None,
        tpm: float | None = None,
        *,
        burst_s: float = 0.0,
        max_wait_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check(rpm, tpm, burst_s)
        self.rpm = rpm
        self.tpm = tpm
        self.burst_s = burst_s
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._tat_r: float | None = None
        self._tat_t: float | None = None

    def acquire(self, tokens: int = 0, *, block: bool = True, max_wait_s: float | None = None) -> float:
        """As ``SharedRateLimiter.acquire``: sleep for the slot, or raise Requeue beyond ``max_wait_s``."""
        limit = _wait_limit(block, max_wait_s, self.max_wait_s)
        inc_r = 60.0 / self.rpm if self.rpm else 0.0
        inc_t = max(0, tokens) * 60.0 / self.tpm if self.tpm else 0.0
        with self._lock:
            granted, delay, new_r, new_t = gcra_plan(
                self._clock(),
                self._tat_r,
                self._tat_t,
                inc_r,
                inc_t,
                self.burst_s,
                -1.0 if math.isinf(limit) else limit,
            )
            if granted:
                self._tat_r, self._tat_t = new_r, new_t
        if not granted:
            raise Requeue(delay_s=delay, reason=f"rate limit: no slot for {tokens} tokens within {limit:.3f}s")
        if delay > 0:
            self._sleep(delay)
        return delay

    def reset(self) -> None:
        with self._lock:
            self._tat_r = self._tat_t = None
