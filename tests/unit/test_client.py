"""The producer side: validation before sending, idempotency, and no claim without a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import InvalidInput, ProviderUnavailable
from pipeline.settings import load_settings
from pipeline.state import SqliteStateStore
from workers.app import create_app
from workers.client import ConveyorClient


def test_invalid_request_lists_every_problem_and_sends_nothing(tmp_path: Path) -> None:
    client = ConveyorClient(create_app(load_settings(data_dir=tmp_path)), SqliteStateStore(tmp_path / "s.db"))
    with pytest.raises(InvalidInput) as info:
        client.submit({"tenant": "a b", "params": {"top_k": 0}, "text": "x"})
    assert "tenant" in str(info.value) and "params.top_k" in str(info.value)


def test_unreachable_broker_raises_and_releases_the_idempotency_key(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0", redis_url="redis://127.0.0.1:1/0")
    app = create_app(settings)
    app.conf.task_publish_retry = False
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_max_retries = 0
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "max_retries": 0}
    state = SqliteStateStore(tmp_path / "s.db")
    client = ConveyorClient(app, state)
    request = {"text": "Summarize this contract.", "document_id": "d", "idempotency_key": "order-1"}
    with pytest.raises(ProviderUnavailable, match="could not enqueue"):
        client.submit(request)
    assert state.claim_idempotency_key("default", "order-1", "another") is None
