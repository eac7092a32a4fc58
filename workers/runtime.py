"""Per-process wiring between a Celery app and Conveyor's settings and clients."""

from __future__ import annotations

import os
import threading
from typing import Any

from pipeline.resources import Resources
from pipeline.settings import Settings, load_settings

_lock = threading.Lock()
_resources: dict[int, tuple[int, Resources]] = {}  # id(app) -> (pid, resources)


def bind_settings(app: Any, settings: Settings) -> None:
    """Attach explicit settings to an app (embedded runtime, tests); else the env is read lazily."""
    app.conveyor_settings = settings


def settings_for(app: Any) -> Settings:
    settings = getattr(app, "conveyor_settings", None)
    if settings is None:
        settings = load_settings()
        app.conveyor_settings = settings
    return settings


def resources_for(app: Any) -> Resources:
    """The app's clients in this process; rebuilt after a fork because the pid changed."""
    key, pid = id(app), os.getpid()
    entry = _resources.get(key)
    if entry is None or entry[0] != pid:
        with _lock:
            entry = _resources.get(key)
            if entry is None or entry[0] != pid:
                entry = (pid, Resources(settings_for(app)))
                _resources[key] = entry
    return entry[1]


def release_resources(app: Any) -> None:
    with _lock:
        entry = _resources.pop(id(app), None)
    if entry is not None and entry[0] == os.getpid():
        entry[1].close()


def forget_inherited_resources() -> None:
    """Called in a freshly forked child: never use (or close) the parent's sockets."""
    with _lock:
        _resources.clear()
