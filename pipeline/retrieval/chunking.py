"""Split a (markup-free) document into retrieval chunks that respect its sections.

Sections come from Markdown headings and top-level numbered clauses ("1. Service",
"## 2. Obligations"). Nested clause numbers are rewritten to absolute form ("1.4",
"2.1.a") so a chunk can be cited on its own. Inside a section, sentences are packed up
to ``max_tokens`` (as counted by the embedding tokenizer, prefix included), breaking at
clause (paragraph) ends once a chunk holds ``min_tokens``: one clause per chunk keeps
its embedding focused (measured: recall@5 0.92 vs 0.83 when packing clauses up to the
limit), while tiny clauses and bare clause titles still merge with their neighbours. A
clause longer than one chunk is split at sentences with an ``overlap_tokens`` tail of the
previous chunk, so a phrase cut by the boundary is still whole somewhere. Every chunk
starts with "<document title> | <section>" so the embedder sees where the text lives.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pipeline.text import split_sentences

#: namespace of chunk ids; changing it would re-key every stored chunk.
CHUNK_NAMESPACE = uuid.UUID("6f4c1d2e-8a57-5b0e-9c3f-2d1e0a4b7c61")

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_NUMBERED = re.compile(
    r"^(\s*)(?:(\d+(?:\.\d+)+)\.?|(\d{1,3}|[a-zA-Z]|[ivxlcIVXLC]{1,6})[.)]|\((\w{1,6})\))\s+(.*)$"
)
_BULLET = re.compile(r"^(\s*)(?:[-*+]|\d+\.)\s")
#: a chunk closes at the end of a paragraph (clause) once it holds this many tokens.
MIN_CHUNK_TOKENS = 32
_TITLE_END = re.compile(r"^(.{1,90}?[.:])(?:\s+|$)")


@dataclass(frozen=True)
class Chunk:
    """One embeddable piece of a document; ``chunk_id`` is stable across re-ingestion."""

    doc_id: str
    chunk_id: str
    section: str
    text: str
    position: int
    content_hash: str


def chunk_body(text: str) -> str:
    """A chunk's text without its ``title | section`` header line (what the document says)."""
    header, sep, body = text.partition("\n")
    return body if sep else header


def chunk_id_for(doc_id: str, content_hash: str, position: int) -> str:
    """uuid5 of (doc_id, content hash, position): same input, same id, on every machine."""
    return str(uuid.uuid5(CHUNK_NAMESPACE, f"{doc_id}\x1f{content_hash}\x1f{position}"))


def content_hash_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class _Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)


@dataclass
class _Sentence:
    text: str
    tokens: int
    starts_paragraph: bool


def parse_sections(text: str) -> tuple[str | None, list[_Section]]:
    """Return (document title, sections) from markup-free text."""
    doc_title: str | None = None
    headings: list[tuple[int, str]] = []
    numbers: list[tuple[int, str]] = []  # (indent, absolute number) of open list items
    sections: list[_Section] = [_Section("")]
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            sections[-1].paragraphs.append(" ".join(paragraph))
            paragraph.clear()

    def open_section(title: str) -> None:
        flush()
        if not sections[-1].paragraphs:
            sections.pop()
        sections.append(_Section(title))

    def heading_path() -> list[str]:
        return [title for _, title in headings]

    for raw in text.split("\n"):
        line = raw.rstrip()
        if not line.strip():
            flush()
            continue
        heading = _HEADING.match(line.strip())
        if heading:
            level, title = len(heading.group(1)), heading.group(2).strip()
            if level == 1 and doc_title is None and not any(s.paragraphs for s in sections):
                doc_title = title
                continue
            headings[:] = [h for h in headings if h[0] < level] + [(level, title)]
            numbers.clear()
            open_section(" > ".join(heading_path()[-2:]))
            continue
        numbered = _NUMBERED.match(line)
        if numbered:
            indent = len(numbered.group(1).expandtabs(4))
            dotted, simple, paren, body = (
                numbered.group(2),
                numbered.group(3),
                numbered.group(4),
                numbered.group(5),
            )
            while numbers and numbers[-1][0] >= indent:
                numbers.pop()
            if dotted:
                number = dotted
            else:
                own = (simple or paren or "").lower()
                number = f"{numbers[-1][1]}.{own}" if numbers else own
            numbers.append((indent, number))
            if indent == 0 and simple and simple.isdigit() and not dotted:
                title, rest = _split_title(body)
                parent = heading_path()[-1:]
                open_section(" > ".join([*parent, f"{number}. {title}" if title else f"Section {number}"]))
                if rest:
                    paragraph.append(f"{number}. {body}")
                continue
            flush()
            paragraph.append(f"{number} {body}")
            flush()
            continue
        if _BULLET.match(line):
            flush()
        paragraph.append(line.strip())
    flush()
    if not sections[-1].paragraphs:
        sections.pop()
    return doc_title, sections


