"""The CLI end to end in embedded mode: real in-process Celery worker, local Qdrant, SQLite state."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workers.cli import sample_contracts

pytestmark = pytest.mark.e2e


def conveyor(
    args: list[str], data_dir: Path, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVEYOR_")}
    env["CONVEYOR_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_summarizes_two_contracts(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    proc = conveyor(
        ["demo", "--limit", "2", "--out", str(out), "--errors-out", str(tmp_path / "errors.jsonl")],
        tmp_path / "data",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    expected_docs = {p.name for p in sample_contracts()[:2]}  # the path under the batch root, not a stem
    assert {r["request"]["document_id"] for r in records} == expected_docs
    for r in records:
        assert r["provider"] == "extractive" and r["intent"] == "summarize"
        assert r["chunks_used"] and r["guard"]["verdict"] in {"pass", "repaired", "redacted"}
        assert r["output"]["summary"] and set(r["output"]["citations"]) <= set(r["chunks_used"])
        assert r["output"]["parties"], "the opening 'by and between' clause names the parties"
        assert {"intent", "retrieve", "generate", "guard"} <= set(r["timings_ms"])
    assert (
        "document" in proc.stdout and "guard" in proc.stdout and "2 succeeded, 0 failed, 0 pending of 2" in proc.stdout
    )
    assert (tmp_path / "errors.jsonl").read_text() == ""
    # the JSONL log of every record is written too
    assert len((tmp_path / "data" / "records.jsonl").read_text().splitlines()) == 2


def test_missing_document_is_dead_lettered_then_replayed_after_ingest(tmp_path: Path) -> None:
    data = tmp_path / "data"
    failed = conveyor(
        ["submit", "--doc", "late-contract", "--intent", "question", "--text", "What is the term of this agreement?"],
        data,
        tmp_path,
    )
    assert failed.returncode == 1
    assert "not ingested" in failed.stderr

    listing = conveyor(["dlq", "list", "--json"], data, tmp_path)
    letters = json.loads(listing.stdout)
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["failure_class"], letter["stage"], letter["state"]) == (
        "invalid_input",
        "retrieve",
        "open",
    )
    assert letter["document_id"] == "late-contract"  # a summary: the ids, not the request
    shown = json.loads(conveyor(["dlq", "show", letter["dead_letter_id"]], data, tmp_path).stdout)
    assert shown["request"]["document_id"] == "late-contract" and shown["stage_input"]["request"] == shown["request"]

    status = json.loads(conveyor(["status", letter["job_id"]], data, tmp_path).stdout)
    assert status["state"] == "failed" and status["dead_letter_id"] == letter["dead_letter_id"]

    doc = tmp_path / "late-contract.md"
    shutil.copy(sample_contracts()[0], doc)
    assert conveyor(["ingest", str(doc)], data, tmp_path).returncode == 0

    replay = conveyor(["dlq", "replay", letter["dead_letter_id"]], data, tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "succeeded" in replay.stdout

    record = json.loads(conveyor(["result", letter["job_id"]], data, tmp_path).stdout)
    assert record["job_id"] == letter["job_id"] and record["request"]["idempotency_key"] == letter["job_id"]
    assert record["intent"] == "question" and record["chunks_used"]
    assert json.loads(conveyor(["dlq", "list", "--json"], data, tmp_path).stdout) == []
    again = conveyor(["dlq", "replay", letter["dead_letter_id"]], data, tmp_path)
    assert again.returncode == 1 and "already replayed" in again.stderr


def test_invalid_request_gets_a_clear_error_before_anything_is_sent(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tenant": "acme", "text": "", "params": {"top_k": 0}}))
    proc = conveyor(["submit", str(bad)], tmp_path / "data", tmp_path)
    assert proc.returncode == 1
    assert "invalid job request" in proc.stderr and "params.top_k" in proc.stderr
