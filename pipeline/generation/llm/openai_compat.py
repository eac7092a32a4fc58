"""Any OpenAI-compatible ``/v1/chat/completions`` endpoint over plain httpx.

No SDK: SDKs retry on their own, and one owner per retry layer is the rule (see
retry.py). The httpx transport is built with ``retries=0`` and one Client per provider
object, lazily on first use so nothing connects at import or before a worker forks.

Every httpx / JSON failure leaves this module as a ConveyorError. Status codes and
transport exceptions go through the shared table in pipeline/http_errors.py (the same one
the embeddings client uses: 429 -> RateLimited with Retry-After, 408 -> StageTimeout, ...);
on top of it this client decides only what is specific to chat completions:

    4xx rejection naming the context   -> ContextOverflow (a ProviderRejected; fallback may move on)
    200 with bad JSON / no choices     -> ProviderUnavailable (transient: a proxy hiccup)
    refusal / content_filter           -> ProviderRejected(details["refusal"])
    finish_reason "length"             -> returned, for the guard stage to judge

``Requeue`` from the rate limiter ("no slot within the allowed wait") is not an error: it
passes through unchanged, untouched by the retry layer and by the InternalError net.

An optional ``CallObserver`` hears of every upstream call (its status, tokens and cost) and every
rate-limit wait: the worker's metrics, kept out of this layer.

The API key is a SecretStr, sent only in the Authorization header, scrubbed from any
upstream text we quote, and never logged.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from pipeline.errors import ConveyorError, InternalError, ProviderRejected, ProviderUnavailable, Requeue
from pipeline.generation.llm.base import (
    CallObserver,
    ContextOverflow,
    LLMRequest,
    LLMResponse,
    RateLimiter,
    ResponseStore,
)
from pipeline.generation.llm.pricing import PriceTable, add_cost
from pipeline.generation.llm.retry import RetryPolicy, call_with_retry
from pipeline.http_errors import error_for_response, error_info, quote, translate_transport_errors

log = logging.getLogger(__name__)

_OVERFLOW_CODES = {"context_length_exceeded", "exceed_context_size_error", "string_above_max_length"}
_OVERFLOW_TEXT = re.compile(
    r"maximum context length|context length|context window|context size|too many tokens"
    r"|prompt is too long|input is too long|reduce the length of the messages",
    re.IGNORECASE,
)


def chat_completions_url(base_url: str) -> str:
    """``{base}/v1/chat/completions`` whether or not ``base_url`` already ends in /v1."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        return f"{base}/chat/completions"
    return f"{base}/v1/chat/completions"


@dataclass(frozen=True)
class _Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool
    reported_model: str


@dataclass
class _Bill:
    """What a call cost so far, including failed attempts that were billed (refusals).

    ``cost_usd`` is None once any billed call was for a model with no known price (named in
    ``unpriced_models``): the total is then unknown, not the sum of the priced part.
    """

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    unpriced_models: list[str] = field(default_factory=list)

    def as_details(self) -> dict[str, object]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "unpriced_models": list(self.unpriced_models),
        }


