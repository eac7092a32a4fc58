"""Small things operators and producers expect from the CLI: version, effective config, answer only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_batch_cli import _env, conveyor

pytestmark = pytest.mark.e2e


def test_version_and_config_with_secrets_masked(tmp_path: Path) -> None:
    env = _env(tmp_path / "data", CONVEYOR_BROKER_URL="redis://:hunter2-pass@127.0.0.1:6379/0",
               CONVEYOR_LLM_API_KEY="sk-very-secret-key", CONVEYOR_LOG_LEVEL="WARNING")
    version = conveyor(["--version"], env)
    assert version.returncode == 0 and version.stdout.startswith("conveyor, version ")
    shown = json.loads(conveyor(["config", "--json"], env).stdout)
    assert shown["CONVEYOR_LOG_LEVEL"] == "WARNING" and shown["CONVEYOR_LLM_API_KEY"] == "**********"
    assert "hunter2-pass" not in json.dumps(shown) and shown["CONVEYOR_BROKER_URL"].startswith("redis://:**@")
    table = conveyor(["config"], env)
    assert "CONVEYOR_RETENTION_S" in table.stdout and "sk-very-secret-key" not in table.stdout


def test_submit_answer_only_prints_the_answer_alone(tmp_path: Path) -> None:
    env = _env(tmp_path / "data", CONVEYOR_GUARD_POLICY='{"grounding": "flag"}')
    proc = conveyor(["submit", "--text", "What is the notice period?", "--intent", "question", "--answer-only"], env)
    assert proc.returncode == 0, proc.stderr
    answer = proc.stdout.strip()
    assert answer and "\n" not in answer and not answer.startswith("{"), proc.stdout
