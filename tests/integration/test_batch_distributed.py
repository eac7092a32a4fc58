"""Batches on real `conveyor worker` processes (a private redis-server, the fake LLM over HTTP):
the submitting client killed mid-submission and run again, and a cancelled batch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from scripts import chaos
from tests.e2e.test_batch_cli import _contracts

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _redis_server_binary() -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("CI=true but redis-server is not installed (.ci/run installs it)")
        pytest.skip("needs redis-server to start a private Redis")


def _cli(cluster: chaos.Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], env=cluster.env(), cwd=chaos.REPO,
                          capture_output=True, text=True, timeout=300, check=False)


def test_a_client_killed_mid_submission_is_resumed_by_submitting_again(tmp_path: Path) -> None:
    items = 60  # enough that the client is killed while it still has items to send
    docs = tmp_path / "docs"
    docs.mkdir()
    _contracts(docs, items, tag=True, chars=1500)
    # the fake model's summaries quote chunk headers, which grounding may refuse: this test counts calls
    grounding = {"CONVEYOR_GUARD_POLICY": '{"grounding": "flag"}'}
    with chaos.environment(llm_latency_s=0.0, extra_env=grounding) as (_server, cluster):
        client = cluster.client()
        proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "batch", "submit", str(docs)],
                                env=cluster.env(), cwd=chaos.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            batches = client.list_batches()
            if batches and client.state.batch_counts(batches[0].batch_id).get("submitted", 0) >= 10:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        (info,) = client.list_batches()
        sent_before_kill = client.state.batch_counts(info.batch_id)["submitted"]
        assert 10 <= sent_before_kill < items, "killed mid-submission"

        again = _cli(cluster, "batch", "submit", str(docs), "--watch", "--timeout", "240")
        assert again.returncode == 0 and again.stdout.strip() == info.batch_id, again.stderr
        status = json.loads(_cli(cluster, "batch", "status", info.batch_id, "--json").stdout)
        calls = Counter(r["tag"] for r in cluster.llm.requests_log if r["path"] == "/v1/chat/completions")
        failed = _cli(cluster, "batch", "errors", info.batch_id, "--json").stdout
        assert (status["items"], status["succeeded"], status["failed"]) == (items, items, 0), failed
        assert calls == {f"doc-{i}": 1 for i in range(items)}, "each item ran once: none twice, none lost"
        assert status["llm_calls"] == items
        assert cluster.exits() == {name: None for name in cluster.workers}


def test_a_cancelled_batch_runs_no_queued_item_and_resumes_on_retry(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    _contracts(docs, 8, tag=True, chars=1500)
    # no worker takes ingest yet: every item is queued when the batch is cancelled
    workers = (chaos.WorkerSpec("front", "intent,retrieve", "threads", 2), *chaos.DEFAULT_WORKERS[1:])
    grounding = {"CONVEYOR_GUARD_POLICY": '{"grounding": "flag"}'}
    with chaos.environment(llm_latency_s=0.0, workers=workers, extra_env=grounding) as (_server, cluster):
        batch_id = _cli(cluster, "batch", "submit", str(docs)).stdout.strip()
        cancelled = _cli(cluster, "batch", "cancel", batch_id)
        assert cancelled.returncode == 0, cancelled.stderr
        # local Qdrant has one owner: the front worker comes back consuming ingest too
        cluster.kill("front")
        cluster.start(chaos.DEFAULT_WORKERS[0])
        cluster.wait_ready()
        client = cluster.client()
        status = client.wait_batch(batch_id, timeout=120)
        assert (status.label, status.failures, status.succeeded) == ("cancelled", {"cancelled": 8}, 0)
        assert cluster.llm.requests_log == [], "a cancelled item makes no upstream call"

        retried = _cli(cluster, "batch", "retry", batch_id, "--class", "cancelled", "--watch")
        assert retried.returncode == 0, retried.stderr
        status = client.wait_batch(batch_id, timeout=120)
        assert (status.label, status.succeeded) == ("completed", 8), status
