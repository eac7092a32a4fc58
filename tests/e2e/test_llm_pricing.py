"""Cost on the record through the whole chain: a real worker, the fake OpenAI server over loopback.

The fake answers as whatever model it is asked for, so a model no price table knows gets a real
completion with real token counts, and its record must say the cost is unknown (``cost_usd: null``,
the model in ``unpriced_models``) rather than $0; a model priced by ``CONVEYOR_LLM_PRICES`` is
costed from the setting.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.settings import LLMPrice
from schemas import JobRequest
from tests.llm_fixtures import llm_runtime

pytestmark = pytest.mark.e2e

UNPRICED = "acme-unpriced-e2e"
PRICED_BY_SETTING = "acme-priced-e2e"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with llm_runtime(
        tmp_path_factory.mktemp("pricing"),
        llm_model=UNPRICED,
        llm_prices={PRICED_BY_SETTING: LLMPrice(input_per_1m=1.0, output_per_1m=2.0)},
        llm_backoff_base_s=0.01,
        llm_backoff_max_s=0.02,
        stage_max_retries=1,
    ) as (rt, _server, doc_id):
        yield {"rt": rt, "doc": doc_id, "records": rt.components.settings.records_path}


def _run(env: dict[str, Any], text: str, **params: Any) -> Any:
    request = JobRequest(text=text, document_id=env["doc"], tenant="t", intent_hint="summarize",
                         params={"use_cache": False, **params})
    return env["rt"].client.result(env["rt"].client.submit(request), timeout=60)


def test_an_unpriced_model_records_a_null_cost_and_is_warned_about_once(
    env: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        first = _run(env, "Summarize this contract.")
        second = _run(env, "Summarize this contract briefly.")
    for record in (first, second):
        assert record.model == UNPRICED and record.llm_calls == 1
        assert record.usage.prompt_tokens > 100 and record.usage.completion_tokens > 0  # tokens still counted
        assert record.cost_usd is None
        assert record.unpriced_models == [UNPRICED]
    logged = {json.loads(line)["job_id"]: json.loads(line) for line in env["records"].read_text().splitlines()}
    assert logged[first.job_id]["cost_usd"] is None and logged[first.job_id]["unpriced_models"] == [UNPRICED]
    warned = [r for r in caplog.records if UNPRICED in r.getMessage() and "no known price" in r.getMessage()]
    assert len(warned) == 1, "once per model per process"


def test_a_price_from_the_setting_is_used(env: dict[str, Any]) -> None:
    record = _run(env, "Summarize this contract.", model=PRICED_BY_SETTING)
    assert record.model == PRICED_BY_SETTING and record.unpriced_models == []
    expected = (record.usage.prompt_tokens * 1.0 + record.usage.completion_tokens * 2.0) / 1e6
    assert record.cost_usd == pytest.approx(expected)


def test_a_listed_model_is_priced_from_genai_prices(env: dict[str, Any]) -> None:
    import genai_prices

    record = _run(env, "Summarize this contract.", model="gpt-4o-mini")
    usage = genai_prices.Usage(input_tokens=record.usage.prompt_tokens, output_tokens=record.usage.completion_tokens)
    assert record.cost_usd is not None and record.cost_usd > 0
    assert record.cost_usd == pytest.approx(float(genai_prices.calc_price(usage, model_ref="gpt-4o-mini").total_price))