def _split_title(body: str) -> tuple[str, str]:
    """Split "Introduction. This Agreement..." into a short title and the rest."""
    match = _TITLE_END.match(body)
    if match and len(match.group(1).split()) <= 10:
        return match.group(1).rstrip(".: "), body[match.end() :].strip()
    if len(body.split()) <= 10:
        return body.rstrip(".: "), ""
    return "", body


_SMALL_WORDS = frozenset({"a", "an", "and", "of", "the", "to", "for", "in", "on", "with", "by", "or"})


def document_title(doc_id: str, heading: str | None) -> str:
    """Title used in chunk prefixes: the H1 heading and, when it adds words, a readable
    form of the doc id ("mutual-nda" + "Standard Terms" -> "Mutual NDA: Standard Terms").

    File names often carry the document type that a generic heading lacks, and a
    question naming "the NDA" should find its chunks. Opaque ids (numbers, uuids) are
    left out.
    """
    words = [w for w in re.split(r"[-_\s.]+", doc_id) if w]
    opaque = not words or re.search(r"\d{3,}|[0-9a-f]{8}", doc_id.lower()) is not None
    name = " ".join(
        w.lower() if w.lower() in _SMALL_WORDS else (w.upper() if len(w) <= 3 else w.capitalize())
        for w in words
    )
    if heading is None:
        return doc_id if opaque else name
    if opaque or _squash(name) in _squash(heading) or _squash(heading) in _squash(name):
        return heading
    return f"{name}: {heading}"


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _default_counter() -> Callable[[str], int]:
    from pipeline.retrieval.embeddings import minilm_token_count

    return minilm_token_count


def chunk_document(
    doc_id: str,
    text: str,
    *,
    max_tokens: int = 220,
    overlap_tokens: int = 40,
    count_tokens: Callable[[str], int] | None = None,
    min_tokens: int = MIN_CHUNK_TOKENS,
) -> list[Chunk]:
    """Split ``text`` (already markup-free) into section-aware, overlapping chunks."""
    if max_tokens < 32:
        raise ValueError("max_tokens must be at least 32")
    if not 0 <= overlap_tokens < max_tokens // 2:
        raise ValueError("overlap_tokens must be >= 0 and less than half of max_tokens")
    count = count_tokens or _default_counter()
    doc_title, sections = parse_sections(text)
    title = document_title(doc_id, doc_title)
    bodies: list[tuple[str, str]] = []
    for section in sections:
        prefix = f"{title} | {section.title}" if section.title else title
        budget = max(16, max_tokens - count(prefix) - 1)
        sentences = _sentences(section.paragraphs, budget, count)
        for body in _pack(sentences, budget, overlap_tokens, count, min_tokens):
            bodies.append((section.title, f"{prefix}\n{body}"))
    chunks = []
    for position, (section_title, chunk_text) in enumerate(bodies):
        digest = content_hash_of(chunk_text)
        chunks.append(
            Chunk(
                doc_id=doc_id,
                chunk_id=chunk_id_for(doc_id, digest, position),
                section=section_title or title,
                text=chunk_text,
                position=position,
                content_hash=digest,
            )
        )
    return chunks


def _sentences(paragraphs: Sequence[str], budget: int, count: Callable[[str], int]) -> list[_Sentence]:
    out: list[_Sentence] = []
    for paragraph in paragraphs:
        first = True
        for sentence in split_sentences(paragraph):
            for piece in _hard_split(sentence, budget, count):
                out.append(_Sentence(piece, count(piece), first))
                first = False
    return out


