"""The per-call retry layer: the only retry loop under a stage, owned by tenacity.

Layers and their product (tested against the fake server's call count in
tests/unit/test_llm_provider.py and test_llm_fallback.py):

    upstream calls per job <= per_call_attempts x stage_attempts x models

* ``per_call_attempts`` = ``RetryPolicy.max_attempts`` (this module; httpx itself is
  built with ``retries=0`` so nothing retries underneath);
* ``stage_attempts`` = Celery ``max_retries + 1`` of the generate task;
* ``models`` = entries in the FallbackProvider chain (1 without fallback).

Only ``RetryableError`` is retried; ``Requeue`` (the rate limiter's "not yet") is not an
error and goes up at once, without a sleep. The wait before attempt n+1 is "full jitter"
(uniform in [0, min(backoff_max_s, backoff_base_s * 2**(n-1))]) so that workers that
failed together do not retry together. When the upstream said ``Retry-After`` the wait
is ``max(retry_after, jittered backoff)``, never more than ``retry_after_cap_s``: a
server that asks for a longer pause than the cap gets no retry from this layer - the
error goes up with its ``retry_after`` so the stage can be re-queued with that countdown
instead of pinning a worker in ``sleep``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from pipeline.backoff import backoff_delay
from pipeline.errors import InvalidInput, RetryableError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    retry_after_cap_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidInput("max_attempts must be >= 1")
        if min(self.backoff_base_s, self.backoff_max_s, self.retry_after_cap_s) < 0:
            raise InvalidInput("backoff and cap must be >= 0")

    def wait_s(self, attempt: int, retry_after: float | None, rng: Callable[[], float] = random.random) -> float:
        """Seconds to sleep after failed attempt ``attempt``; honours Retry-After, capped."""
        return backoff_delay(
            attempt - 1,
            base_s=self.backoff_base_s,
            cap_s=self.backoff_max_s,
            retry_after_s=retry_after,
            wait_cap_s=self.retry_after_cap_s,
            rand=rng,
        )

    def gives_up_on(self, exc: BaseException) -> bool:
        """True when ``exc`` asks for a pause longer than this layer may sleep."""
        retry_after = getattr(exc, "retry_after", None)
        return retry_after is not None and retry_after > self.retry_after_cap_s


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
    describe: str = "llm call",
) -> T:
    """Run ``fn`` until it succeeds, raises a non-retryable error, or the policy says stop.

    The last exception is re-raised unchanged (no tenacity.RetryError leaks out).
    """

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return policy.wait_s(state.attempt_number, getattr(exc, "retry_after", None), rng)

    def stop(state: tenacity.RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        return state.attempt_number >= policy.max_attempts or (exc is not None and policy.gives_up_on(exc))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s failed (attempt %d/%d, %s), retrying in %.2fs",
            describe,
            state.attempt_number,
            policy.max_attempts,
            getattr(exc, "failure_class", type(exc).__name__),
            state.upcoming_sleep,
        )

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(RetryableError),
        stop=stop,
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)
