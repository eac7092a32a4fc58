"""Turn files or raw text into stored, embedded chunks.

Idempotent by construction: chunk ids come from content, so ingesting the same document
twice writes nothing, and only chunks the store does not hold yet go through the
embedding model (the expensive part).
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InternalError, InvalidInput
from pipeline.retrieval.chunking import chunk_document
from pipeline.retrieval.embeddings import Embedder
from pipeline.retrieval.vectorstore import UpsertReport, VectorStore
from pipeline.text import strip_markup

TEXT_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".html", ".htm"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | {".pdf"}
#: (texts, (model id, their embeddings)) -> the injection verdict stored with each chunk
#: (``pipeline.guard.screening.screen``)
Screen = Callable[[Sequence[str], tuple[str, np.ndarray]], list[dict[str, Any]]]
DEFAULT_MAX_TOKENS = 220
DEFAULT_OVERLAP = 40


@dataclass(frozen=True)
class IngestReport:
    documents: int
    chunks: int
    added: int
    unchanged: int
    removed: int
    seconds: float

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0


def read_document(path: str | Path) -> tuple[str, str]:
    """Return (doc_id, plain text); doc_id is the file name without its extension."""
    path = Path(path)
    check_supported(path.name)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    return path.stem, parse_document(path.name, raw)


def check_supported(name: str) -> None:
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InvalidInput(f"unsupported document type {suffix or '(none)'!r}: {name} "
                           f"(supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})")


def parse_document(name: str, raw: bytes) -> str:
    """Plain text of a document's bytes, read as its file name's suffix says; InvalidInput naming it
    for anything unreadable (the same rules for a file on disk and a batch item's stored bytes)."""
    check_supported(name)
    if Path(name).suffix.lower() == ".pdf":
        return _pdf_text(name, raw)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{name} is not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from exc
    if not text.strip():
        raise InvalidInput(f"{name} is empty")
    return text if Path(name).suffix.lower() == ".txt" else strip_markup(text)


def _pdf_text(name: str, raw: bytes) -> str:
    """Plain text of a PDF's text layer, page by page (pypdf, offline).

    Every failure is ``InvalidInput`` naming the file and what is wrong with it: not a PDF,
    damaged, password-protected, or no text layer (a scan). pypdf's own exceptions never escape.
    """
    try:
        from pypdf import PdfReader
        from pypdf.errors import FileNotDecryptedError
    except ImportError:
        raise InvalidInput("pdf not supported: install pypdf") from None
    if not raw.strip():
        raise InvalidInput(f"cannot read pdf {name}: the file is empty")
    if b"%PDF-" not in raw[:1024]:  # readers accept the header anywhere in the first 1024 bytes
        raise InvalidInput(f"cannot read pdf {name}: not a PDF file (no %PDF- header)")
    pages: list[str] = []
    opened = False
    try:
        reader = PdfReader(io.BytesIO(raw))
        opened = True
        for page in reader.pages:
            pages.append(_tidy_pdf_text(page.extract_text() or ""))
    except FileNotDecryptedError as exc:
        raise InvalidInput(f"cannot read pdf {name}: it is password-protected; decrypt it first") from exc
    except Exception as exc:  # untrusted input: pypdf raises its own errors and plenty of builtin ones
        where = f" at page {len(pages) + 1}" if opened else ""
        raise InvalidInput(f"cannot read pdf {name}: damaged or truncated PDF{where} ({_reason(exc)})") from exc
    text = "\n\n".join(page for page in pages if page).strip()
    if not text:
        raise InvalidInput(
            f"pdf {name} has no extractable text ({len(pages)} page(s) without a text layer; "
            "a scanned document needs OCR first)"
        )
    return text


def _tidy_pdf_text(text: str) -> str:
    """Trailing blanks off every line, no form feeds or NULs, at most one blank line in a row."""
    lines = [line.rstrip() for line in text.replace("\x00", "").replace("\f", "\n").splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _reason(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def iter_document_paths(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given, directories expanded recursively to supported files (sorted)."""
    for item in paths:
        path = Path(item)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
            )
        elif path.is_file():
            yield path
        else:
            raise InvalidInput(f"no such file or directory: {path}")


def text_sha256(text: str) -> str:
    """The content hash a document's manifest records: sha256 of its plain text (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ingest_text(
    doc_id: str,
    text: str,
    *,
    tenant: str,
    store: VectorStore,
    embedder: Embedder,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap: int = DEFAULT_OVERLAP,
    screen: Screen | None = None,
) -> UpsertReport:
    """Chunk, embed and store one document's plain text; replaces its previous version.

    Chunks the store already holds are not embedded again, so re-ingesting an unchanged
    document costs a chunking pass and one listing, not a model run. ``screen`` (e.g.
    ``pipeline.guard.screening.screen``) gives each new chunk the injection verdict stored
    with it, so ``retrieve`` does not score it per job. A store that keeps manifests also
    records ``text_sha256(text)`` (see ``document_hash``).
    """
    if not doc_id.strip():
        raise InvalidInput("doc_id must be non-empty")
    if not text.strip():
        raise InvalidInput(f"document {doc_id!r} has no text")
    if embedder.dim != store.dim:
        raise InternalError(
            f"embedder {embedder.model_id} has dim {embedder.dim}, the store expects {store.dim}"
        )
    chunks = chunk_document(doc_id, text, max_tokens=max_tokens, overlap_tokens=overlap)
    stored = {hit.chunk_id for hit in store.document_chunks(tenant, doc_id)}
    todo = [i for i, chunk in enumerate(chunks) if chunk.chunk_id not in stored]
    # Rows of chunks already stored stay zero: upsert_document writes new point ids only.
    vectors = np.zeros((len(chunks), store.dim), dtype=np.float32)
    screens: dict[str, dict[str, Any]] = {}
    if todo:
        texts = [chunks[i].text for i in todo]
        vectors[todo] = embedder.embed(texts)
        if screen is not None:
            verdicts = screen(texts, (embedder.model_id, vectors[todo]))
            screens = {chunks[i].chunk_id: verdict for i, verdict in zip(todo, verdicts, strict=True)}
    return store.upsert_document(tenant, doc_id, chunks, vectors, content_sha256=text_sha256(text), screens=screens)


def ingest_paths(
    paths: Iterable[str | Path],
    *,
    tenant: str,
    store: VectorStore,
    embedder: Embedder,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap: int = DEFAULT_OVERLAP,
    screen: Screen | None = None,
) -> IngestReport:
    """Ingest files and directories (recursively) for one tenant."""
    started = time.perf_counter()
    documents = chunks = added = unchanged = removed = 0
    seen: dict[str, Path] = {}
    for path in iter_document_paths(paths):
        doc_id, text = read_document(path)
        if doc_id in seen:
            raise InvalidInput(f"two files map to doc_id {doc_id!r}: {seen[doc_id]} and {path}")
        seen[doc_id] = path
        report = ingest_text(
            doc_id,
            text,
            tenant=tenant,
            store=store,
            embedder=embedder,
            max_tokens=max_tokens,
            overlap=overlap,
            screen=screen,
        )
        documents += 1
        chunks += report.added + report.unchanged
        added += report.added
        unchanged += report.unchanged
        removed += report.removed
    return IngestReport(
        documents=documents,
        chunks=chunks,
        added=added,
        unchanged=unchanged,
        removed=removed,
        seconds=time.perf_counter() - started,
    )
