"""`conveyor eval` end to end: the golden summary suite through the embedded pipeline, JSON out, the gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def conveyor(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVEYOR_")}
    env["CONVEYOR_DATA_DIR"] = str(cwd / "data")
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_summary_fields_suite_writes_json_and_a_raised_threshold_fails(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    ok = conveyor(["eval", "summary-fields", "--limit", "4", "--json-out", str(out)], tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(out.read_text())
    suite = report["suites"]["summary-fields"]
    assert suite["documents"] == 4 and suite["provider"] == "extractive"
    assert set(suite["metrics"]) == {"parties", "effective_date", "term", "governing_law", "payment",
                                     "liability_cap", "termination_notice", "overall", "coverage"}
    assert all(0.0 <= v <= 1.0 for v in suite["metrics"].values())
    # the shipped thresholds hold on the shipped suite
    shipped = (REPO / "evals" / "thresholds.toml").read_text()
    assert "[summary-fields]" in shipped and report["failures"] == []
    assert "summary-fields" in ok.stdout and "overall" in ok.stdout

    strict = tmp_path / "strict.toml"
    strict.write_text("[summary-fields]\noverall = 1.01\n")
    failed = conveyor(["eval", "summary-fields", "--limit", "4", "--thresholds", str(strict)], tmp_path)
    assert failed.returncode == 1
    assert "below threshold: summary-fields.overall" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_summary_dir_scores_another_golden_set(tmp_path: Path) -> None:
    """A user's own held-out contracts: --summary-dir replaces the shipped summary set, key format unchanged."""
    own = tmp_path / "own"
    (own / "contracts").mkdir(parents=True)
    (own / "contracts" / "hire.md").write_text(
        "# Equipment Hire Agreement\n\nThis Agreement is made on 3 March 2026 between Torvale Plant Hire Limited "
        "(the \"Owner\") and Meadowgate Builders Ltd (the \"Hirer\").\n\n## 1. Hire Period\n\nThe hire starts on "
        "1 April 2026 and lasts for six (6) months.\n\n## 2. Charges\n\nThe Hirer shall pay £45 per unit per "
        "week.\n\n## 3. Law\n\nThis Agreement is governed by the laws of England and Wales.\n", encoding="utf-8")
    key = {"doc": "hire.md", "parties": ["Torvale Plant Hire Limited", "Meadowgate Builders Ltd"],
           "effective_date": "2026-04-01", "term_months": 6, "governing_law": "England and Wales",
           "payment": "£45 per unit per week", "liability_cap": None, "termination_notice": "30 days"}
    (own / "key.jsonl").write_text(json.dumps(key) + "\n", encoding="utf-8")
    out = tmp_path / "own.json"
    proc = conveyor(["eval", "summary-fields", "--summary-dir", str(own), "--no-gate", "--json-out", str(out)],
                    tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    suite = json.loads(out.read_text())["suites"]["summary-fields"]
    assert suite["documents"] == 1
    assert suite["metrics"]["parties"] == 1.0 and suite["metrics"]["payment"] == 1.0
    assert suite["metrics"]["termination_notice"] == 0.0  # the key asks for a notice the contract lacks
    (own / "key.jsonl").unlink()
    missing = conveyor(["eval", "summary-fields", "--summary-dir", str(own)], tmp_path)
    assert missing.returncode == 1 and "has no key.jsonl" in missing.stderr and "Traceback" not in missing.stderr


def test_bad_compare_spec_is_one_line(tmp_path: Path) -> None:
    proc = conveyor(["eval", "intents", "--compare", "provider"], tmp_path)
    assert proc.returncode == 1 and "KEY=VALUE" in proc.stderr and "Traceback" not in proc.stderr


def test_compare_runs_the_extractive_default_and_an_openai_compatible_endpoint_side_by_side(tmp_path: Path) -> None:
    """Both configurations on the same golden contract; the second really calls the endpoint (here the
    fake server over HTTP: its scores say nothing about a real model, the plumbing is what is tested)."""
    from scripts.fake_openai_server import FakeOpenAIServer

    out = tmp_path / "compare.json"
    with FakeOpenAIServer() as server:
        llm = f"provider=llm,base_url={server.url},model=gpt-4o-mini,api_key=sk-test"
        proc = conveyor(["eval", "summary-fields", "--limit", "1", "--no-gate", "--compare", "provider=extractive",
                         "--compare", llm, "--json-out", str(out)], tmp_path)
        chat_calls = len(server.chat_models())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = json.loads(out.read_text())["compare"]
    assert [run["config"] for run in runs] == ["provider=extractive", llm.replace("api_key=sk-test", "api_key=**")]
    providers = [run["suites"]["summary-fields"]["provider"] for run in runs]
    assert providers == ["extractive", "openai-compatible"]
    assert chat_calls >= 1, "the golden contract's summary went to the endpoint"
    assert all(0.0 <= v <= 1.0 for run in runs for v in run["suites"]["summary-fields"]["metrics"].values())
    assert "sk-test" not in proc.stdout + proc.stderr + out.read_text(), "the key is never printed or written"
