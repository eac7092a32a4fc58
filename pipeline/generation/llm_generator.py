"""The generate stage with a real LLM behind an OpenAI-compatible endpoint.

Builds the versioned prompt, calls the provider (which owns per-call retries, the shared
rate limit, the response cache and fallbacks), parses the JSON into the intent's schema
and, if it does not validate, re-asks once with the validation errors. Tokens, calls and
cost add up across the first answer and the repair; the cost is None (``cost_usd: null``) when a
model billed has no known price, and such models are named in ``unpriced_models``.

Upper bound on upstream HTTP calls for one job:
  llm_max_attempts x (1 + len(llm_fallback_models)) x 2 (one repair) x (stage_max_retries + 1)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from pipeline.errors import ConveyorError, Requeue, validation_problems
from pipeline.generation.llm.base import ChatMessage, LLMProvider, LLMRequest, LLMResponse
from pipeline.generation.llm.pricing import add_cost, catalogue, merge_models
from pipeline.generation.llm.tokens import count_tokens
from pipeline.generation.prompts import build_messages, repair_message
from schemas import Completion, RetrievalResult, Usage, output_schema

PROVIDER = "openai-compatible"


def parse_structured(intent: Any, text: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The validated output, or None and the reasons it is not valid."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [f"not valid JSON: {exc.msg} at position {exc.pos}"]
    try:
        return output_schema(intent).model_validate(raw).model_dump(), []
    except ValidationError as exc:
        return None, validation_problems(exc, "output")


def _total_cost(responses: list[LLMResponse]) -> float | None:
    total: float | None = 0.0
    for response in responses:
        total = add_cost(total, response.cost_usd)
    return None if total is None else round(total, 8)


class LLMGenerator:
    def __init__(
        self,
        provider: LLMProvider,
        *,
        model: str,
        max_tokens: int,
        temperature: float,
        context_token_budget: int,
        prompt_versions: Sequence[str] = (),
    ) -> None:
        self.provider = provider
        self.prompt_versions = tuple(prompt_versions)
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.context_token_budget = context_token_budget

    def warm_up(self) -> None:
        count_tokens("warm up", self.model)  # loads the BPE ranks (about a second)
        catalogue()  # loads the genai-prices table (about half a second)

    def close(self) -> None:
        self.provider.close()

    def _ask(self, messages: list[ChatMessage], msg: RetrievalResult, version: str) -> LLMResponse:
        params = msg.request.params
        return self.provider.complete(
            LLMRequest(
                messages=messages,
                model=params.model or self.model,
                max_tokens=params.max_output_tokens or self.max_tokens,
                temperature=self.temperature if params.temperature is None else params.temperature,
                json_mode=True,
                prompt_version=version,
                use_cache=params.use_cache,
                tenant=msg.request.tenant,
            )
        )

    def generate(self, msg: RetrievalResult) -> Completion:
        model = msg.request.params.model or self.model
        messages, template = build_messages(
            msg.intent,
            msg.request.text,
            msg.chunks,
            budget_tokens=self.context_token_budget,
            count_tokens=lambda text: count_tokens(text, model),
            versions=self.prompt_versions,
        )
        responses = [self._ask(messages, msg, template.version)]
        structured, errors = (None, []) if responses[0].finish_reason == "length" else parse_structured(
            msg.intent, responses[0].text
        )
        repair_reasons: list[str] = []
        if structured is None and errors:
            repair_reasons = errors
            retry = [*messages, ChatMessage(role="assistant", content=responses[0].text), repair_message(errors)]
            try:
                responses.append(self._ask(retry, msg, template.version))
            except (ConveyorError, Requeue) as exc:  # the first answer was billed too: the error carries both
                first = responses[0]
                d = exc.details
                for key, value in (("calls", first.calls), ("prompt_tokens", first.prompt_tokens),
                                   ("completion_tokens", first.completion_tokens)):
                    previous = d.get(key)
                    d[key] = (previous if isinstance(previous, int | float) else 0) + value
                previous_cost = d.get("cost_usd", 0.0)
                d["cost_usd"] = add_cost(
                    float(previous_cost) if isinstance(previous_cost, int | float) else None, first.cost_usd
                )
                d["unpriced_models"] = merge_models(first.unpriced_models, d.get("unpriced_models"))
                raise
            if responses[-1].finish_reason != "length":
                structured, _ = parse_structured(msg.intent, responses[-1].text)
        last = responses[-1]
        return Completion(
            text=last.text,
            structured=structured,
            provider=PROVIDER,
            model=last.model,
            prompt_version=template.version,
            finish_reason=last.finish_reason,
            usage=Usage(
                prompt_tokens=sum(r.prompt_tokens for r in responses),
                completion_tokens=sum(r.completion_tokens for r in responses),
            ),
            cost_usd=_total_cost(responses),
            unpriced_models=merge_models(*(r.unpriced_models for r in responses)),
            llm_calls=sum(r.calls for r in responses),
            cached=all(r.cached for r in responses),
            repair_reasons=repair_reasons,
        )
