"""Stage 2: the context the model needs, from Qdrant, within a token budget."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import InvalidInput
from pipeline.generation.llm.tokens import count_tokens
from pipeline.guard import detect_injection
from pipeline.retrieval.context import retrieve_context
from schemas import ContextChunk, Intent, IntentResult, RetrievalResult

if TYPE_CHECKING:
    from pipeline.resources import Resources


def run_retrieve(msg: IntentResult, res: Resources) -> RetrievalResult:
    req = msg.request
    store = res.vector_store
    if req.document_id and not store.has_document(req.tenant, req.document_id):
        raise InvalidInput(
            f"document {req.document_id!r} is not ingested for tenant {req.tenant!r}; "
            "ingest it (`conveyor ingest PATH --tenant ...`) and replay the job"
        )
    s = res.settings
    vector = np.asarray(msg.query_embedding, dtype=np.float32) if msg.query_embedding is not None else None
    if vector is None and not req.document_id:
        raise InvalidInput("nothing to retrieve: the request has neither text nor a document_id")
    hits = retrieve_context(
        store,
        query_vector=vector,
        intent=msg.intent.value,
        tenant=req.tenant,
        doc_id=req.document_id,
        k=req.params.top_k or s.retrieve_top_k,
        score_threshold=s.retrieve_score_threshold,
        token_budget=s.context_token_budget,
        count_tokens=lambda text: count_tokens(text, s.llm_model),
    )
    chunks = [
        ContextChunk(chunk_id=h.chunk_id, doc_id=h.doc_id, section=h.section, text=h.text, score=h.score)
        for h in hits
    ]
    quarantined: list[str] = []
    if s.guard_policy_for(req.tenant).quarantine_chunks:
        # retrieved text is untrusted input too: chunks carrying instructions never reach the prompt
        quarantined = [c.chunk_id for c in chunks if detect_injection(c.text).flagged]
        chunks = [c for c in chunks if c.chunk_id not in quarantined]
    strategy = "document-coverage" if msg.intent == Intent.summarize and req.document_id else "top-k"
    return RetrievalResult(**dict(msg), chunks=chunks, retrieval_strategy=strategy, quarantined_chunks=quarantined)
