"""The LLM-calling layer: providers, per-call retries, shared rate limit, cache, cost, tokens.

Plain Python with no Celery import; clients are built lazily so importing this package
connects to nothing. See retry.py for the retry budget formula, and pipeline/http_errors.py
for the HTTP status map shared with the embeddings client.
"""

from pipeline.generation.llm.base import (
    CallObserver,
    ChatMessage,
    ContextOverflow,
    LLMProvider,
    LLMRequest,
    LLMResponse,
    RateLimiter,
    ResponseStore,
    is_context_overflow,
)
from pipeline.generation.llm.cache import MemoryResponseCache, ResponseCache, cache_key
from pipeline.generation.llm.fallback import FallbackProvider
from pipeline.generation.llm.openai_compat import OpenAICompatProvider, chat_completions_url
from pipeline.generation.llm.pricing import DEFAULT_PRICES, Price, PriceTable, cost
from pipeline.generation.llm.ratelimit import LocalRateLimiter, SharedRateLimiter
from pipeline.generation.llm.retry import RetryPolicy, call_with_retry

__all__ = [
    "DEFAULT_PRICES",
    "CallObserver",
    "ChatMessage",
    "ContextOverflow",
    "FallbackProvider",
    "LLMProvider",
    "LLMRequest",
    "LLMResponse",
    "LocalRateLimiter",
    "MemoryResponseCache",
    "OpenAICompatProvider",
    "Price",
    "PriceTable",
    "RateLimiter",
    "ResponseCache",
    "ResponseStore",
    "RetryPolicy",
    "SharedRateLimiter",
    "cache_key",
    "call_with_retry",
    "chat_completions_url",
    "cost",
    "is_context_overflow",
]
