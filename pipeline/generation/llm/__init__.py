"""The LLM-calling layer: providers, per-call retries, shared rate limit, cache, cost, tokens.

Plain Python with no Celery import; clients are built lazily so importing this package
connects to nothing. See retry.py for the retry budget formula.
"""

from pipeline.generation.llm.base import (
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
from pipeline.generation.llm.openai_compat import OpenAICompatProvider, chat_completions_url, parse_retry_after
from pipeline.generation.llm.pricing import DEFAULT_PRICES, Price, PriceTable, cost
from pipeline.generation.llm.ratelimit import LocalRateLimiter, SharedRateLimiter
from pipeline.generation.llm.retry import RetryBudget, RetryPolicy, call_with_retry, max_upstream_calls

__all__ = [
    "DEFAULT_PRICES",
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
    "RetryBudget",
    "RetryPolicy",
    "SharedRateLimiter",
    "cache_key",
    "call_with_retry",
    "chat_completions_url",
    "cost",
    "is_context_overflow",
    "max_upstream_calls",
    "parse_retry_after",
]
