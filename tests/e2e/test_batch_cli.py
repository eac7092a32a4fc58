"""`conveyor batch` end to end in embedded mode: a real in-process worker, local Qdrant, SQLite,
and, where upstream calls are counted, the fake OpenAI-compatible server over HTTP."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from scripts.fake_openai_server import FakeOpenAIServer
from tests.conftest import REPO
from workers.cli import sample_contracts

pytestmark = pytest.mark.e2e


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVEYOR_")}
    return {**env, "CONVEYOR_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **extra}


def conveyor(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _contracts(folder: Path, n: int, *, tag: bool = False, chars: int | None = None) -> list[Path]:
    """``n`` contracts from the shipped samples, each made distinct (and tagged for the fake server);
    ``chars`` keeps only their opening (fewer chunks to embed)."""
    samples = sample_contracts()
    paths = []
    for i in range(n):
        text = samples[i % len(samples)].read_text(encoding="utf-8")[:chars]
        marker = f"[ref:doc-{i}]" if tag else f"Copy {i}."
        path = folder / f"c{i:02d}.md"
        path.write_text(text.replace("\n", f"\n\n{marker}\n", 1), encoding="utf-8")
        paths.append(path)
    return paths



def test_a_folder_with_bad_files_fails_those_items_only_and_exports_both_formats(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "east").mkdir(parents=True)
    (docs / "west").mkdir()
    good = sample_contracts()
    (docs / "east" / "contract.md").write_text(good[0].read_text(encoding="utf-8"), encoding="utf-8")
    (docs / "west" / "contract.md").write_text(good[1].read_text(encoding="utf-8"), encoding="utf-8")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage, no xref")
    (docs / "latin1.txt").write_bytes("Vertrag über Lieferung, Gebühr 5 €".encode("latin-1", errors="replace"))
    (docs / "empty.md").write_text("   \n")
    (docs / "slides.pptx").write_bytes(b"PK\x03\x04")
    env = _env(tmp_path / "data")

    submitted = conveyor(["batch", "submit", str(docs)], env)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    assert "6 items; 5 sent" in submitted.stderr and "1 invalid" in submitted.stderr, submitted.stderr

    status = json.loads(conveyor(["batch", "status", batch_id, "--json"], env).stdout)
    assert (status["items"], status["succeeded"], status["failed"], status["pending"]) == (6, 2, 4, 0), status
    assert status["failures"] == {"invalid_input": 4} and status["label"] == "completed_with_errors"

    errors = {e["custom_id"]: e["error"] for e in json.loads(conveyor(["batch", "errors", batch_id, "--json"],
                                                                       env).stdout)}
    assert set(errors) == {"broken.pdf", "latin1.txt", "empty.md", "slides.pptx"}
    assert "damaged or truncated PDF" in errors["broken.pdf"]["message"]
    assert "latin1.txt is not UTF-8" in errors["latin1.txt"]["message"]
    assert "empty.md is empty" in errors["empty.md"]["message"]
    assert "unsupported document type '.pptx'" in errors["slides.pptx"]["message"]
    assert {e["stage"] for e in errors.values()} == {"ingest"}

    jsonl, table = tmp_path / "results.jsonl", tmp_path / "results.csv"
    assert conveyor(["batch", "results", batch_id, "--out", str(jsonl)], env).returncode == 0
    assert conveyor(["batch", "results", batch_id, "--out", str(table)], env).returncode == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["custom_id"] for r in lines] == sorted(["east/contract.md", "west/contract.md", "broken.pdf",
                                                      "latin1.txt", "empty.md", "slides.pptx"])
    done = {r["custom_id"]: r for r in lines if r["status"] == "succeeded"}
    assert {r["record"]["request"]["document_id"] for r in done.values()} == {"east:contract.md", "west:contract.md"}
    assert all(r["record"]["output"]["parties"] for r in done.values()), "two same-named files, two documents"
    with table.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["custom_id"] for r in rows] == [r["custom_id"] for r in lines]
    assert {r["status"] for r in rows} == {"succeeded", "failed"} and all(
        r["failure_class"] == "invalid_input" for r in rows if r["status"] == "failed")
    assert json.loads(next(r for r in rows if r["status"] == "succeeded")["output"])["summary"]


def test_resubmitting_resumes_an_interrupted_batch_without_paying_twice(tmp_path: Path) -> None:
    """Ctrl-C stops the embedded worker mid-batch; the same command again finishes it. The fake
    server counts calls per document: every document is generated exactly once."""
    docs = tmp_path / "docs"
    docs.mkdir()
    _contracts(docs, 10, tag=True)
    with FakeOpenAIServer(latency_s=0.4) as llm:
        env = _env(tmp_path / "data", CONVEYOR_LLM_BASE_URL=llm.url)
        first = subprocess.Popen([sys.executable, "-m", "workers.cli", "batch", "submit", str(docs)], cwd=REPO,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(llm.requests_log) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=120)
        batch_id = out.strip()
        calls_at_interrupt = len(llm.requests_log)
        assert 0 < calls_at_interrupt < 10 and "stopped watching" in err, err

        second = conveyor(["batch", "submit", str(docs)], env)
        assert second.returncode == 0 and second.stdout.strip() == batch_id, second.stderr
        assert "resent" in second.stderr
        status = json.loads(conveyor(["batch", "status", batch_id, "--json"], env).stdout)
        assert (status["succeeded"], status["failed"]) == (10, 0), status

        third = conveyor(["batch", "submit", str(docs)], env)
        assert "0 sent, 0 resent" in third.stderr and "10 succeeded" in third.stderr, third.stderr
        calls = Counter(r["tag"] for r in llm.requests_log if r["path"] == "/v1/chat/completions")
    assert calls == {f"doc-{i}": 1 for i in range(10)}, "no document generated twice, none forgotten"
    assert status["llm_calls"] == 10 and status["cost_usd"] > 0


def test_retry_replays_the_failed_items_only(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    _contracts(docs, 5, tag=True)
    with FakeOpenAIServer() as llm:
        env = _env(tmp_path / "data", CONVEYOR_LLM_BASE_URL=llm.url, CONVEYOR_WORKER_CONCURRENCY="1")
        llm.script(["ok", "400", "ok", "400"])  # two items rejected by the provider (not retried)
        batch_id = conveyor(["batch", "submit", str(docs)], env).stdout.strip()
        status = json.loads(conveyor(["batch", "status", batch_id, "--json"], env).stdout)
        assert (status["succeeded"], status["failures"]) == (3, {"provider_rejected": 2}), status

        dry = conveyor(["batch", "retry", batch_id, "--class", "provider_rejected", "--dry-run"], env)
        assert "would replay 2 failed item(s)" in dry.stderr, dry.stderr
        assert conveyor(["batch", "retry", batch_id, "--class", "timeout"], env).stderr.startswith("replayed 0")
        retried = conveyor(["batch", "retry", batch_id, "--class", "provider_rejected"], env)
        assert retried.returncode == 0 and "replayed 2" in retried.stderr, retried.stderr
        status = json.loads(conveyor(["batch", "status", batch_id, "--json"], env).stdout)
        calls = Counter(r["tag"] for r in llm.requests_log if r["path"] == "/v1/chat/completions")
    assert (status["succeeded"], status["failed"]) == (5, 0), status
    assert sorted(calls.values()) == [1, 1, 1, 2, 2], "the succeeded items were not called again"


def test_batch_commands_name_an_unknown_batch_in_one_line(tmp_path: Path) -> None:
    env = _env(tmp_path / "data")
    for args in (["status", "nope"], ["results", "nope", "--out", str(tmp_path / "r.jsonl")], ["cancel", "nope"]):
        proc = conveyor(["batch", *args], env)
        assert proc.returncode == 1 and "no batch 'nope'" in proc.stderr and "Traceback" not in proc.stderr, args
