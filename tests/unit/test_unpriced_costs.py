"""Costs that may be unknown (cost_usd None, a model with no known price): batch counters and earlier attempts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pipeline.state import StateStore, batch_usage
from schemas import Completion, GenerationResult, Usage
from tests.unit.test_state_store import _record, store  # noqa: F401
from workers.middleware import CountAttempts, _bill


def test_an_unpriced_record_counts_as_unpriced_not_as_free(store: StateStore) -> None:  # noqa: F811
    priced = _record("j1", batch_id="b1").model_copy(update={"cost_usd": 0.25, "llm_calls": 1})
    unpriced = _record("j2", batch_id="b1").model_copy(update={"cost_usd": None, "llm_calls": 1,
                                                               "unpriced_models": ["acme-x"]})
    assert batch_usage(unpriced) == {"llm_calls": 1, "unpriced_jobs": 1}
    assert store.complete(priced) and store.complete(unpriced)
    counts = store.batch_counts("b1")
    assert counts["cost_micro_usd"] == 250_000 and counts["unpriced_jobs"] == 1 and counts["llm_calls"] == 2


def test_an_earlier_unpriced_attempt_makes_the_cost_unknown(store: StateStore) -> None:  # noqa: F811
    bill = _bill({"calls": 2, "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": None,
                  "unpriced_models": ["acme-x"]})
    assert bill == {"llm_calls": 2, "prompt_tokens": 10, "completion_tokens": 5, "unpriced:acme-x": 1}
    store.add_usage("j9", bill)
    completion = Completion(text="t", provider="p", model="gpt-4o-mini", prompt_version="v", cost_usd=0.5,
                            usage=Usage(prompt_tokens=1, completion_tokens=1), llm_calls=1)
    output = GenerationResult.model_construct(completion=completion)
    delivery: Any = SimpleNamespace(request=SimpleNamespace(job_id="j9"), components=SimpleNamespace(state=store))
    result: Any = CountAttempts()(delivery, lambda d: output)
    assert result.completion.cost_usd is None and result.completion.unpriced_models == ["acme-x"]
    assert result.completion.llm_calls == 3


def test_earlier_priced_attempts_still_add_up(store: StateStore) -> None:  # noqa: F811
    store.add_usage("j8", _bill({"calls": 1, "cost_usd": 0.25, "unpriced_models": []}))
    completion = Completion(text="t", provider="p", model="m", prompt_version="v", cost_usd=0.5, llm_calls=1)
    output = GenerationResult.model_construct(completion=completion)
    delivery: Any = SimpleNamespace(request=SimpleNamespace(job_id="j8"), components=SimpleNamespace(state=store))
    result: Any = CountAttempts()(delivery, lambda d: output)
    assert result.completion.cost_usd == 0.75 and result.completion.unpriced_models == []
    unpriced = completion.model_copy(update={"cost_usd": None, "unpriced_models": ["acme-y"]})
    store.add_usage("j7", _bill({"calls": 1, "cost_usd": 0.25}))
    result = CountAttempts()(SimpleNamespace(request=SimpleNamespace(job_id="j7"), components=SimpleNamespace(
        state=store)), lambda d: GenerationResult.model_construct(completion=unpriced))
    assert result.completion.cost_usd is None and result.completion.unpriced_models == ["acme-y"]
