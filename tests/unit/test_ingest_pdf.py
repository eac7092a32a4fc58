"""PDF ingestion through pypdf, on PDFs written byte by byte in this file.

The fixture PDF is built by hand (catalog, page tree, a Helvetica font, one content stream per
page, a byte-exact xref table) so the test depends on no PDF producer and nothing on disk.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import pypdf
import pytest
from pypdf.errors import PyPdfError

from pipeline.errors import InvalidInput
from pipeline.retrieval.chunking import chunk_document
from pipeline.retrieval.ingest import ingest_paths, ingest_text, read_document
from tests.fakes import HashingEmbedder, InMemoryVectorStore

Line = tuple[int, str]  # (font size in points, text)

HEADING = "Supply Agreement"
PAGES: list[list[Line]] = [
    [
        (18, HEADING),
        (12, "1. Payment. Buyer pays all Fees of \u20ac1,200 within 30 days of invoice."),
        (12, "Late amounts accrue interest at 1% per month (simple, not compound)."),
    ],
    [
        (12, "2. Term. This Agreement lasts two years from the Effective Date."),
        (12, "Either party may terminate on 90 days' written notice."),
    ],
]


# ---------------------------------------------------------------- a PDF, by hand
def _pdf_string(text: str) -> bytes:
    """A PDF literal string in WinAnsiEncoding, with ``\\``, ``(`` and ``)`` escaped."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("cp1252") + b")"


def _content_stream(lines: Sequence[Line]) -> bytes:
    ops = []
    y = 720
    for size, text in lines:
        ops.append(b"BT /F1 %d Tf 72 %d Td " % (size, y) + _pdf_string(text) + b" Tj ET")
        y -= size + 10
    return b"\n".join(ops)


def build_pdf(pages: Sequence[Sequence[Line]]) -> bytes:
    """A minimal, valid PDF 1.4: objects 1 catalog, 2 page tree, 3 font, then (page, content) pairs.

    A page with no lines gets no content stream at all (no text layer, like a scan).
    """
    page_ids = [4 + 2 * index for index in range(len(pages))]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (b" ".join(b"%d 0 R" % page_id for page_id in page_ids), len(pages)),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    for page_id, lines in zip(page_ids, pages, strict=True):
        contents = b" /Contents %d 0 R" % (page_id + 1) if lines else b""
        objects[page_id] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >>"
            + contents
            + b" >>"
        )
        stream = _content_stream(lines)
        objects[page_id + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")  # the binary comment marks the file as binary
    offsets: dict[int, int] = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref_at = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        out += b"%010d 00000 n \n" % offsets[number]  # each entry exactly 20 bytes
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref_at)
    return bytes(out)


@pytest.fixture
def contract_pdf(tmp_path: Path) -> Path:
    path = tmp_path / "supply-agreement.pdf"
    path.write_bytes(build_pdf(PAGES))
    return path


