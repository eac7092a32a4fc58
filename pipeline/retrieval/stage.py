"""Stage 2: the context the model needs, from Qdrant, within a token budget."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.errors import InvalidInput
from pipeline.guard import screening
from pipeline.guard.injection import default_detector
from pipeline.guard.policy import TenantPolicies
from pipeline.retrieval.context import document_context, retrieve_context
from pipeline.retrieval.vectorstore import QdrantVectorStore
from schemas import ContextChunk, Intent, IntentResult, RetrievalResult


class RetrieveStage:
    """Look up the job's document (and, for questions, the best chunks); quarantine injected chunks."""

    def __init__(
        self,
        store: QdrantVectorStore,
        *,
        top_k: int,
        score_threshold: float | None,
        token_budget: int,
        count_tokens: Callable[[str], int],
        policies: TenantPolicies,
        max_document_chunks: int = 300,
    ) -> None:
        self.store = store
        self.top_k = top_k
        self.score_threshold = score_threshold
        self.token_budget = token_budget
        self.count_tokens = count_tokens
        self.policies = policies
        self.max_document_chunks = max_document_chunks

    def warm_up(self) -> None:
        self.count_tokens("warm up")  # loads the BPE ranks (about a second)
        default_detector()  # the injection model's weights and embedder (no fitting)

    def __call__(self, msg: IntentResult) -> RetrievalResult:
        req = msg.request
        if req.document_id and not self.store.has_document(req.tenant, req.document_id):
            raise InvalidInput(
                f"document {req.document_id!r} is not ingested for tenant {req.tenant!r}; "
                "ingest it (`conveyor ingest PATH --tenant ...`) and replay the job"
            )
        vector = np.asarray(msg.query_embedding, dtype=np.float32) if msg.query_embedding is not None else None
        if vector is None and not req.document_id:
            raise InvalidInput("nothing to retrieve: the request has neither text nor a document_id")
        whole_document = req.document_id is not None and (msg.intent == Intent.summarize or vector is None)
        document_chunks: int | None = None
        if whole_document:
            assert req.document_id is not None
            hits, document_chunks = document_context(self.store, req.tenant, req.document_id, self.max_document_chunks)
        else:
            hits = retrieve_context(
                self.store,
                query_vector=vector,
                intent=msg.intent.value,
                tenant=req.tenant,
                doc_id=req.document_id,
                k=req.params.top_k or self.top_k,
                score_threshold=self.score_threshold,
                token_budget=self.token_budget,
                count_tokens=self.count_tokens,
            )
        chunks = [
            ContextChunk(chunk_id=h.chunk_id, doc_id=h.doc_id, section=h.section, text=h.text, score=h.score)
            for h in hits
        ]
        quarantined: list[str] = []
        if self.policies.for_tenant(req.tenant).quarantine_chunks:
            # retrieved text is untrusted input too: chunks carrying instructions never reach the prompt
            # (the verdict ingest stored with the chunk; rules + the learned model for chunks without one)
            verdicts = screening.flagged([h.text for h in hits], [h.screen for h in hits])
            quarantined = [c.chunk_id for c, injected in zip(chunks, verdicts, strict=True) if injected]
            chunks = [c for c in chunks if c.chunk_id not in quarantined]
        strategy = "whole-document" if whole_document else "top-k"
        return msg.carry(RetrievalResult, chunks=chunks, retrieval_strategy=strategy, quarantined_chunks=quarantined,
                         document_chunks=document_chunks)
