"""``conveyor top`` as an operator runs it: one frame against a seeded Redis, the live view ended by
Ctrl-C (exit 0, no traceback), embedded mode, and a one-line error when the broker does not answer."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from pipeline.state import RedisStateStore
from tests.conftest import REPO
from tests.e2e.test_batch_cli import _env, conveyor
from tests.unit.test_top import SECRET_TEXT, _row, _seed

pytestmark = pytest.mark.e2e


def test_once_prints_queues_letters_and_batches(redis_url: str, tmp_path: Path) -> None:
    state, client = RedisStateStore.from_url(redis_url), redis.Redis.from_url(redis_url)
    try:
        _seed(state, client)
    finally:
        state.close()
        client.close()
    done = conveyor(["top", "--once"], _env(tmp_path / "data", CONVEYOR_BROKER_URL=redis_url, COLUMNS="160"),
                    timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"broker {redis_url}" in out and "throughput — jobs/s" in out
    assert _row(out, "llm")[:3] == ["llm", "3", "0"] and _row(out, "guard")[:2] == ["guard", "1"]
    assert "open dead letters: 5" in out
    assert _row(out, "timeout")[:2] == ["timeout", "2"] and _row(out, "cancelled")[:2] == ["cancelled", "2"]
    east = _row(out, "east")
    assert east[1] == "running" and east[-4:] == ["—", "—", "1200", "$0.0123"] and "7/10" in east
    assert _row(out, "west")[1] == "cancelled"
    assert SECRET_TEXT not in out and "alice" not in out.lower() and "contracts/" not in out


def test_embedded_mode_shows_the_local_store_and_no_broker(tmp_path: Path) -> None:
    done = conveyor(["top", "--once"], _env(tmp_path / "data", COLUMNS="160"), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "none (embedded mode)" in done.stdout and "no broker" in done.stdout


def test_an_unreachable_broker_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = conveyor(["top", "--once"], _env(tmp_path / "data", CONVEYOR_BROKER_URL="redis://:hunter2@127.0.0.1:1/0",
                                            CONVEYOR_REDIS_RETRY_S="0"), timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["Error: broker unreachable at redis://:**@127.0.0.1:1/0: ConnectionError"]


def test_the_live_view_ends_quietly_on_ctrl_c(redis_url: str, tmp_path: Path) -> None:
    env = _env(tmp_path / "data", CONVEYOR_BROKER_URL=redis_url, COLUMNS="160", FORCE_COLOR="1")
    seen = threading.Event()
    output: list[str] = []
    with subprocess.Popen([sys.executable, "-m", "workers.cli", "top", "--interval", "0.5"], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                output.append(line)
                if "batches" in line:  # the whole first frame is on screen
                    seen.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert seen.wait(120), "".join(output)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(10)
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Aborted" not in err
