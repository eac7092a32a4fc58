"""The generate stage with a real LLM behind an OpenAI-compatible endpoint.

Builds the versioned prompt, calls the provider (which owns per-call retries, the shared
rate limit, the response cache and fallbacks), parses the JSON into the intent's schema
and, if it does not validate, re-asks once with the validation errors. Tokens, calls and
cost add up across the first answer and the repair; the cost is None (``cost_usd: null``) when a
model billed has no known price, and such models are named in ``unpriced_models``. A summary of
a document longer than one prompt is asked part by part, then combined (``_map_reduce``).

Upper bound on upstream HTTP calls for one job (P = parts of a long summary + 1, else 1):
  llm_max_attempts x (1 + len(llm_fallback_models)) x 2 (one repair) x P x (stage_max_retries + 1)
(a re-run attempt finds earlier parts in the response cache when it is on)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from pipeline.errors import ConveyorError, Requeue, validation_problems
from pipeline.generation.llm.base import ChatMessage, LLMProvider, LLMRequest, LLMResponse
from pipeline.generation.llm.pricing import add_cost, catalogue, merge_models
from pipeline.generation.llm.tokens import count_tokens
from pipeline.generation.prompts import (
    COMBINE_VERSION,
    build_messages,
    combine_messages,
    repair_message,
    split_parts,
    template_for,
)
from schemas import Completion, ContextChunk, Intent, RetrievalResult, Usage, output_schema

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

    def _complete(
        self, messages: list[ChatMessage], msg: RetrievalResult, version: str, billed: list[LLMResponse]
    ) -> tuple[dict[str, Any] | None, list[str]]:
        """One structured answer: the call, and one repair re-ask if it does not validate. Every response
        is appended to ``billed``; an error raised here carries all of ``billed`` (earlier calls of this job
        included) in its details, so a failed or re-queued attempt still counts what it cost."""
        try:
            billed.append(self._ask(messages, msg, version))
            first = billed[-1]
            structured, errors = (None, []) if first.finish_reason == "length" else parse_structured(
                msg.intent, first.text
            )
            if structured is not None or not errors:
                return structured, []
            retry = [*messages, ChatMessage(role="assistant", content=first.text), repair_message(errors)]
            billed.append(self._ask(retry, msg, version))
        except (ConveyorError, Requeue) as exc:
            _carry_billing(exc, billed)
            raise
        if billed[-1].finish_reason == "length":
            return None, errors
        return parse_structured(msg.intent, billed[-1].text)[0], errors

    def generate(self, msg: RetrievalResult) -> Completion:
        model = msg.request.params.model or self.model

        def count(text: str) -> int:
            return count_tokens(text, model)

        parts = split_parts(msg.chunks, self.context_token_budget, count)
        if msg.intent == Intent.summarize and len(parts) > 1:
            return self._map_reduce(msg, parts, count)
        messages, template = build_messages(
            msg.intent, msg.request.text, msg.chunks, budget_tokens=self.context_token_budget,
            count_tokens=count, versions=self.prompt_versions,
        )
        billed: list[LLMResponse] = []
        structured, repair_reasons = self._complete(messages, msg, template.version, billed)
        read = [c.chunk_id for c in parts[0]] if parts else []
        return self._completion(billed, structured, template.version, repair_reasons, read)

    def _map_reduce(
        self, msg: RetrievalResult, parts: list[list[ContextChunk]], count: Callable[[str], int]
    ) -> Completion:
        """A document longer than one prompt: one call per part (in this task, one after another, so no
        worker waits on subtasks; a re-queued job finds the finished parts in the response cache), then
        one call that combines the parts' summaries. A part whose answer does not validate is left out
        of the combination, and the record's reasons say so."""
        billed: list[LLMResponse] = []
        partials: list[dict[str, Any]] = []
        reasons: list[str] = []
        template = template_for(msg.intent, self.prompt_versions)
        for index, part in enumerate(parts, 1):
            messages, _ = build_messages(
                msg.intent, msg.request.text, part, budget_tokens=self.context_token_budget, count_tokens=count,
                versions=self.prompt_versions, part=(index, len(parts)),
            )
            structured, errors = self._complete(messages, msg, template.version, billed)
            if structured is None:
                reasons.extend(f"part {index}: {error}" for error in errors or ["no answer"])
            else:
                partials.append(structured)
        version = f"{template.version}+{COMBINE_VERSION}"
        structured, errors = self._complete(combine_messages(template, msg.request.text, partials), msg, version,
                                            billed)
        read = [c.chunk_id for part in parts for c in part]
        return self._completion(billed, structured, version, reasons + errors, read)

    def _completion(
        self, billed: list[LLMResponse], structured: dict[str, Any] | None, version: str,
        repair_reasons: list[str], read: list[str],
    ) -> Completion:
        last = billed[-1]
        return Completion(
            text=last.text,
            structured=structured,
            provider=PROVIDER,
            model=last.model,
            prompt_version=version,
            finish_reason=last.finish_reason,
            usage=Usage(
                prompt_tokens=sum(r.prompt_tokens for r in billed),
                completion_tokens=sum(r.completion_tokens for r in billed),
            ),
            cost_usd=_total_cost(billed),
            unpriced_models=merge_models(*(r.unpriced_models for r in billed)),
            llm_calls=sum(r.calls for r in billed),
            cached=all(r.cached for r in billed),
            repair_reasons=repair_reasons,
            chunks_read=read,
        )


def _carry_billing(exc: ConveyorError | Requeue, billed: Sequence[LLMResponse]) -> None:
    """Add the calls, tokens and cost of ``billed`` to what the error already carries."""
    d = exc.details
    for response in billed:
        for key, value in (("calls", response.calls), ("prompt_tokens", response.prompt_tokens),
                           ("completion_tokens", response.completion_tokens)):
            previous = d.get(key)
            d[key] = (previous if isinstance(previous, int | float) else 0) + value
        previous_cost = d.get("cost_usd", 0.0)
        d["cost_usd"] = add_cost(
            float(previous_cost) if isinstance(previous_cost, int | float) else None, response.cost_usd
        )
        d["unpriced_models"] = merge_models(response.unpriced_models, d.get("unpriced_models"))
