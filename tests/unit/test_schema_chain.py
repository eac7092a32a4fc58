"""Typed edges: the stage table's chain, each stage callable's real signature against its spec,
and JSON Schema exports that are current."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.settings import load_settings
from pipeline.wiring import Components
from schemas import PIPELINE, JobRequest, StageMessage, StageSpec
from schemas.export import JSON_DIR, render_all
from schemas.pipeline import stage, stages_from

EDGES = list(zip(PIPELINE, PIPELINE[1:], strict=False))


@pytest.mark.parametrize("upstream, downstream", EDGES, ids=[f"{a.name}->{b.name}" for a, b in EDGES])
def test_output_of_stage_is_input_of_next(upstream: StageSpec, downstream: StageSpec) -> None:
    assert upstream.output is downstream.input, (
        f"{upstream.name} produces {upstream.output.__name__}, {downstream.name} takes {downstream.input.__name__}"
    )


#: edges between stage messages (ingest hands on the bare request, which intent wraps)
MESSAGE_EDGES = [(a, b) for a, b in EDGES if issubclass(a.output, StageMessage) and issubclass(b.output, StageMessage)]


@pytest.mark.parametrize("upstream, downstream", MESSAGE_EDGES, ids=[f"{a.name}->{b.name}" for a, b in MESSAGE_EDGES])
def test_each_message_carries_what_came_before_except_what_a_stage_drops(
    upstream: StageSpec, downstream: StageSpec
) -> None:
    kept = set(upstream.output.model_fields) - set(downstream.drops)
    assert kept <= set(downstream.output.model_fields), kept - set(downstream.output.model_fields)
    assert set(downstream.drops) <= set(upstream.output.model_fields), "a stage drops a field it never got"


@pytest.fixture(scope="module")
def components(tmp_path_factory: pytest.TempPathFactory) -> typing.Iterator[Components]:
    built = Components(load_settings(data_dir=Path(tmp_path_factory.mktemp("wiring"))))
    yield built
    built.close()


@pytest.mark.parametrize("spec", PIPELINE, ids=[s.name for s in PIPELINE])
def test_the_stage_the_workers_run_has_the_signature_of_its_spec(spec: StageSpec, components: Components) -> None:
    """Changing a stage's input or output type without the table fails here."""
    callable_ = components.stage(spec)
    hints = typing.get_type_hints(type(callable_).__call__)
    returns = hints.pop("return")
    assert list(hints.values()) == [spec.input], f"{type(callable_).__name__} takes {hints}, spec says {spec.input}"
    assert returns is spec.output, f"{type(callable_).__name__} returns {returns}, spec says {spec.output}"


def test_stage_lookup_and_the_rest_of_the_chain() -> None:
    assert [s.name for s in stages_from("generate")] == ["generate", "guard", "record"]
    assert stage("generate").queue == "llm"
    assert [s.name for s in stages_from("intent")] == ["intent", "retrieve", "generate", "guard", "record"]
    with pytest.raises(ValueError, match="stages are ingest, intent, retrieve, generate, guard, record"):
        stage("nope")


def test_task_and_queue_names_are_the_public_contract() -> None:
    """Deployments route on these: renaming one is a breaking change, not a refactor."""
    assert [(s.task, s.queue) for s in PIPELINE] == [
        ("conveyor.ingest", "ingest"),
        ("conveyor.intent", "intent"),
        ("conveyor.retrieve", "retrieve"),
        ("conveyor.generate", "llm"),
        ("conveyor.guard", "guard"),
        ("conveyor.record", "record"),
    ]


def test_exported_json_schemas_are_current() -> None:
    expected = render_all()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in JSON_DIR.glob("*.schema.json")}
    assert set(on_disk) == set(expected), "run: python scripts/export_schemas.py"
    stale = [name for name, text in expected.items() if on_disk[name] != text]
    assert not stale, f"stale JSON Schemas {stale}; run: python scripts/export_schemas.py"


def test_job_request_schema_rejects_what_the_model_rejects() -> None:
    schema = json.loads((JSON_DIR / "JobRequest.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert schema["properties"]["text"]["maxLength"] == 20_000


def test_job_request_needs_text_or_document() -> None:
    with pytest.raises(ValidationError, match="needs 'text'"):
        JobRequest()


def test_job_request_rejects_unknown_fields_and_bad_ids() -> None:
    with pytest.raises(ValidationError) as info:
        JobRequest(text="hi", tenant="bad tenant!", colour="blue")  # type: ignore[call-arg]
    fields = {e["loc"][0] for e in info.value.errors()}
    assert fields == {"tenant", "colour"}


def test_idempotency_key_defaults_to_job_id_and_round_trips_as_json() -> None:
    req = JobRequest(text="Summarize this contract.", document_id="nda-1")
    assert req.idempotency_key == req.job_id
    again = JobRequest.model_validate_json(req.model_dump_json())
    assert again == req
