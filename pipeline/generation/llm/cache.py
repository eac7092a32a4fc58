"""Response cache: the same request to the same model costs one upstream call, once.

The key is sha256 over the canonical JSON of everything that shapes the answer:
model, messages, max_tokens, temperature, json_mode and the prompt template version
(a new template version therefore never serves an old answer). ``timeout_s`` and
``use_cache`` are left out: they change how we ask, not what is answered.

A cache is an optimisation, so a cache that is down or holds garbage is a miss (logged),
never a failed job. Truncated answers (``finish_reason == "length"``) are not stored:
the guard rejects them and a retry should reach the model again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import redis
from pydantic import ValidationError

from pipeline.generation.llm.base import LLMRequest, LLMResponse

log = logging.getLogger(__name__)

#: bump when the key recipe or the stored JSON shape changes.
KEY_SCHEMA = "v2"  # v2: LLMResponse.cost_usd may be null, unpriced_models replaced cost_known


def cache_key(request: LLMRequest, model: str) -> str:
    """Hex sha256 of the answer-shaping fields of ``request`` sent to ``model``."""
    payload = {
        "schema": KEY_SCHEMA,
        "model": model,
        "messages": [[m.role, m.content] for m in request.messages],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "json_mode": request.json_mode,
        "prompt_version": request.prompt_version,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def cacheable(response: LLMResponse) -> bool:
    return response.finish_reason != "length" and not response.cached


def as_hit(response: LLMResponse, latency_s: float) -> LLMResponse:
    """What a cache hit reports: no upstream call, nothing billed now (so nothing unpriced either)."""
    return response.model_copy(
        update={"cached": True, "calls": 0, "cost_usd": 0.0, "unpriced_models": (), "latency_s": latency_s}
    )


class ResponseCache:
    """Redis-backed cache shared by all workers; entries expire after ``ttl_s``."""

    def __init__(self, redis_client: redis.Redis, ttl_s: int = 7 * 24 * 3600, prefix: str = "conveyor:llm:") -> None:
        self._redis = redis_client
        self.ttl_s = ttl_s
        self.prefix = prefix

    def key(self, request: LLMRequest, model: str) -> str:
        return f"{self.prefix}{cache_key(request, model)}"

    def get(self, request: LLMRequest, model: str) -> LLMResponse | None:
        if not request.use_cache:
            return None
        started = time.perf_counter()
        try:
            raw = self._redis.get(self.key(request, model))
        except redis.RedisError as exc:
            log.warning("llm cache read failed, treating as a miss: %s", type(exc).__name__)
            return None
        if raw is None:
            return None
        try:
            response = LLMResponse.model_validate_json(raw)
        except ValidationError:
            log.warning("llm cache entry unreadable, treating as a miss")
            return None
        return as_hit(response, time.perf_counter() - started)

    def put(self, request: LLMRequest, model: str, response: LLMResponse) -> None:
        if not request.use_cache or not cacheable(response):
            return
        try:
            self._redis.set(self.key(request, model), response.model_dump_json(), ex=self.ttl_s)
        except redis.RedisError as exc:
            log.warning("llm cache write failed: %s", type(exc).__name__)


class MemoryResponseCache:
    """In-process LRU cache for embedded mode and tests; thread-safe."""

    def __init__(
        self,
        max_entries: int = 1024,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, LLMResponse]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, request: LLMRequest, model: str) -> LLMResponse | None:
        if not request.use_cache:
            return None
        started = time.perf_counter()
        key = cache_key(request, model)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            stored_at, response = entry
            if self.ttl_s is not None and self._clock() - stored_at > self.ttl_s:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        return as_hit(response, time.perf_counter() - started)

    def put(self, request: LLMRequest, model: str, response: LLMResponse) -> None:
        if not request.use_cache or not cacheable(response):
            return
        key = cache_key(request, model)
        with self._lock:
            self._entries[key] = (self._clock(), response)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
