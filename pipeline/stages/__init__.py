"""The five stages as plain functions: ``fn(input_model, resources) -> output_model``.

No Celery here; ``workers/tasks.py`` wraps each in a thin task, and tests call them directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.generation.stage import run_generate
from pipeline.guard.stage import run_guard
from pipeline.intent.stage import run_intent
from pipeline.record import run_record
from pipeline.retrieval.stage import run_retrieve

#: stage name -> stage function, in pipeline order.
STAGE_FUNCTIONS: dict[str, Callable[[Any, Any], Any]] = {
    "intent": run_intent,
    "retrieve": run_retrieve,
    "generate": run_generate,
    "guard": run_guard,
    "record": run_record,
}

__all__ = ["STAGE_FUNCTIONS", "run_generate", "run_guard", "run_intent", "run_record", "run_retrieve"]
