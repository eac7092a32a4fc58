"""Stage 1: what does the request want? Embeds the request once; later stages reuse the vector."""

from __future__ import annotations

import numpy as np

from pipeline.errors import GuardrailBlocked
from pipeline.guard.injection import default_detector, detect_injection
from pipeline.guard.policy import TenantPolicies
from pipeline.intent.classifier import IntentClassifier
from pipeline.memo import LruMemo, text_key
from pipeline.retrieval.embeddings import Embedder
from pipeline.settings import GuardPolicy
from schemas import Intent, IntentResult, JobRequest


class IntentStage:
    """Screen the request for injected instructions, embed it, classify it.

    The last ``memo_size`` request texts keep their vectors: a batch sends one instruction thousands
    of times, and embedding it was most of this stage's time."""

    def __init__(
        self, embedder: Embedder, classifier: IntentClassifier, policies: TenantPolicies, *, memo_size: int = 1024
    ) -> None:
        self.embedder = embedder
        self.classifier = classifier
        self.policies = policies
        self._vectors: LruMemo[np.ndarray] = LruMemo(memo_size)

    def embed(self, text: str) -> np.ndarray:
        """The request's vector: remembered, or embedded now."""
        key = text_key(text)
        vector = self._vectors.get(key)
        if vector is None:
            vector = self.embedder.embed_one(text)
            self._vectors.put(key, vector)
        return vector

    def warm_up(self) -> None:
        warm = getattr(self.embedder, "warm_up", None)
        if callable(warm):
            warm()
        self.classifier.warm_up()
        default_detector()  # the injection model's weights and embedder (no fitting)

    def __call__(self, request: JobRequest) -> IntentResult:
        flags = screen_request(request, self.policies.for_tenant(request.tenant))
        vector = self.embed(request.text) if request.text else None
        if request.intent_hint is not None:
            intent, confidence, method = request.intent_hint, 1.0, "hint"
        elif vector is None:
            # a bare document reference with no instruction: summarising it is the only sensible reading
            intent, confidence, method = Intent.summarize, 1.0, "document-only"
        else:
            prediction = self.classifier.classify_vector(vector)
            intent, confidence, method = Intent(prediction.intent), prediction.confidence, prediction.method
        return IntentResult(
            request=request,
            intent=intent,
            intent_confidence=round(min(max(float(confidence), 0.0), 1.0), 4),
            intent_method=method,
            query_embedding=[round(float(x), 6) for x in vector] if vector is not None else None,
            request_flags=flags,
        )


def screen_request(request: JobRequest, policy: GuardPolicy) -> list[str]:
    """Injected instructions in the request block the job (or are only recorded, by policy)."""
    if not request.text:
        return []
    found = detect_injection(request.text)
    if not found.flagged:
        return []
    reasons = [f"request injection ({found.score:.2f}, {found.fired_by}): {r}" for r in found.reasons[:3]]
    if policy.injection == "block":
        raise GuardrailBlocked(
            "request blocked: it carries instructions aimed at the model", details={"reasons": reasons}
        )
    return reasons
