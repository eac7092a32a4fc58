"""Shared fixtures: a clean CONVEYOR_* environment per test, and the integration Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TEST_REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture(autouse=True)
def _clean_conveyor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees another's (or the developer's) CONVEYOR_* variables."""
    for key in list(os.environ):
        if key.upper().startswith("CONVEYOR_") and key != "CONVEYOR_TEST_REDIS_URL":
            monkeypatch.delenv(key)


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis database reserved for tests, emptied before and after each test.

    Skipped when Redis does not answer, except in CI (CI=true), where that is a failure.
    """
    if not _redis_answers(TEST_REDIS_URL):
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true but Redis does not answer at {TEST_REDIS_URL}")
        pytest.skip(f"Redis not reachable at {TEST_REDIS_URL}")
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "corpus" / "contracts").is_dir():
        pytest.skip("../shared (contract corpus) not found next to the repository")
    return SHARED