def _hard_split(sentence: str, budget: int, count: Callable[[str], int]) -> list[str]:
    """Cut a sentence longer than the budget at word boundaries (rare: enumerated lists)."""
    if count(sentence) <= budget:
        return [sentence]
    pieces: list[str] = []
    words: list[str] = []
    for word in sentence.split():
        if words and count(" ".join([*words, word])) > budget:
            pieces.append(" ".join(words))
            words = []
        words.append(word)
    if words:
        pieces.append(" ".join(words))
    return pieces


def _pack(
    sentences: list[_Sentence], budget: int, overlap: int, count: Callable[[str], int], min_tokens: int
) -> list[str]:
    chunks: list[list[_Sentence]] = []
    current: list[_Sentence] = []
    used = 0
    sentences = list(sentences)
    index = -1
    while index + 1 < len(sentences):
        index += 1
        sentence = sentences[index]
        fits = used + sentence.tokens <= budget
        if current and not fits and used < budget // 2:
            # A long sentence after a short start (typically a clause title followed by
            # an enumeration): fill this chunk with its head instead of leaving a stub.
            head, tail = _split_to_fit(sentence, budget - used, count)
            if head is not None and tail is not None:
                sentences[index + 1 : index + 1] = [tail]
                sentence, fits = head, True
        if current and sentence.starts_paragraph and fits:
            # Start a new chunk at a clause boundary once this one holds min_tokens, or
            # when the clause would not fit whole and this chunk is already well filled.
            paragraph_tokens = _paragraph_tokens(sentences, index)
            overflow = used + paragraph_tokens > budget and paragraph_tokens <= budget
            if used >= min_tokens or (overflow and used >= budget * 0.6):
                fits = False
        if current and not fits:
            chunks.append(current)
            current = [] if sentence.starts_paragraph else _tail(current, overlap, count)
            while current and sum(s.tokens for s in current) + sentence.tokens > budget:
                current.pop(0)
            used = sum(s.tokens for s in current)
        current.append(sentence)
        used += sentence.tokens
    if current:
        chunks.append(current)
    return [_join(chunk) for chunk in chunks]


def _split_to_fit(
    sentence: _Sentence, room: int, count: Callable[[str], int]
) -> tuple[_Sentence | None, _Sentence | None]:
    words = sentence.text.split()
    low, high = 0, len(words)
    while low < high:  # longest word prefix that fits the room
        mid = (low + high + 1) // 2
        if count(" ".join(words[:mid])) <= room:
            low = mid
        else:
            high = mid - 1
    if low < 8 or low >= len(words):
        return None, None
    head, tail = " ".join(words[:low]), " ".join(words[low:])
    return _Sentence(head, count(head), sentence.starts_paragraph), _Sentence(tail, count(tail), False)


def _paragraph_tokens(sentences: list[_Sentence], start: int) -> int:
    total = sentences[start].tokens
    for sentence in sentences[start + 1 :]:
        if sentence.starts_paragraph:
            break
        total += sentence.tokens
    return total


def _tail(chunk: list[_Sentence], overlap: int, count: Callable[[str], int]) -> list[_Sentence]:
    """Trailing sentences of ``chunk`` within ``overlap`` tokens, or trailing words of its
    last sentence when even that one is longer (so hard splits overlap too)."""
    tail: list[_Sentence] = []
    used = 0
    for sentence in reversed(chunk[1:]):
        if used + sentence.tokens > overlap:
            break
        tail.insert(0, sentence)
        used += sentence.tokens
    if tail or overlap == 0 or len(chunk) == 0:
        return tail
    words = chunk[-1].text.split()
    take = min(len(words) - 1, max(0, overlap * 3 // 4))
    while take > 0 and count(" ".join(words[-take:])) > overlap:
        take -= max(1, take // 4)
    if take <= 0:
        return []
    text = " ".join(words[-take:])
    return [_Sentence(text, count(text), False)]


def _join(sentences: list[_Sentence]) -> str:
    parts: list[str] = []
    for i, sentence in enumerate(sentences):
        if i and sentence.starts_paragraph:
            parts.append("\n")
        elif i:
            parts.append(" ")
        parts.append(sentence.text)
    return "".join(parts)
