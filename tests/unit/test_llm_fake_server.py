"""The fake OpenAI server itself: routes, rpm window, scripting, CLI."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from scripts.fake_openai_server import FakeOpenAIServer, hashed_embedding, parse_fault

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "Hello there. More."}]}


def test_models_and_unknown_route() -> None:
    with FakeOpenAIServer(models=["a", "b"]) as server, httpx.Client() as client:
        listed = client.get(f"{server.url}/models").json()
        assert [m["id"] for m in listed["data"]] == ["a", "b"]
        assert client.get(f"{server.url}/nope").status_code == 404
        assert server.stats["requests"] == 2


def test_rpm_sliding_window_answers_429_with_retry_after() -> None:
    with FakeOpenAIServer(rpm=3) as server, httpx.Client() as client:
        codes = [client.post(f"{server.url}/chat/completions", json=CHAT).status_code for _ in range(3)]
        limited = client.post(f"{server.url}/chat/completions", json=CHAT)
    assert codes == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    retry_after, retry_after_ms = int(limited.headers["Retry-After"]), int(limited.headers["retry-after-ms"])
    assert 1 <= retry_after <= 60 and retry_after == math.ceil(retry_after_ms / 1000)
    assert server.stats["http_429"] == 1 and server.stats["rate_limited"] == 1


def test_warm_window_frees_one_slot_per_interval() -> None:
    with FakeOpenAIServer(rpm=6) as server, httpx.Client() as client:
        server.fill_rate_window()
        first = client.post(f"{server.url}/chat/completions", json=CHAT)
        second = client.post(f"{server.url}/chat/completions", json=CHAT)
    assert first.status_code == 200
    assert second.status_code == 429
    assert 5_000 < int(second.headers["retry-after-ms"]) <= 10_000  # next slot: one 10 s interval later


def test_fail_rate_injects_500s() -> None:
    with FakeOpenAIServer(fail_rate=1.0) as server, httpx.Client() as client:
        assert client.post(f"{server.url}/chat/completions", json=CHAT).status_code == 500
        assert server.stats["http_500"] == 1


def test_script_is_validated_and_consumed_in_order() -> None:
    with pytest.raises(ValueError):
        parse_fault("explode")
    assert parse_fault("429:retry_after=1,retry_after_ms=5") == (
        "429",
        {"retry_after": "1", "retry_after_ms": "5"},
    )
    with FakeOpenAIServer() as server, httpx.Client() as client:
        with pytest.raises(ValueError):
            server.script(["ok", "nonsense"])
        server.faults.get_nowait()  # the valid "ok" queued before the bad entry
        server.script(["503", "quota", "ok"])
        codes = [client.post(f"{server.url}/chat/completions", json=CHAT).status_code for _ in range(4)]
    assert codes == [503, 429, 200, 200]


def test_auth_is_checked_when_a_key_is_set() -> None:
    with FakeOpenAIServer(api_key="k1") as server, httpx.Client() as client:
        url = f"{server.url}/chat/completions"
        assert client.post(url, json=CHAT).status_code == 401
        assert client.post(url, json=CHAT, headers={"Authorization": "Bearer k1"}).status_code == 200


def test_embeddings_are_deterministic_normalised_and_sized() -> None:
    with FakeOpenAIServer(embedding_dim=32) as server, httpx.Client() as client:
        body = client.post(f"{server.url}/embeddings", json={"input": ["cat sat", "cat sat", "tax law"]}).json()
        sized = client.post(f"{server.url}/embeddings", json={"input": "x", "dimensions": 8}).json()
        bad = client.post(f"{server.url}/embeddings", json={"input": 3})
    vectors = [d["embedding"] for d in body["data"]]
    assert len(vectors[0]) == 32 and vectors[0] == vectors[1] != vectors[2]
    assert sum(v * v for v in vectors[0]) == pytest.approx(1.0, abs=1e-4)
    assert len(sized["data"][0]["embedding"]) == 8
    assert body["usage"]["prompt_tokens"] > 0
    assert bad.status_code == 400
    assert hashed_embedding("", 4) == hashed_embedding("", 4)


def test_cli_prints_url_first_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "scripts/fake_openai_server.py",
            "--port",
            "0",
            "--latency-ms",
            "1",
            "--script",
            "503",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        with httpx.Client() as client:
            assert client.post(f"{url}/chat/completions", json=CHAT).status_code == 503
            assert client.post(f"{url}/chat/completions", json=CHAT).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert '"http_503": 1' in err
