"""The ingest stage on its own: bytes by reference in, the job out, the document stored once."""

from __future__ import annotations

import hashlib

import pytest

from pipeline.errors import InvalidInput, ProviderUnavailable
from pipeline.retrieval.ingest_stage import IngestStage
from schemas import JobRequest
from schemas.job import DocumentRef, IngestRequest
from tests.fakes import HashingEmbedder, InMemoryVectorStore

CONTRACT = b"# Master Services Agreement\n\nThis Agreement is made between Acme Ltd and Beta GmbH.\n\n" \
           b"## Term\n\nThe term is twelve months from the Effective Date.\n"


class Blobs:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.released: list[str] = []

    def get_blob(self, sha256: str) -> bytes | None:
        return self.data.get(sha256)

    def release_blob(self, sha256: str) -> None:
        self.released.append(sha256)
        self.data.pop(sha256, None)


def _message(raw: bytes, name: str = "east/msa.md") -> IngestRequest:
    return IngestRequest(request=JobRequest(job_id="j1", tenant="t", text="Summarize.", document_id="east:msa.md"),
                         document=DocumentRef(sha256=hashlib.sha256(raw).hexdigest(), name=name, size=len(raw)))


def _stage(blobs: Blobs) -> tuple[IngestStage, InMemoryVectorStore]:
    embedder = HashingEmbedder()
    store = InMemoryVectorStore(dim=embedder.dim)
    return IngestStage(blobs, store, embedder, max_tokens=120, overlap=10), store


def test_the_document_is_stored_under_the_job_s_document_id_and_its_bytes_released() -> None:
    blobs = Blobs()
    msg = _message(CONTRACT)
    blobs.data[msg.document.sha256] = CONTRACT
    stage, store = _stage(blobs)
    assert stage(msg) == msg.request
    assert store.has_document("t", "east:msa.md") and store.document_chunks("t", "east:msa.md")
    assert blobs.released == [msg.document.sha256]
    # delivered again after the bytes were released: the stored document is used, nothing fails
    assert stage(msg) == msg.request


def test_unreadable_bytes_fail_the_item_with_its_path_and_corrupt_bytes_are_retried() -> None:
    blobs = Blobs()
    bad = _message(b"\xff\xfe not utf-8", name="west/latin.txt")
    blobs.data[bad.document.sha256] = b"\xff\xfe not utf-8"
    stage, _ = _stage(blobs)
    with pytest.raises(InvalidInput, match="west/latin.txt is not UTF-8"):
        stage(bad)
    assert blobs.released == [], "kept for a replay after the file is fixed"
    with pytest.raises(InvalidInput, match="no longer stored"):
        stage(_message(b"never stored"))
    corrupt = _message(CONTRACT)
    blobs.data[corrupt.document.sha256] = CONTRACT + b"tampered"
    with pytest.raises(ProviderUnavailable, match="do not match their sha256"):
        stage(corrupt)
