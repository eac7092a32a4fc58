from __future__ import annotations

import pytest

from pipeline.settings import SettingsError, load_settings


def test_defaults_are_embedded_mode() -> None:
    s = load_settings()
    assert s.embedded and s.store_url is None
    assert s.visibility_timeout_s == 60, "a short lease that live workers renew (workers/lease.py)"


def test_unknown_variable_is_rejected_with_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_BROKR_URL", "redis://x")
    with pytest.raises(
        SettingsError, match=r"CONVEYOR_BROKR_URL: unknown setting \(did you mean CONVEYOR_BROKER_URL"
    ):
        load_settings()


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_RETRIEVE_TOP_K", "lots")
    with pytest.raises(SettingsError, match="CONVEYOR_RETRIEVE_TOP_K"):
        load_settings()


def test_the_broker_lease_has_a_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Renewed every quarter lease: below 20 s a slow tick could let a live worker's message go."""
    monkeypatch.setenv("CONVEYOR_VISIBILITY_TIMEOUT_S", "10")
    with pytest.raises(SettingsError, match="CONVEYOR_VISIBILITY_TIMEOUT_S"):
        load_settings()


def test_secrets_are_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_LLM_API_KEY", "sk-live-very-secret")
    s = load_settings()
    assert "sk-live-very-secret" not in repr(s) and "sk-live-very-secret" not in str(s.model_dump())
    assert s.llm_api_key is not None and s.llm_api_key.get_secret_value() == "sk-live-very-secret"


def test_store_url_follows_a_redis_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_BROKER_URL", "redis://127.0.0.1:6379/3")
    s = load_settings()
    assert not s.embedded and s.store_url == "redis://127.0.0.1:6379/3"


def test_an_unrelated_variable_is_ignored_and_the_tests_redis_is_accepted(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    monkeypatch.setenv("CONVEYOR_DEPLOY_COLOR", "blue")  # another service's, nothing like a setting
    settings = load_settings()
    assert settings.embedded
    assert "CONVEYOR_DEPLOY_COLOR is not a Conveyor setting" in caplog.text
    assert "CONVEYOR_TEST_REDIS_URL" not in caplog.text
