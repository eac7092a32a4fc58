"""Task names and queues: the only thing a producer must know (no Celery app, no imports)."""

from __future__ import annotations

#: stage -> (task name, queue). Producers use these names; they never import the tasks.
STAGE_TASKS: dict[str, tuple[str, str]] = {
    "intent": ("conveyor.intent", "intent"),
    "retrieve": ("conveyor.retrieve", "retrieve"),
    "generate": ("conveyor.generate", "llm"),
    "guard": ("conveyor.guard", "guard"),
    "record": ("conveyor.record", "record"),
}
QUEUES: tuple[str, ...] = tuple(queue for _, queue in STAGE_TASKS.values())