class OpenAICompatProvider:
    """One upstream, its default model, and the per-call policy around it."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | str | None = None,
        default_model: str = "gpt-4o-mini",
        timeout_s: float = 60.0,
        max_attempts: int = 3,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        rate_limiter: RateLimiter | None = None,
        cache: ResponseStore | None = None,
        price_table: PriceTable | None = None,
        client: httpx.Client | None = None,
        *,
        retry_after_cap_s: float = 30.0,
        rate_limit_max_wait_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        name: str = "openai_compat",
        observer: CallObserver | None = None,
    ) -> None:
        self.base_url = base_url
        self.url = chat_completions_url(base_url)
        self._api_key = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self.default_model = default_model
        self.timeout_s = timeout_s
        self.retry_policy = RetryPolicy(max_attempts, backoff_base_s, backoff_max_s, retry_after_cap_s)
        self.rate_limiter = rate_limiter
        self.rate_limit_max_wait_s = rate_limit_max_wait_s
        self.cache = cache
        self.price_table = price_table or PriceTable(api_url=base_url)
        self.name = name
        self.observer = observer
        self._client = client
        self._owns_client = client is None
        self._client_lock = threading.Lock()
        self._sleep = sleep
        self._rng = rng

    def __repr__(self) -> str:
        return f"OpenAICompatProvider(base_url={self.base_url!r}, default_model={self.default_model!r})"

    def __enter__(self) -> OpenAICompatProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None and self._owns_client:
                self._client.close()
                self._client = None

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    transport=httpx.HTTPTransport(retries=0),
                    timeout=httpx.Timeout(self.timeout_s),
                    follow_redirects=False,
                    headers={"User-Agent": "conveyor-llm"},
                )
            return self._client

    def complete(self, request: LLMRequest) -> LLMResponse:
        started = time.perf_counter()
        model = request.model or self.default_model
        if self.cache is not None:
            hit = self.cache.get(request, model)
            if hit is not None:
                self._observe(request, model, "cache_hit")
                return hit.model_copy(update={"provider": self.name, "models_tried": (model,)})
        bill = _Bill()
        tokens = self._estimate_tokens(request, model) if self.rate_limiter is not None else 0

        def attempt() -> _Completion:
            if self.rate_limiter is not None:
                waited = self.rate_limiter.acquire(tokens, max_wait_s=self.rate_limit_max_wait_s)
                self._notify(lambda o: o.ratelimit_wait(float(waited or 0.0)))
            bill.calls += 1
            try:
                completion = self._send_once(request, model)
            except ConveyorError as exc:
                self._observe(request, model, exc.failure_class, *self._charge(bill, model, exc.details))
                raise
            except Exception:
                self._observe(request, model, "internal_error")
                raise
            billed = self._charge(
                bill,
                completion.reported_model,
                {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens},
            )
            self._observe(request, model, "ok", *billed)
            return completion

        try:
            completion = call_with_retry(
                attempt, self.retry_policy, sleep=self._sleep, rng=self._rng, describe=f"{self.name}:{model}"
            )
        except Requeue as signal:  # "not yet", not a failure: the worker re-queues the job
            if bill.calls:  # earlier attempts of this call were made (and may be billed)
                signal.details.update(bill.as_details(), model=model, provider=self.name)
            raise
        except ConveyorError as exc:
            exc.details.update(bill.as_details(), model=model, provider=self.name)
            raise
        except Exception as exc:
            raise InternalError(
                f"{self.name}: untranslated {type(exc).__name__} calling {model}",
                details={**bill.as_details(), "model": model, "provider": self.name},
            ) from exc
        response = LLMResponse(
            text=completion.text,
            model=model,
            finish_reason=completion.finish_reason,
            prompt_tokens=bill.prompt_tokens,
            completion_tokens=bill.completion_tokens,
            latency_s=time.perf_counter() - started,
            calls=bill.calls,
            cost_usd=bill.cost_usd,
            unpriced_models=tuple(bill.unpriced_models),
            cached=False,
            provider=self.name,
            usage_estimated=completion.usage_estimated,
            models_tried=(model,),
        )
        if self.cache is not None:
            self.cache.put(request, model, response)
        return response

    def _charge(self, bill: _Bill, model: str, details: Mapping[str, object]) -> tuple[int, int, float | None]:
        """Add one call's billed usage to ``bill``; returns that call's (prompt, completion, usd).

        The usd is None for a model with no known price (the price table logs it once).
        """
        p, c = details.get("prompt_tokens"), details.get("completion_tokens")
        if not isinstance(p, int) or not isinstance(c, int):
            return 0, 0, 0.0
        quote = self.price_table.quote(model, p, c)
        bill.prompt_tokens += p
        bill.completion_tokens += c
        bill.cost_usd = add_cost(bill.cost_usd, quote.usd)
        if not quote.known and model not in bill.unpriced_models:
            bill.unpriced_models.append(model)
        return p, c, quote.usd

    def _observe(self, request: LLMRequest, model: str, status: str, prompt_tokens: int = 0,
                 completion_tokens: int = 0, cost_usd: float | None = 0.0) -> None:
        self._notify(lambda o: o.llm_call(model=model, status=status, tenant=request.tenant,
                                          prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                          cost_usd=cost_usd))

    def _notify(self, tell: Callable[[CallObserver], None]) -> None:
        if self.observer is None:
            return
        try:
            tell(self.observer)
        except Exception:  # metrics must never fail a call
            log.warning("llm call observer failed", exc_info=True)

    def _estimate_tokens(self, request: LLMRequest, model: str) -> int:
        """Budget for the rate limiter: prompt tokens plus the completion the request allows."""
        try:
            from pipeline.generation.llm.tokens import count_messages

            prompt = count_messages(request.messages, model)
        except Exception:  # an estimate must never fail the call: fall back to ~4 characters a token
            log.warning("token count failed for %s; using a character estimate", model, exc_info=True)
            prompt = sum(len(m.content) for m in request.messages) // 4 + 3 * len(request.messages) + 3
        return prompt + (request.max_tokens or 0)

    def _secret(self) -> str | None:
        return self._api_key.get_secret_value() if self._api_key else None

    def _redact(self, text: str) -> str:
        return quote(text, self._secret())

    def _payload(self, request: LLMRequest, model: str) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
        }
        if request.max_tokens is not None:
            payload["max_tokens"] = request.max_tokens
        if request.json_mode:
            payload["response_format"] = {"type": "json_object"}
        return payload

    def _send_once(self, request: LLMRequest, model: str) -> _Completion:
        timeout_s = request.timeout_s or self.timeout_s
        headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}"} if self._api_key else {}
        where = f"{self.name}:{model}"
        with translate_transport_errors(where, timeout_s, self._secret()):
            response = self._http().post(
                self.url,
                json=self._payload(request, model),
                headers=headers,
                timeout=httpx.Timeout(timeout_s),
            )
        log.debug("%s -> HTTP %d", where, response.status_code)
        error = self._http_error(response, where)
        if error is not None:
            raise error
        return self._parse(response, request, model, where)

    def _http_error(self, response: httpx.Response, where: str) -> ConveyorError | None:
        """The shared status map, refined: a rejection that names the context window overflows."""
        error = error_for_response(response, where, self._secret())
        if not isinstance(error, ProviderRejected):
            return error
        code, message = error_info(response)
        if code in _OVERFLOW_CODES or _OVERFLOW_TEXT.search(message):
            return ContextOverflow(f"{where}: context window exceeded: {self._redact(message)}", details=error.details)
        return error

    def _parse(self, response: httpx.Response, request: LLMRequest, model: str, where: str) -> _Completion:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProviderUnavailable(f"{where}: malformed JSON body", details={"malformed": True}) from exc
        choices = body.get("choices") if isinstance(body, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(choice, dict) or not isinstance(message, dict):
            raise ProviderUnavailable(f"{where}: response without choices[0].message", details={"malformed": True})
        finish = str(choice.get("finish_reason") or "stop")
        content = message.get("content")
        usage = body.get("usage")
        reported_p = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        reported_c = usage.get("completion_tokens") if isinstance(usage, dict) else None
        estimated = not (isinstance(reported_p, int) and isinstance(reported_c, int))
        if isinstance(reported_p, int) and isinstance(reported_c, int):
            prompt_tokens, completion_tokens = reported_p, reported_c
        else:
            from pipeline.generation.llm.tokens import count_messages, count_tokens

            prompt_tokens = count_messages(request.messages, model)
            completion_tokens = count_tokens(content if isinstance(content, str) else "", model)
        reported = str(body.get("model") or model)
        refusal = message.get("refusal")
        if refusal or finish == "content_filter":
            raise ProviderRejected(
                f"{where}: model refused ({'refusal' if refusal else 'content_filter'})",
                details={
                    "refusal": self._redact(str(refusal)) if refusal else "content_filter",
                    "finish_reason": finish,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                },
            )
        if not isinstance(content, str):
            raise ProviderUnavailable(f"{where}: message has no text content", details={"malformed": True})
        return _Completion(content, finish, prompt_tokens, completion_tokens, estimated, reported)
