"""Render every exported model as JSON Schema; ``scripts/export_schemas.py`` writes them."""

from __future__ import annotations

import json
from pathlib import Path

from schemas import EXPORTED_MODELS

JSON_DIR = Path(__file__).parent / "json"


def render_all() -> dict[str, str]:
    """File name -> file text, deterministic so a test can detect stale exports."""
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(mode="validation"), indent=2, sort_keys=True)
        + "\n"
        for name, model in sorted(EXPORTED_MODELS.items())
    }


def write_all(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in render_all().items():
        path = directory / filename
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
