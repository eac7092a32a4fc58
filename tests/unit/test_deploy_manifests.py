"""docker-compose.yml and k8s/ cannot be started here (no Docker engine); they are validated:
every queue has a consumer, every command line parses with the real CLI, every setting is a
real setting and valid as a whole, secrets only come from secret stores, Flower has auth; every
manifest is valid against the Kubernetes schemas (kubernetes-validate, offline) and KEDA's CRDs
(vendored under tests/schemas/keda), scaling, shutdown, probes, Redis and the network policy hold
together, the image installs pinned versions, and the Grafana dashboard queries real metrics."""

from __future__ import annotations

import copy
import fnmatch
import functools
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from pipeline.settings import SECRET_SETTINGS, Settings, load_settings
from schemas import QUEUES
from tests.conftest import REPO
from workers.cli import main
from workers.metrics import exported_metrics

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
    config = next(d for d in _k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "conveyor-config")
    config = config["data"]
    assert set(config) <= KNOWN
    assert not set(config) & SECRET_SETTINGS, "secrets belong in the Secret, not the ConfigMap"
    for key, value in config.items():
        monkeypatch.setenv(key, str(value))
    for d in _k8s_docs():
        for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for e in c.get("env", []):
                if e["name"].startswith("CONVEYOR_"):
                    assert e["name"] in KNOWN, f"{d['metadata']['name']}: {e['name']} is not a setting"
                    assert "value" not in e or e["name"] not in SECRET_SETTINGS
                    if "value" in e:  # as Kubernetes expands it
                        monkeypatch.setenv(e["name"], e["value"].replace("$(REDIS_PASSWORD)", "0123abcd"))
    settings = load_settings()
    assert settings.broker_url and settings.store_url
    for d in _k8s_docs():
        if d["kind"] == "Deployment" and any(c["args"][0] == "worker" for c in _containers(d)):
            grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert grace > settings.task_time_limit_s, f"{d['metadata']['name']} is killed mid-task on shutdown"


#: variables in the compose file that are not Conveyor settings
COMPOSE_OTHER_ENV = {"REMAP_SIGTERM"}


def test_compose_settings_are_known_and_hold_no_secret_values() -> None:
    for service in _compose()["services"].values():
        env = service.get("environment", {})
        assert {k for k in env if k.startswith("CONVEYOR_")} <= KNOWN
        assert {k for k in env if not k.startswith("CONVEYOR_")} <= COMPOSE_OTHER_ENV
        assert not set(env) & SECRET_SETTINGS, "secrets come from .env, never from the compose file"


def test_compose_uses_syntax_older_compose_accepts() -> None:
    """`env_file` entries as mappings (`path:`, `required:`) need Compose >= 2.24."""
    for name, service in _compose()["services"].items():
        env_file = service.get("env_file", [])
        assert all(isinstance(entry, str) for entry in ([env_file] if isinstance(env_file, str) else env_file)), name


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
    assert "USER conveyor" in dockerfile
    assert re.search(r"^RUN pip install '\.\[worker\]' -c constraints\.txt", dockerfile, re.M), \
        "install the worker extra at the pinned versions"
    assert re.search(r"^COPY .*\bconstraints\.txt\b", dockerfile, re.M)
    assert Path(REPO / "k8s" / "Dockerfile").name in _compose()["x-conveyor"]["build"]["dockerfile"]


