"""docker-compose.yml and k8s/ cannot be started here (no Docker engine); they are validated:
every queue has a consumer, every command line parses with the real CLI, every setting is a
real setting and valid as a whole, secrets only come from secret stores, Flower has auth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from pipeline.settings import SECRET_SETTINGS, Settings, load_settings
from schemas import QUEUES
from tests.conftest import REPO
from workers.cli import main

KNOWN = {"CONVEYOR_" + name.upper() for name in Settings.model_fields}


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def _k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((REPO / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _queues_of(args: list[str]) -> set[str]:
    return set(args[args.index("-Q") + 1].split(",")) if "-Q" in args else set()


def _parses(args: list[str]) -> None:
    command = main.commands[args[0]]
    with click.Context(main) as parent:
        command.make_context(args[0], list(args[1:]), parent=parent)


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return containers


def test_compose_runs_a_consumer_for_every_queue_with_valid_commands() -> None:
    services = _compose()["services"]
    commands = [s["command"] for s in services.values() if s.get("image") == "conveyor:latest" and "command" in s]
    worker_commands = [c for c in commands if c[0] == "worker"]
    assert set().union(*(_queues_of(c) for c in worker_commands)) == set(QUEUES)
    for command in commands:
        _parses(command)
    assert any(c[0] == "flower" for c in commands)


def test_k8s_runs_a_consumer_for_every_queue_with_valid_commands() -> None:
    deployments = [d for d in _k8s_docs() if d["kind"] == "Deployment"]
    args = [c["args"] for d in deployments for c in _containers(d) if c["image"] == "conveyor:latest"]
    assert set().union(*(_queues_of(a) for a in args if a[0] == "worker")) == set(QUEUES)
    for a in args:
        _parses(a)


def test_k8s_settings_are_known_and_valid_together(monkeypatch: pytest.MonkeyPatch) -> None:
    config = next(d for d in _k8s_docs() if d["kind"] == "ConfigMap")["data"]
    assert set(config) <= KNOWN
    assert not set(config) & SECRET_SETTINGS, "secrets belong in the Secret, not the ConfigMap"
    for key, value in config.items():
        monkeypatch.setenv(key, str(value))
    settings = load_settings()
    for d in _k8s_docs():
        if d["kind"] == "Deployment" and any(c["args"][0] == "worker" for c in _containers(d)):
            grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert grace > settings.task_time_limit_s, f"{d['metadata']['name']} is killed mid-task on shutdown"


def test_compose_settings_are_known_and_hold_no_secret_values() -> None:
    for service in _compose()["services"].values():
        env = service.get("environment", {})
        assert set(env) <= KNOWN
        assert not set(env) & SECRET_SETTINGS, "secrets come from .env, never from the compose file"


def test_flower_only_runs_with_basic_auth_from_a_secret() -> None:
    flower = next(d for d in _k8s_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "conveyor-flower")
    env = {e["name"]: e for e in _containers(flower)[0]["env"]}
    assert "secretKeyRef" in env["CONVEYOR_FLOWER_BASIC_AUTH"]["valueFrom"]


def test_flower_command_refuses_to_start_without_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    monkeypatch.setenv("CONVEYOR_BROKER_URL", "redis://127.0.0.1:1/0")
    result = CliRunner().invoke(main, ["flower"])
    assert result.exit_code != 0 and "without auth" in result.output


def test_image_installs_the_package_and_runs_as_non_root() -> None:
    dockerfile = (REPO / "k8s" / "Dockerfile").read_text()
    assert "pip install ." in dockerfile and "USER conveyor" in dockerfile
    assert Path(REPO / "k8s" / "Dockerfile").name in _compose()["x-conveyor"]["build"]["dockerfile"]
