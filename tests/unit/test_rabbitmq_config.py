"""The RabbitMQ broker option: quorum queues with a delivery limit, native delayed delivery, state in Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import SettingsError, load_settings
from schemas import QUEUES
from workers.app import celery_config, is_amqp

AMQP = "amqp://guest:guest@127.0.0.1:5672/conveyor"


def test_rabbitmq_queues_are_quorum_queues_with_a_delivery_limit_on_topic_exchanges(tmp_path: Path) -> None:
    settings = load_settings(broker_url=AMQP, redis_url="redis://127.0.0.1:6379/0", data_dir=tmp_path,
                             broker_delivery_limit=3)
    config = celery_config(settings)
    queues = {q.name: q for q in config["task_queues"]}
    assert set(queues) == set(QUEUES)
    for name, queue in queues.items():
        assert queue.queue_arguments == {"x-queue-type": "quorum", "x-delivery-limit": 3}
        # Celery's native delayed delivery (countdowns of retries and re-queues) needs topic exchanges
        assert (queue.exchange.name, queue.exchange.type, queue.routing_key) == (name, "topic", name)
    assert config["broker_transport_options"] == {"confirm_publish": True}
    assert config["broker_transport"] is None, "the Redis transport fix is for Redis only"


def test_redis_queues_stay_plain_and_keep_the_lease(tmp_path: Path) -> None:
    config = celery_config(load_settings(broker_url="redis://127.0.0.1:6379/0", data_dir=tmp_path))
    assert all(q.queue_arguments is None for q in config["task_queues"])
    assert config["broker_transport_options"]["visibility_timeout"] == 60
    assert not is_amqp("redis://x") and is_amqp(AMQP) and is_amqp("amqps://h/v")


def test_a_rabbitmq_broker_without_a_redis_for_state_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="CONVEYOR_REDIS_URL"):
        load_settings(broker_url=AMQP, data_dir=tmp_path)


def test_reconcile_bound_must_exceed_the_task_time_limit(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="reconcile_after_s"):
        load_settings(data_dir=tmp_path, reconcile_after_s=120, task_time_limit_s=300, task_soft_time_limit_s=200)
