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
                                     "liability_cap", "termination_notice", "overall"}
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


def test_bad_compare_spec_is_one_line(tmp_path: Path) -> None:
    proc = conveyor(["eval", "intents", "--compare", "provider"], tmp_path)
    assert proc.returncode == 1 and "KEY=VALUE" in proc.stderr and "Traceback" not in proc.stderr
