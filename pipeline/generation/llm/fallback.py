"""Try the next (provider, model) when one cannot answer.

A model is abandoned when its per-call retries are spent on a RetryableError (it is
down, rate limited or timing out) or when the prompt overflows its context window (a
bigger model may take it). Any other rejection - a bad request, an auth error, by
default a refusal - would fail the same way on the next model, or is a content decision
that should not be shopped around, so it is raised at once. ``Requeue`` (our own rate
limiter has no slot yet) is not a ConveyorError and passes straight through: the next
model would wait behind the same limiter, and the model is not down.

The response (or the final error's ``details``) carries the totals of the whole chain:
upstream ``calls``, tokens and ``cost_usd`` (None if a model billed has no known price; those are
named in ``unpriced_models``), plus ``models_tried`` in order; the answering model is
``response.model``. ``request.model`` is ignored: the chain decides.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.errors import ConveyorError, InvalidInput, ProviderRejected, Requeue, RetryableError
from pipeline.generation.llm.base import LLMProvider, LLMRequest, LLMResponse, is_context_overflow
from pipeline.generation.llm.pricing import add_cost, merge_models

log = logging.getLogger(__name__)


@dataclass
class _Totals:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    unpriced_models: list[str] = field(default_factory=list)

    def add(self, calls: object, prompt: object, completion: object, cost: object, unpriced: object = ()) -> None:
        """Add one link's bill; a cost of None (a model with no known price) makes the total unknown."""
        self.calls += calls if isinstance(calls, int) else 0
        self.prompt_tokens += prompt if isinstance(prompt, int) else 0
        self.completion_tokens += completion if isinstance(completion, int) else 0
        self.unpriced_models = merge_models(self.unpriced_models, unpriced)
        if cost is None or unpriced:
            self.cost_usd = None
        elif isinstance(cost, int | float) and not isinstance(cost, bool):
            self.cost_usd = add_cost(self.cost_usd, float(cost))

    def carry(self, details: dict[str, object], tried: list[str]) -> None:
        """Add a link that gave up (an error, or a re-queue signal) and put the chain's totals so far on
        its details, which is what the job's record reads for a failed or re-queued attempt."""
        self.add(details.get("calls"), details.get("prompt_tokens"), details.get("completion_tokens"),
                 details.get("cost_usd", 0.0), details.get("unpriced_models", ()))
        details.update(calls=self.calls, prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                       cost_usd=self.cost_usd, unpriced_models=list(self.unpriced_models), models_tried=list(tried))


class FallbackProvider:
    """An LLMProvider over an ordered chain of ``(provider, model)`` pairs."""

    def __init__(
        self,
        chain: Sequence[tuple[LLMProvider, str]],
        *,
        fallback_on_refusal: bool = False,
        name: str = "fallback",
    ) -> None:
        if not chain:
            raise InvalidInput("FallbackProvider needs at least one (provider, model)")
        self.chain = list(chain)
        self.fallback_on_refusal = fallback_on_refusal
        self.name = name

    def _moves_on(self, exc: ConveyorError) -> bool:
        if isinstance(exc, RetryableError):
            return True
        if is_context_overflow(exc):
            return True
        return self.fallback_on_refusal and isinstance(exc, ProviderRejected) and "refusal" in exc.details

    def complete(self, request: LLMRequest) -> LLMResponse:
        totals = _Totals()
        tried: list[str] = []
        last: ConveyorError | None = None
        for index, (provider, model) in enumerate(self.chain):
            tried.append(model)
            try:
                response = provider.complete(request.model_copy(update={"model": model}))
            except Requeue as signal:  # not yet: back on the queue, with what the chain has billed so far
                totals.carry(signal.details, tried)
                raise
            except ConveyorError as exc:
                totals.carry(exc.details, tried)
                if not self._moves_on(exc):
                    raise
                last = exc
                if index + 1 < len(self.chain):
                    log.warning(
                        "model %s gave up (%s); falling back to %s",
                        model,
                        exc.failure_class,
                        self.chain[index + 1][1],
                    )
                continue
            totals.add(response.calls, response.prompt_tokens, response.completion_tokens, response.cost_usd,
                       response.unpriced_models)
            return response.model_copy(
                update={
                    "calls": totals.calls,
                    "prompt_tokens": totals.prompt_tokens,
                    "completion_tokens": totals.completion_tokens,
                    "cost_usd": totals.cost_usd,
                    "unpriced_models": tuple(totals.unpriced_models),
                    "models_tried": tuple(tried),
                }
            )
        assert last is not None
        raise last

    def close(self) -> None:
        seen: set[int] = set()
        for provider, _ in self.chain:
            if id(provider) not in seen:
                seen.add(id(provider))
                provider.close()
