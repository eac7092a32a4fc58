"""Pre-ingestion scan of a whole document: injection verdict plus PII locations.

Injection is scored per block of a few hundred words and the document takes the worst
block, so weak signals scattered across a long contract never add up to a false alarm.
This is what ``conveyor guard scan FILE --json`` prints.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.guard.injection import DEFAULT_THRESHOLD, InjectionResult, detect_injection_many
from pipeline.guard.pii import find_pii

#: blocks are cut at line ends and kept under this many words where a line allows.
DEFAULT_BLOCK_WORDS = 250

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def split_blocks(text: str, max_words: int = DEFAULT_BLOCK_WORDS) -> list[tuple[int, int]]:
    """Cut ``text`` into ``(start, end)`` spans of whole lines, each under ``max_words`` words.

    A single line longer than ``max_words`` is cut at sentence ends instead.
    """
    pieces: list[tuple[int, int, int]] = []
    for line in re.finditer(r"[^\n]+", text):
        words = len(line.group(0).split())
        if not words:
            continue
        if words <= max_words:
            pieces.append((line.start(), line.end(), words))
            continue
        pieces.extend(_split_long_line(text, line.start(), line.end()))
    blocks: list[tuple[int, int]] = []
    start = end = count = 0
    for piece_start, piece_end, words in pieces:
        if count and count + words > max_words:
            blocks.append((start, end))
            count = 0
        if not count:
            start = piece_start
        end = piece_end
        count += words
    if count:
        blocks.append((start, end))
    return blocks


def _split_long_line(text: str, start: int, end: int) -> list[tuple[int, int, int]]:
    pieces: list[tuple[int, int, int]] = []
    cursor = start
    for boundary in _SENTENCE_END.finditer(text, start, end):
        pieces.append((cursor, boundary.start(), len(text[cursor : boundary.start()].split())))
        cursor = boundary.end()
    if cursor < end:
        pieces.append((cursor, end, len(text[cursor:end].split())))
    return [piece for piece in pieces if piece[2]]


def scan_text(text: str, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Return ``{"injection", "injection_score", "fired_by", "model_score", "pii", "reasons"}`` for a document.

    Every block goes through the rules and the learned model (each sentence, window and the
    block itself, embedded in one batch); the document takes its worst block.
    """
    score = 0.0
    model_score: float | None = None
    fired: list[str] = []
    reasons: list[str] = []
    blocks = split_blocks(text) or [(0, len(text))]
    for result in detect_injection_many([text[start:end] for start, end in blocks], threshold=threshold):
        score = max(score, result.score)
        if result.model_score is not None:
            model_score = max(model_score or 0.0, result.model_score)
        for part in result.fired_by.split("+") if result.fired_by else []:
            if part not in fired:
                fired.append(part)
        for reason in result.reasons:
            if reason not in reasons:
                reasons.append(reason)
    pii = [{"type": m.type, "start": m.start, "end": m.end} for m in find_pii(text)]
    return {
        "injection": score >= threshold,
        "injection_score": round(score, 4),
        "fired_by": "+".join(sorted(fired)),
        "model_score": model_score,
        "pii": pii,
        "reasons": reasons,
    }


def verdict_json(result: InjectionResult) -> dict[str, Any]:
    """One text's verdict as ``guard scan --jsonl`` prints it."""
    return {
        "injection": result.flagged,
        "score": result.score,
        "fired_by": result.fired_by,
        "model_score": result.model_score,
        "reasons": result.reasons,
    }