def test_the_hand_written_pdf_is_well_formed(contract_pdf: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Strict pypdf accepts it and logs no repairs: the xref offsets and stream lengths are right."""
    with caplog.at_level(logging.WARNING, logger="pypdf"):
        reader = pypdf.PdfReader(contract_pdf, strict=True)
        assert len(reader.pages) == 2
        assert reader.pages[0]["/Resources"]["/Font"]["/F1"]["/BaseFont"] == "/Helvetica"
        for number in range(1, 8):
            assert reader.get_object(number) is not None
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pypdf")] == []


# ---------------------------------------------------------------- reading
def test_read_document_returns_the_stem_and_the_text_of_every_page(contract_pdf: Path) -> None:
    doc_id, text = read_document(contract_pdf)
    assert doc_id == "supply-agreement"
    lines = text.splitlines()
    assert lines[0] == HEADING
    assert "1. Payment. Buyer pays all Fees of \u20ac1,200 within 30 days of invoice." in lines
    assert "Late amounts accrue interest at 1% per month (simple, not compound)." in lines
    assert "2. Term. This Agreement lasts two years from the Effective Date." in lines
    assert "Either party may terminate on 90 days' written notice." in lines
    assert text.index("1. Payment") < text.index("2. Term"), "pages in order"
    assert "\n\n2. Term" in text, "a page break is a paragraph break"
    assert text == text.strip() and all(line == line.rstrip() for line in lines)


def test_pdf_suffix_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "NDA.PDF"
    path.write_bytes(build_pdf(PAGES))
    doc_id, text = read_document(path)
    assert doc_id == "NDA" and text.startswith(HEADING)


# ---------------------------------------------------------------- chunking and ingesting
def test_chunk_document_finds_the_numbered_sections(contract_pdf: Path) -> None:
    doc_id, text = read_document(contract_pdf)
    chunks = chunk_document(doc_id, text)
    sections = [chunk.section for chunk in chunks]
    assert any(section.endswith("1. Payment") for section in sections), sections
    assert any(section.endswith("2. Term") for section in sections), sections
    payment = next(chunk for chunk in chunks if chunk.section.endswith("1. Payment"))
    term = next(chunk for chunk in chunks if chunk.section.endswith("2. Term"))
    assert "Buyer pays all Fees" in payment.text and "interest at 1% per month" in payment.text
    assert "lasts two years" in term.text and "90 days' written notice" in term.text
    assert all(chunk.doc_id == "supply-agreement" for chunk in chunks)


def test_ingest_text_stores_the_pdf_chunks_and_reingest_is_a_no_op(contract_pdf: Path) -> None:
    store, embedder = InMemoryVectorStore(dim=64), HashingEmbedder(dim=64)
    doc_id, text = read_document(contract_pdf)
    expected = chunk_document(doc_id, text)
    first = ingest_text(doc_id, text, tenant="acme", store=store, embedder=embedder)
    assert first.added == len(expected) >= 2 and first.removed == 0
    stored = store.document_chunks("acme", doc_id)
    assert sorted(hit.chunk_id for hit in stored) == sorted(chunk.chunk_id for chunk in expected)
    assert any("Buyer pays all Fees" in hit.text for hit in stored)
    again = ingest_text(doc_id, text, tenant="acme", store=store, embedder=embedder)
    assert again.added == 0 and again.unchanged == first.added


def test_ingest_paths_picks_up_pdfs_in_a_folder(contract_pdf: Path) -> None:
    store = InMemoryVectorStore(dim=64)
    report = ingest_paths([contract_pdf.parent], tenant="acme", store=store, embedder=HashingEmbedder(dim=64))
    assert report.documents == 1 and report.added > 0
    assert store.list_documents("acme") == ["supply-agreement"]


# ---------------------------------------------------------------- what cannot be read
def _truncated() -> bytes:
    whole = build_pdf(PAGES)
    return whole[: len(whole) // 2]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty"),
        (b"PK\x03\x04 this is a zip archive renamed to .pdf", "not a PDF file"),
        (b"%PDF-1.4\n", "damaged or truncated PDF"),
        (_truncated(), "damaged or truncated PDF"),
        (
            b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n",
            "damaged or truncated PDF",
        ),
    ],
    ids=["empty", "not-a-pdf", "header-only", "truncated", "no-xref"],
)
def test_a_corrupt_pdf_is_invalid_input_with_a_clear_message(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(content)
    with pytest.raises(InvalidInput) as caught:
        read_document(path)
    message = str(caught.value)
    assert message.startswith("cannot read pdf broken.pdf: ") and reason in message
    assert not isinstance(caught.value, PyPdfError)


def test_a_pdf_without_a_text_layer_says_so(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(build_pdf([[], []]))  # two pages, no content streams: what a scan looks like to pypdf
    with pytest.raises(InvalidInput, match=r"scan\.pdf has no extractable text \(2 page\(s\).*OCR"):
        read_document(path)


def _encrypted(user_password: str) -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(build_pdf(PAGES))))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_password_protected_pdf_is_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "locked.pdf"
    path.write_bytes(_encrypted(user_password="open-sesame"))
    with pytest.raises(InvalidInput, match=r"cannot read pdf locked\.pdf: it is password-protected"):
        read_document(path)


def test_a_pdf_encrypted_with_an_empty_user_password_is_read(tmp_path: Path) -> None:
    """Owner-password-only PDFs (print/copy restrictions) open without a password, like in a viewer."""
    path = tmp_path / "restricted.pdf"
    path.write_bytes(_encrypted(user_password=""))
    _, text = read_document(path)
    assert text.startswith(HEADING) and "2. Term. This Agreement lasts two years" in text
