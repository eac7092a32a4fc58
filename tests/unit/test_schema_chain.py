"""Typed edges: the output of stage N is the input of stage N+1; exports are current."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas import STAGE_MODELS, STAGES, JobRequest
from schemas.export import JSON_DIR, render_all


def test_every_stage_has_models_in_pipeline_order() -> None:
    assert tuple(STAGE_MODELS) == STAGES


@pytest.mark.parametrize("upstream, downstream", list(zip(STAGES, STAGES[1:], strict=False)))
def test_output_of_stage_is_input_of_next(upstream: str, downstream: str) -> None:
    _, produced = STAGE_MODELS[upstream]
    consumed, _ = STAGE_MODELS[downstream]
    assert produced is consumed, (
        f"{upstream} produces {produced.__name__}, {downstream} takes {consumed.__name__}"
    )


def test_stage_messages_extend_each_other() -> None:
    """Each message keeps everything the earlier stages decided."""
    outputs = [STAGE_MODELS[s][1] for s in STAGES[:-1]]
    for earlier, later in zip(outputs, outputs[1:], strict=False):
        assert set(earlier.model_fields) <= set(later.model_fields)


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
