"""Stage 1: what does the request want? Embeds the request once; retrieval reuses the vector."""

from __future__ import annotations

from typing import TYPE_CHECKING

from schemas import Intent, IntentResult, JobRequest

if TYPE_CHECKING:
    from pipeline.resources import Resources


def run_intent(request: JobRequest, res: Resources) -> IntentResult:
    vector = res.embedder.embed_one(request.text) if request.text else None
    if request.intent_hint is not None:
        intent, confidence, method = request.intent_hint, 1.0, "hint"
    elif vector is None:
        # a bare document reference with no instruction: summarising it is the only sensible reading
        intent, confidence, method = Intent.summarize, 1.0, "document-only"
    else:
        prediction = res.intent_classifier.classify_vector(vector)
        intent, confidence, method = Intent(prediction.intent), prediction.confidence, prediction.method
    return IntentResult(
        request=request,
        intent=intent,
        intent_confidence=round(min(max(float(confidence), 0.0), 1.0), 4),
        intent_method=method,
        query_embedding=[round(float(x), 6) for x in vector] if vector is not None else None,
    )
