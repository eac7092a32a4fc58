"""A batch of jobs on a model with no known price says how many jobs its cost leaves out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.fake_openai_server import FakeOpenAIServer
from tests.e2e.test_batch_cli import _contracts, _env, conveyor

pytestmark = pytest.mark.e2e


def test_a_batch_on_an_unpriced_model_says_how_many_jobs_are_not_in_its_cost(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    _contracts(docs, 2, chars=1500)
    with FakeOpenAIServer() as llm:
        env = _env(tmp_path / "data", CONVEYOR_LLM_BASE_URL=llm.url, CONVEYOR_LLM_MODEL="acme-unpriced-batch",
                   COLUMNS="200")
        submitted = conveyor(["batch", "submit", str(docs)], env)
        assert submitted.returncode == 0, submitted.stderr
        batch_id = submitted.stdout.strip().splitlines()[0]
        status = json.loads(conveyor(["batch", "status", batch_id, "--json"], env).stdout)
        text = conveyor(["batch", "status", batch_id], env)
    assert (status["succeeded"], status["unpriced_jobs"], status["cost_usd"]) == (2, 2, 0.0), status
    assert "unpriced" in text.stdout, text.stdout  # the status table's extra column
    assert "(+2 unpriced)" in submitted.stderr, submitted.stderr  # the progress line while it ran
