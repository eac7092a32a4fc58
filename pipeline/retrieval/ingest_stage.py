"""Stage 0 of a batch item: its document, stored by reference, becomes embedded chunks in the vector store.

The client publishes the document's sha256 and keeps the bytes in the state store, so broker
messages stay small and any ingest worker can read them. Chunks the store already holds (same
content, same chunk ids) are not embedded again, so a resubmitted batch pays for changed
documents only. A document that cannot be read fails this item alone (``InvalidInput`` with its
path); the batch goes on. New chunks are screened for injected instructions here, once, and the
verdict is stored with them, so ``retrieve`` does not score them again for every job.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

from pipeline.errors import InvalidInput, ProviderUnavailable
from pipeline.retrieval.embeddings import Embedder
from pipeline.retrieval.ingest import Screen, ingest_text, parse_document
from pipeline.retrieval.vectorstore import VectorStore
from schemas import JobRequest
from schemas.job import IngestRequest

log = logging.getLogger("conveyor.ingest")


class BlobStore(Protocol):
    def get_blob(self, sha256: str) -> bytes | None: ...

    def release_blob(self, sha256: str) -> None: ...


class IngestStage:
    def __init__(self, blobs: BlobStore, store: VectorStore, embedder: Embedder, *, max_tokens: int,
                 overlap: int, screen: Screen | None = None) -> None:
        self.blobs = blobs
        self.screen = screen
        self.store = store
        self.embedder = embedder
        self.max_tokens = max_tokens
        self.overlap = overlap

    def warm_up(self) -> None:
        vectors = self.embedder.embed(["warm up"])
        if self.screen is not None:
            self.screen(["warm up"], (self.embedder.model_id, vectors))  # the injection model and its embedder

    def __call__(self, msg: IngestRequest) -> JobRequest:
        doc, request = msg.document, msg.request
        raw = self.blobs.get_blob(doc.sha256)
        assert request.document_id is not None  # IngestRequest's validator
        if raw is None and self.store.has_document(request.tenant, request.document_id):
            # a redelivery after this stage had run (the bytes are released once ingested): go on
            log.warning("%s: already ingested and its bytes released; not ingested again", doc.name)
            return request
        if raw is None:
            raise InvalidInput(f"{doc.name}: the document's bytes are no longer stored (expired or removed); "
                               "submit the batch again to resend them")
        if hashlib.sha256(raw).hexdigest() != doc.sha256:
            raise ProviderUnavailable(f"{doc.name}: stored bytes do not match their sha256 (a partial write?)")
        text = parse_document(doc.name, raw)
        report = ingest_text(request.document_id, text, tenant=request.tenant, store=self.store,
                             embedder=self.embedder, max_tokens=self.max_tokens, overlap=self.overlap,
                             screen=self.screen)
        log.info("ingested %s: %d chunks (%d embedded, %d unchanged, %d removed)", doc.name,
                 report.added + report.unchanged, report.added, report.unchanged, report.removed)
        self.blobs.release_blob(doc.sha256)
        return request
