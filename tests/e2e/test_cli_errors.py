"""The CLI's errors: one line on stderr, exit status 1, no traceback, secrets masked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def _conveyor(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVEYOR_")}
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], input=stdin, env={**clean, **env},
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("Error: "), done.stderr
    return done.stderr


def test_a_request_that_is_not_json() -> None:
    err = _one_line_error(_conveyor("submit", "-", stdin="{not json"))
    assert "not valid JSON" in err and "line 1" in err


def test_a_malformed_broker_url_names_the_variable_and_masks_the_password() -> None:
    err = _one_line_error(_conveyor("status", "job-1", CONVEYOR_BROKER_URL="redis//:hunter2-secret@db:6379"))
    assert "CONVEYOR_BROKER_URL" in err and "not a URL" in err and "hunter2-secret" not in err


def test_an_unreachable_redis_is_named_by_host_and_port_without_the_password(tmp_path: object) -> None:
    err = _one_line_error(_conveyor("status", "job-1", CONVEYOR_BROKER_URL="redis://:hunter2-secret@127.0.0.1:1/0",
                                    CONVEYOR_REDIS_RETRY_S="0"))
    assert "127.0.0.1:1" in err and "unreachable" in err and "hunter2-secret" not in err