# --- schemas: every manifest is a valid Kubernetes / KEDA object -------------------------------
#: validated against this Kubernetes version's schemas (kubernetes-validate ships them) ...
K8S_VERSION = "1.32"
#: ... and KEDA's CRDs (openAPIV3Schema vendored from KEDA v2.20.2, tests/schemas/keda/NOTICE)
KEDA_SCHEMAS = REPO / "tests" / "schemas" / "keda"
MANIFESTS = sorted(p.name for p in (REPO / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")


def _manifest_docs() -> list[tuple[str, dict[str, Any]]]:
    return [(name, d) for name in MANIFESTS for d in yaml.safe_load_all((REPO / "k8s" / name).read_text()) if d]


def _strict(schema: Any) -> Any:
    """The CRD schema as the API server's strict field validation applies it (kubectl's default since
    1.27): an object with declared properties takes no others, unless it preserves unknown fields."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def _keda_validator(kind: str) -> jsonschema.protocols.Validator:
    schema = _strict(json.loads((KEDA_SCHEMAS / f"{kind.lower()}-keda.sh-v1alpha1.json").read_text()))
    return jsonschema.Draft202012Validator(schema)


def _validate(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError (or SchemaNotFoundError) unless the object is valid."""
    if doc["apiVersion"] == "keda.sh/v1alpha1":
        _keda_validator(doc["kind"]).validate(doc)
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize(("name", "index"), [(n, i) for n in MANIFESTS
                                             for i, _ in enumerate(d for m, d in _manifest_docs() if m == n)])
def test_every_manifest_is_valid_against_the_kubernetes_and_keda_schemas(name: str, index: int) -> None:
    doc = [d for m, d in _manifest_docs() if m == name][index]
    _validate(doc)


def _doc(kind: str, name: str) -> dict[str, Any]:
    return copy.deepcopy(next(d for _, d in _manifest_docs() if d["kind"] == kind and d["metadata"]["name"] == name))


def _break_deployment_replicas(d: dict[str, Any]) -> None:
    d["spec"]["replicas"] = "two"


def _break_container_field(d: dict[str, Any]) -> None:
    d["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"


def _break_probe(d: dict[str, Any]) -> None:
    d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]["command"] = "celery inspect ping"


def _break_scaledobject_field(d: dict[str, Any]) -> None:
    d["spec"]["minReplicas"] = 1


def _break_trigger_metadata_type(d: dict[str, Any]) -> None:
    d["spec"]["triggers"][0]["metadata"]["listLength"] = 32


def _break_trigger_without_type(d: dict[str, Any]) -> None:
    del d["spec"]["triggers"][0]["type"]


def _break_secret_ref(d: dict[str, Any]) -> None:
    del d["spec"]["secretTargetRef"][0]["key"]


def _break_networkpolicy_port(d: dict[str, Any]) -> None:
    d["spec"]["ingress"][0]["ports"][0]["protocol"] = ["TCP"]


@pytest.mark.parametrize(("kind", "name", "breakage"), [
    ("Deployment", "conveyor-worker-llm", _break_deployment_replicas),
    ("Deployment", "conveyor-worker-front", _break_container_field),
    ("Deployment", "conveyor-worker-back", _break_probe),
    ("StatefulSet", "redis", _break_container_field),
    ("ScaledObject", "conveyor-worker-llm", _break_scaledobject_field),
    ("ScaledObject", "conveyor-worker-front", _break_trigger_metadata_type),
    ("ScaledObject", "conveyor-worker-back", _break_trigger_without_type),
    ("TriggerAuthentication", "conveyor-redis", _break_secret_ref),
    ("NetworkPolicy", "redis", _break_networkpolicy_port),
])
def test_a_broken_manifest_fails_validation(kind: str, name: str, breakage: Callable[[dict[str, Any]], None]) -> None:
    doc = _doc(kind, name)
    _validate(doc)
    breakage(doc)
    with pytest.raises(jsonschema.ValidationError):
        _validate(doc)


# --- KEDA: one ScaledObject per worker family, on its queues ----------------------------------
#: trigger metadata the Redis scaler reads (KEDA v2.20.2 pkg/scalers/redis_scaler.go)
REDIS_SCALER_METADATA = {"address", "addresses", "host", "hosts", "port", "ports", "username", "password",
                         "listName", "listLength", "activationListLength", "databaseIndex", "enableTLS",
                         "unsafeSsl", "sentinelUsername", "sentinelPassword", "sentinelMaster"}


def _namespace() -> str:
    namespace: str = yaml.safe_load((REPO / "k8s" / "kustomization.yaml").read_text())["namespace"]
    return namespace


def _worker_deployments() -> list[dict[str, Any]]:
    return [d for d in _k8s_docs() if d["kind"] == "Deployment" and _containers(d)[0]["args"][0] == "worker"]


def test_every_worker_family_scales_on_the_length_of_exactly_its_queues() -> None:
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in _k8s_docs() if d["kind"] == "ScaledObject"}
    auths = {d["metadata"]["name"]: d for d in _k8s_docs() if d["kind"] == "TriggerAuthentication"}
    workers = _worker_deployments()
    assert set(scaled) == {d["metadata"]["name"] for d in workers}
    for deployment in workers:
        so = scaled[deployment["metadata"]["name"]]["spec"]
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
        assert so["minReplicaCount"] >= 1, "unacked messages of a dead worker need a live worker to come back"
        assert so["maxReplicaCount"] > so["minReplicaCount"]
        queues = _queues_of(_containers(deployment)[0]["args"])
        assert {t["metadata"]["listName"] for t in so["triggers"]} == queues
        for trigger in so["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "redis" and set(meta) <= REDIS_SCALER_METADATA
            assert int(meta["listLength"]) >= 1 and meta["databaseIndex"] == "0"  # the broker URL's /0
            assert meta["address"] == f"redis.{_namespace()}.svc.cluster.local:6379"
            assert "password" not in meta, "the password comes from the Secret via TriggerAuthentication"
            refs = auths[trigger["authenticationRef"]["name"]]["spec"]["secretTargetRef"]
            assert {"parameter": "password", "name": "conveyor-redis", "key": "password"} in refs


def test_queues_have_no_priority_lists_that_the_scaler_would_miss() -> None:
    """kombu puts priority messages into extra lists (``queue\\x06\\x163`` ...); the triggers count the
    plain list only, which is all of a queue as long as Conveyor sets no priorities."""
    from workers.app import celery_config

    config = celery_config(load_settings(broker_url="redis://redis:6379/0"))
    assert all(q.max_priority is None for q in config["task_queues"])
    assert not {k for k in config if "priority" in k}


def test_broker_url_db_matches_the_scalers_database_index() -> None:
    for d in _k8s_docs():
        for c in _containers_of_any(d):
            for e in c.get("env", []):
                if e["name"] == "CONVEYOR_BROKER_URL":
                    assert e["value"].endswith("@redis:6379/0")


# --- shutdown and probes ----------------------------------------------------------------------
SHUTDOWN_MARGIN_S = 30  # cancel, requeue, close the connection after the soft window


def _extra_config(args: list[str]) -> dict[str, Any]:
    """What `celery worker` makes of the trailing KEY=VALUE arguments `conveyor worker` passes on."""
    from workers.app import create_app

    app = create_app(load_settings(broker_url="redis://redis:6379/0"))
    app.config_from_cmdline([a for a in args if "=" in a and not a.startswith("-")], namespace="worker")
    return {"worker_soft_shutdown_timeout": app.conf.worker_soft_shutdown_timeout}


def _time_limit() -> int:
    config = next(d for d in _k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "conveyor-config")
    return int(config["data"].get("CONVEYOR_TASK_TIME_LIMIT_S", Settings.model_fields["task_time_limit_s"].default))


def test_scale_down_lets_running_tasks_finish() -> None:
    for d in _worker_deployments():
        container = _containers(d)[0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["REMAP_SIGTERM"] == "SIGQUIT", "SIGTERM must start Celery's soft shutdown"
        soft = _extra_config(container["args"])["worker_soft_shutdown_timeout"]
        assert soft > 0, f"{d['metadata']['name']}: no worker_soft_shutdown_timeout"
        grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= max(soft, _time_limit()) + SHUTDOWN_MARGIN_S, d["metadata"]["name"]
        if "llm" in _queues_of(container["args"]):
            assert soft >= _time_limit(), "a running LLM call must fit the soft window"


def test_compose_stops_workers_as_gently_as_kubernetes() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        command = service.get("command", [])
        if command[:1] != ["worker"]:
            continue
        assert service["environment"]["REMAP_SIGTERM"] == "SIGQUIT"
        soft = _extra_config(command)["worker_soft_shutdown_timeout"]
        grace = int(str(service["stop_grace_period"]).rstrip("s"))
        assert soft > 0 and grace >= max(soft, _time_limit()) + SHUTDOWN_MARGIN_S, name


def test_worker_probes_ping_this_pods_own_node() -> None:
    for d in _worker_deployments():
        container = _containers(d)[0]
        args = container["args"]
        node = args[args.index("-n") + 1].replace("%h", '"$HOSTNAME"')
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container[probe]
            command = spec["exec"]["command"]
            assert command[:2] == ["sh", "-c"] and f"inspect ping -d {node} -t " in command[2]
            assert command[2].startswith("celery -A workers.app ")
            reply_timeout = int(command[2].rsplit("-t ", 1)[1].split()[0])
            assert spec["timeoutSeconds"] > reply_timeout


# --- secrets and Redis --------------------------------------------------------------------------
def _containers_of_any(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    containers: list[dict[str, Any]] = spec.get("containers", [])
    return containers


def test_urls_with_the_redis_password_are_built_from_the_secret() -> None:
    seen = 0
    for d in _k8s_docs():
        for c in _containers_of_any(d):
            env = c.get("env", [])
            from_secret = {e["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
            for i, e in enumerate(env):
                if e["name"] not in ("CONVEYOR_BROKER_URL", "CONVEYOR_REDIS_URL"):
                    continue
                seen += 1
                if "valueFrom" in e:
                    assert "secretKeyRef" in e["valueFrom"]
                    continue
                scheme, rest = e["value"].split("://", 1)
                password = rest.split("@", 1)[0].lstrip(":")
                assert password.startswith("$(") and password.endswith(")"), f"{d['metadata']['name']}: literal"
                # Kubernetes expands $(VAR) only from variables defined earlier in the list
                assert password[2:-1] in from_secret & {x["name"] for x in env[:i]}
    assert seen >= len(_worker_deployments()) + 1  # workers, Flower, the ingest Job
    for d in _k8s_docs():
        if d["kind"] == "ConfigMap":
            assert not any("@" in str(v) and "://" in str(v) for v in d["data"].values()), "credentials in a ConfigMap"


def test_redis_keeps_every_write_evicts_nothing_and_wants_the_password() -> None:
    redis_conf = next(d for d in _k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "redis-config")
    lines = {tuple(line.split(None, 1)) for line in redis_conf["data"]["redis.conf"].splitlines() if line.strip()}
    assert {("appendonly", "yes"), ("maxmemory-policy", "noeviction"), ("appendfsync", "everysec")} <= lines
    sts = next(d for d in _k8s_docs() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "redis")
    container = _containers(sts)[0]
    env = {e["name"]: e for e in container["env"]}
    assert env["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"] == {"name": "conveyor-redis", "key": "password"}
    script = " ".join(container["command"] + container["args"])
    assert "requirepass" in script and '"$REDISCLI_AUTH"' in script
    assert ("include", redis_conf["data"]["redis.conf"].split("include ")[1].split()[0]) in lines
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    command = _compose()["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction" and "--appendonly" in command


# --- network policy -----------------------------------------------------------------------------
def _labels(doc: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = doc["spec"]["template"]["metadata"]["labels"]
    return labels


def test_network_policy_admits_only_conveyor_pods_and_keda_to_redis() -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in _k8s_docs() if d["kind"] == "NetworkPolicy"}
    conveyor_selector = policies["conveyor-pods"]["podSelector"]["matchLabels"]
    for d in _k8s_docs():
        if any(c["image"] == "conveyor:latest" for c in _containers_of_any(d)):
            assert conveyor_selector.items() <= _labels(d).items(), f"{d['metadata']['name']} is cut off"
    (redis_rule,) = policies["redis"]["ingress"]
    peers = redis_rule["from"]
    assert {"podSelector": {"matchLabels": conveyor_selector}} in peers
    keda = [p for p in peers if "namespaceSelector" in p]
    assert len(peers) == 2 and keda and keda[0]["podSelector"], "KEDA's operator only, not its whole namespace"
    (metrics_rule,) = policies["conveyor-pods"]["ingress"]  # the workers' /metrics, nothing else
    assert metrics_rule == {"from": [{"podSelector": {}}], "ports": [{"port": 9100, "protocol": "TCP"}]}
    (flower_rule,) = policies["conveyor-flower"]["ingress"]
    assert flower_rule["from"] == [{"podSelector": {}}], "Flower: this namespace only"
    egress_ports = {p["port"] for rule in policies["conveyor-pods"]["egress"] for p in rule["ports"]}
    assert {6379, 6333, 53, 443} == egress_ports


def test_every_worker_serves_metrics_on_the_port_it_declares_and_prometheus_is_told() -> None:
    workers = [d for d in _k8s_docs()
               if d["kind"] == "Deployment" and d["metadata"]["name"].startswith("conveyor-worker")]
    assert len(workers) == 3
    for d in workers:
        (container,) = d["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        port = int(args[args.index("--metrics-port") + 1])
        assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", str(port))


# --- kustomize, the ingest Job, the image ------------------------------------------------------
def test_kustomization_lists_every_manifest_and_overrides_the_conveyor_image() -> None:
    kustomization = yaml.safe_load((REPO / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == MANIFESTS
    (image,) = kustomization["images"]
    images = {c["image"] for d in _k8s_docs() for c in _containers_of_any(d)}
    assert f"{image['name']}:latest" in images
    assert {i.split(":")[0] for i in images} - {"redis", "qdrant/qdrant"} == {image["name"]}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) not installed")
def test_kustomize_builds_and_sets_the_image(tmp_path: Path) -> None:
    work = tmp_path / "k8s"
    shutil.copytree(REPO / "k8s", work)
    path = work / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    kustomization["images"] = [{"name": "conveyor", "newName": "registry.example.com/conveyor", "newTag": "1.2.3"}]
    path.write_text(yaml.safe_dump(kustomization))
    out = subprocess.run(["kubectl", "kustomize", str(work)], capture_output=True, text=True, timeout=60, check=True)
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    images = {c["image"] for d in built for c in _containers_of_any(d)}
    assert "registry.example.com/conveyor:1.2.3" in images and "conveyor:latest" not in images
    assert {d["metadata"].get("namespace") for d in built} == {_namespace()}


def test_ingest_job_runs_the_real_ingest_command(tmp_path: Path) -> None:
    job = next(d for d in _k8s_docs() if d["kind"] == "Job")
    container = _containers(job)[0]
    args = container["args"]
    assert args[:2] == ["ingest", "/docs"]
    assert {"name": "docs", "mountPath": "/docs", "readOnly": True} in container["volumeMounts"]
    _parses([str(tmp_path) if a == "/docs" else a for a in args])
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def _docker_ignores(path: str, pattern: str) -> bool:
    """Docker's rule: the pattern matches the path or one of its parent folders, `*` within one segment."""
    parts, wanted = path.split("/"), pattern.split("/")
    return any(all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts[:n], wanted, strict=True))
               for n in range(1, len(parts) + 1) if n == len(wanted))


def test_dockerignore_keeps_the_venv_out_and_what_the_image_copies_in() -> None:
    patterns = [line.strip().lstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in (".venv", ".git", ".env", ".conveyor", "**/__pycache__"):
        assert needed in patterns
    copied = ["pyproject.toml", "README.md", "constraints.txt", "schemas", "pipeline", "workers",
              "schemas/json/job_request.schema.json"]
    for path in copied:
        assert not any(_docker_ignores(path, p) for p in patterns if not p.startswith("**")), path
    assert not any(p.endswith(".json") and p.startswith("**") for p in patterns), "schemas/json ships in the image"


# --- pinned dependencies -----------------------------------------------------------------------
def _pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_constraints_pin_every_runtime_dependency_within_its_specifier() -> None:
    from scripts.constraints import PINNED_EXTRAS

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _pins()
    extras = project["optional-dependencies"]
    for spec in [*project["dependencies"], *(r for name in PINNED_EXTRAS for r in extras[name])]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in constraints.txt: run scripts/constraints.py"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {spec}"


def test_constraints_pin_what_the_runtime_dependencies_pull_in() -> None:
    from scripts.constraints import closure, extra_requirements, runtime_requirements

    missing = set(closure(runtime_requirements() + extra_requirements())) - set(_pins()) - {"conveyor"}
    assert not missing, f"not pinned (run scripts/constraints.py): {sorted(missing)}"


# --- Grafana ------------------------------------------------------------------------------------
#: the metrics the workers export (issue #12, item 1): name -> (type, labels), read from the exporter's
#: own table (workers/metrics.py SPEC; tests/unit/test_metrics.py checks the served exposition against it)
METRICS: dict[str, tuple[str, set[str]]] = dict(exported_metrics())
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def _metric_problems(expr: str) -> list[str]:
    """Series that no worker exports, and labels those series do not carry."""
    problems = []
    labels: set[str] = set()
    for series in re.findall(r"\bconveyor_[a-z_]+", expr):
        base = next((series.removesuffix(s) for s in _HISTOGRAM_SERIES if series.endswith(s)), series)
        if base in METRICS and METRICS[base][0] == "histogram" and base != series:
            labels |= METRICS[base][1] | {"le"}
        elif series in METRICS and METRICS[series][0] != "histogram":
            labels |= METRICS[series][1]
        else:
            problems.append(f"unknown series {series}")
    used = {label.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr) for label in group.split(",")}
    used |= set(re.findall(r"[{,]\s*([a-z_]+)\s*=~?", expr))
    problems += [f"label {label} not on {expr}" for label in sorted(used - labels)]
    return problems


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((REPO / "k8s" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_grafana_dashboard_queries_only_exported_metrics_and_labels() -> None:
    exprs = _dashboard_exprs()
    assert exprs and all(not _metric_problems(e) for e in exprs), [p for e in exprs for p in _metric_problems(e)]
    queried = {re.sub(r"_(bucket|sum|count)$", "", s) for e in exprs for s in re.findall(r"\bconveyor_[a-z_]+", e)}
    assert queried == set(METRICS), f"not on the dashboard: {set(METRICS) - queried}"


@pytest.mark.parametrize("expr", [
    "sum(rate(conveyor_jobs_count[5m]))",  # not a histogram
    "sum by (tenant) (rate(conveyor_llm_calls_total[5m]))",  # no such label
    "histogram_quantile(0.9, rate(conveyor_queue_depth_bucket[5m]))",  # a gauge
])
def test_the_dashboard_check_catches_a_wrong_query(expr: str) -> None:
    assert _metric_problems(expr)
