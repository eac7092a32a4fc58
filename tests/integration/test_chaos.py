"""The chaos suite's scenarios at small scale: real `conveyor worker` processes, a private
redis-server on a free port (and, for the RabbitMQ broker, a private vhost on the local RabbitMQ),
the fake LLM server over HTTP, real signals.

Goals (issue #9): nothing lost, no worker exits on a fault it should survive, a killed worker's
jobs run again within two minutes, a finished job is never executed again, and upstream calls
billed twice stay within what the kills interrupted. Full-size figures: `python scripts/chaos.py`.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from scripts import chaos

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _redis_server_binary() -> None:
    if shutil.which("redis-server") is None:
        if _ci():
            pytest.fail("CI=true but redis-server is not installed (.ci/run installs it)")
        pytest.skip("needs redis-server to start a private Redis")


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def rabbitmq() -> str:
    if not chaos.rabbitmq_available():
        if _ci():
            pytest.fail("CI=true but RabbitMQ does not answer on 127.0.0.1:5672 (or rabbitmqctl fails)")
        pytest.skip("needs the local RabbitMQ and rabbitmqctl")
    return "rabbitmq"


def _assert_nothing_lost(result: dict[str, Any]) -> None:
    assert result["lost"] == 0, result
    assert result["records"] + sum(result["dead_letters"].values()) == result["jobs"], result
    assert result["worker_exits"] == {}, result


def test_sigkill_of_llm_pool_children_loses_nothing() -> None:
    result = chaos.kill_llm_children(jobs=40, kills=3)
    _assert_nothing_lost(result)
    assert result["records"] == result["jobs"], "a killed child's job runs again and succeeds"
    assert result["double_billed"] <= result["kills"], result


def test_a_killed_worker_s_jobs_run_again_within_two_minutes() -> None:
    result = chaos.kill_whole_worker(jobs=30)
    _assert_nothing_lost(result)
    assert result["records"] == result["jobs"]
    assert result["recover_s"] < 120, result
    llm_concurrency = chaos.DEFAULT_WORKERS[1].concurrency
    assert result["double_billed"] <= llm_concurrency, "only calls in flight at the kill are made again"
    assert result["re_executed"] == 0, "no job completed a stage twice"


def test_redis_restart_with_aof_loses_nothing_and_no_worker_exits() -> None:
    result = chaos.redis_restart(jobs=40, timeout=180, reconcile_after_s=90)
    _assert_nothing_lost(result)


def test_redis_without_persistence_is_reported_by_every_worker() -> None:
    result = chaos.redis_without_persistence()
    assert result["detected"], result


def test_a_finished_job_delivered_again_runs_no_stage_and_bills_nothing() -> None:
    result = chaos.record_delivered_twice(jobs=6)
    _assert_nothing_lost(result)
    assert result["upstream_calls_after_redelivery"] == 0, result
    counts = result["batch_counts"]
    assert (counts["submitted"], counts["succeeded"], counts.get("failed", 0)) == (6, 6, 0), result
    assert counts["llm_calls"] == 6, "one call per job on the batch's bill, none for the redeliveries"
    assert result["statuses_after"] == ["succeeded"], result
    assert result["workers_that_skipped"] >= 1, result


def test_calls_longer_than_the_broker_lease_are_not_handed_to_a_second_worker() -> None:
    result = chaos.long_calls_outlive_the_lease(jobs=8)
    _assert_nothing_lost(result)
    assert result["double_billed"] == 0 and result["re_executed"] == 0, result


def test_jobs_whose_messages_the_broker_forgot_are_brought_back_by_reconcile() -> None:
    result = chaos.lost_messages_reconciled(jobs=10)
    assert result["messages_purged"] == 10 and result["requeued_by_reconcile"] == 10, result
    _assert_nothing_lost(result)
    assert result["records"] == 10 and result["double_billed"] == 0 and result["re_executed"] == 0, result


def test_a_job_that_kills_its_worker_every_time_stops_at_the_delivery_limit() -> None:
    """Redis keeps no delivery count: the state store counts deliveries per message."""
    result = chaos.job_of_death(good_jobs=3)
    _assert_nothing_lost(result)
    assert result["dead_letters"] == {"delivery_limit": 1} and result["records"] == 3, result
    assert result["kills"] == 5, "one delivery per CONVEYOR_BROKER_DELIVERY_LIMIT (5), then the letter"
    assert result["double_billed"] <= result["kills"], result


# --- the same faults on the RabbitMQ broker (quorum queues) ------------------------------------
def test_rabbitmq_a_killed_worker_s_jobs_come_back_at_once(rabbitmq: str) -> None:
    result = chaos.kill_whole_worker(broker=rabbitmq, jobs=30)
    _assert_nothing_lost(result)
    assert result["records"] == result["jobs"] and result["re_executed"] == 0, result
    assert result["recover_s"] < 120, result
    assert result["double_billed"] <= chaos.DEFAULT_WORKERS[1].concurrency, result


def test_rabbitmq_dropping_every_connection_loses_nothing(rabbitmq: str) -> None:
    result = chaos.broker_drops_connections(broker=rabbitmq, jobs=40, drops=2)
    _assert_nothing_lost(result)
    assert result["records"] == result["jobs"], result


def test_rabbitmq_poison_messages_are_dead_lettered_each_with_its_class(rabbitmq: str) -> None:
    result = chaos.poison_messages(broker=rabbitmq, good_jobs=4)
    _assert_nothing_lost(result)
    assert result["wrong_class"] == {} and result["same_worker_pids"], result
    assert result["records"] == 4, result


def test_rabbitmq_job_of_death_is_stopped_by_the_quorum_queue_delivery_count(rabbitmq: str) -> None:
    result = chaos.job_of_death(broker=rabbitmq, good_jobs=3)
    _assert_nothing_lost(result)
    assert result["dead_letters"] == {"delivery_limit": 1} and result["records"] == 3, result
    assert result["kills"] == 5, result


def test_rabbitmq_replay_while_the_broker_is_down_changes_nothing_then_succeeds(rabbitmq: str) -> None:
    result = chaos.replay_while_broker_down(broker=rabbitmq, jobs=3)
    assert result["rejected_first"] == 3, result
    assert result["replay_down_exit"] != 0 and "stay open" in result["replay_down_error"], result
    assert (result["letters_open_after_failed_replay"], result["jobs_failed_after_failed_replay"]) == (3, 3), result
    assert result["replay_up_exit"] == 0 and result["records"] == 3 and result["lost"] == 0, result
