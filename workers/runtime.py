"""Per-process wiring between a Celery app and Conveyor's settings and components.

The components live on the app object itself, tagged with the pid that built them: a
forked child sees a different pid and builds its own, and two apps in one process (tests,
an embedded runtime started twice) can never share or inherit each other's clients. Every
process's components report their LLM calls to the worker's metrics (``workers/metrics.py``).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from pipeline.settings import Settings, load_settings

if TYPE_CHECKING:  # imported when components are built: a producer never loads the stages
    from pipeline.wiring import Components

_lock = threading.Lock()
_ATTR = "_conveyor_components"


def bind_settings(app: Any, settings: Settings) -> None:
    """Attach explicit settings to an app (embedded runtime, tests); else the env is read lazily."""
    app.conveyor_settings = settings


def settings_for(app: Any) -> Settings:
    settings = getattr(app, "conveyor_settings", None)
    if settings is None:
        settings = load_settings()
        app.conveyor_settings = settings
    return settings


def components_for(app: Any) -> Components:
    """The app's components in this process; rebuilt after a fork because the pid changed."""
    pid = os.getpid()
    entry = getattr(app, _ATTR, None)
    if entry is None or entry[0] != pid:
        with _lock:
            entry = getattr(app, _ATTR, None)
            if entry is None or entry[0] != pid:
                entry = (pid, _components(settings_for(app)))
                setattr(app, _ATTR, entry)
    components: Components = entry[1]
    return components


def _components(settings: Settings) -> Components:
    from pipeline.wiring import Components
    from workers.metrics import LLMMetrics  # here, not at import: see workers/exporter.py

    return Components(settings, observer=LLMMetrics([settings.llm_model, *settings.llm_fallback_models]))


def release_components(app: Any) -> None:
    with _lock:
        entry = getattr(app, _ATTR, None)
        if entry is not None:
            delattr(app, _ATTR)
    if entry is not None and entry[0] == os.getpid():
        entry[1].close()
