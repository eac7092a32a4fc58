"""Injection verdicts for stored chunks: computed once, at ingest, and kept with the chunk.

Scoring a chunk means embedding each of its sentences and windows, which cost a first-time
summary up to seconds in ``retrieve``. Ingest already holds the document and embeds in
batches, so it scores new chunks there and the vector store keeps the verdict in the chunk's
payload. ``retrieve`` trusts a stored verdict only when the same detector made it: the version
is a digest of the model's weights and the detector's code, so a new model or new rules
re-score on the next read instead of serving stale verdicts.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.guard import cues, injection


@functools.cache
def detector_version() -> str:
    """Digest of what decides a verdict: the detector's code (rules and the model's cues) and, when it
    loads, the model's weights."""
    digest = hashlib.sha256(Path(injection.__file__).read_bytes())
    digest.update(Path(cues.__file__).read_bytes())
    if injection.default_detector() is not None:
        digest.update(injection.default_model_path().read_bytes())
    else:
        digest.update(b"rules-only")
    return digest.hexdigest()[:16]


def screen(texts: Sequence[str], embedded: tuple[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """The verdict of each text, as stored in a chunk's payload (``flagged``, ``score``, ``version``).

    ``embedded`` = (model id, the texts' embeddings): ingest has just embedded the chunks, and with the
    detector's own model a chunk's vector is reused for its whole-text unit instead of embedded again."""
    version = detector_version()
    return [{"flagged": r.flagged, "score": r.score, "version": version}
            for r in injection.detect_injection_many(texts, embedded=embedded)]


def flagged(texts: Sequence[str], stored: Sequence[dict[str, Any] | None]) -> list[bool]:
    """Whether each text carries injected instructions: its stored verdict when this detector made
    it, else scored now (all stale or missing texts in one batch)."""
    version = detector_version()
    out: list[bool | None] = [
        bool(verdict["flagged"]) if verdict and verdict.get("version") == version else None for verdict in stored
    ]
    todo = [i for i, known in enumerate(out) if known is None]
    if todo:
        for i, verdict in zip(todo, screen([texts[i] for i in todo]), strict=True):
            out[i] = verdict["flagged"]
    return [bool(value) for value in out]
