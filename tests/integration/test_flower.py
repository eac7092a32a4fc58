"""Flower runs against the real broker and only behind basic auth; the password never shows in argv."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_flower_requires_basic_auth(redis_url: str, tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("CONVEYOR_", "FLOWER_"))}
    env.update(CONVEYOR_BROKER_URL=redis_url, CONVEYOR_FLOWER_BASIC_AUTH="ops:correct-horse-battery",
               CONVEYOR_DATA_DIR=str(tmp_path))
    log = (tmp_path / "flower.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "flower", "--port", str(port),
                             "--address=127.0.0.1"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while True:
            try:
                anonymous = httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "flower.log").read_text()
                assert time.monotonic() < deadline, "flower did not start"
                time.sleep(0.3)
        assert anonymous.status_code == 401
        assert httpx.get(url, auth=("ops", "wrong"), timeout=5).status_code == 401
        assert httpx.get(url, auth=("ops", "correct-horse-battery"), timeout=5).status_code == 200
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
        assert "correct-horse-battery" not in cmdline
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert "correct-horse-battery" not in (tmp_path / "flower.log").read_text()
