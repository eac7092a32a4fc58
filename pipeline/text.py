"""Text clean-up shared by ingestion, chunking, retrieval evaluation and guards.

Contracts arrive as Markdown with inline HTML (``<span class="header_3">``), bold
definitions, links and cover-page placeholders. Embeddings and phrase matching work
better on plain prose, but the chunker still needs to see where sections start, so
headings survive as Markdown ``#`` lines and numbered clauses keep their numbers.
"""

from __future__ import annotations

import html
import re
import unicodedata

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_DROP_BLOCK = re.compile(r"<(script|style|head|noscript)\b[^>]*>.*?</\1\s*>", re.S | re.I)
_HTML_HEADING = re.compile(r"<h([1-6])\b[^>]*>(.*?)</h\1\s*>", re.S | re.I)
_BLOCK_TAG = re.compile(r"</?(p|div|br|li|ul|ol|tr|table|section|article|blockquote|pre|hr)\b[^>]*>", re.I)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*?)?/?>")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.S)
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC_UNDERSCORE = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_CODE = re.compile(r"`([^`\n]+)`")
_TABLE_RULE = re.compile(r"^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(\|[ \t]*:?-{3,}:?[ \t]*)*\|?[ \t]*(?:\n|$)", re.M)
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.M)
_INLINE_SPACE = re.compile(r"(?<=\S)[ \t]{2,}")
_BLANK_LINES = re.compile(r"\n{3,}")


def strip_markup(text: str) -> str:
    """Reduce HTML/Markdown to plain text, keeping headings, list numbers and paragraphs.

    Inline tags vanish without leaving a gap (``<span>Customer</span>'s`` stays one word),
    block tags become line breaks, ``<h2>`` becomes ``## `` so sections stay findable.
    Leading indentation is kept because nested clause numbering depends on it.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _COMMENT.sub("", text)
    text = _DROP_BLOCK.sub("", text)
    text = _HTML_HEADING.sub(
        lambda m: "\n\n" + "#" * int(m.group(1)) + " " + m.group(2).strip() + "\n\n", text
    )
    text = _BLOCK_TAG.sub("\n", text)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _REF_LINK.sub(r"\1", text)
    text = _BOLD.sub(r"\2", text)
    text = _ITALIC_STAR.sub(r"\1", text)
    text = _ITALIC_UNDERSCORE.sub(r"\1", text)
    text = _CODE.sub(r"\1", text)
    text = _TABLE_RULE.sub("", text)
    text = text.replace("\u00a0", " ")
    text = _TRAILING_SPACE.sub("", text)
    text = _INLINE_SPACE.sub(" ", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip("\n")


_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
    }
)
_NON_WORD = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def normalize_for_match(text: str) -> str:
    """Canonical form for "does this chunk contain that phrase" checks.

    Lowercased, NFKC, curly quotes and dashes unified, punctuation replaced by spaces
    and whitespace collapsed, so markup leftovers and typography do not hide a match.
    """
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).lower()
    text = text.replace("_", " ")
    text = _NON_WORD.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


# Words that end with a period without ending the sentence (compared lowercased,
# without the final period).
_ABBREVIATIONS = frozenset(
    {
        "inc",
        "ltd",
        "llc",
        "llp",
        "lp",
        "corp",
        "co",
        "plc",
        "gmbh",
        "ag",
        "bv",
        "nv",
        "sa",
        "pty",
        "s.a",
        "s.p.a",
        "n.a",
        "e.g",
        "i.e",
        "etc",
        "cf",
        "viz",
        "vs",
        "v",
        "al",
        "approx",
        "esp",
        "incl",
        "excl",
        "min",
        "max",
        "sec",
        "secs",
        "sect",
        "art",
        "arts",
        "para",
        "paras",
        "cl",
        "subcl",
        "ch",
        "chap",
        "pt",
        "pts",
        "no",
        "nos",
        "fig",
        "figs",
        "p",
        "pp",
        "vol",
        "ref",
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "jr",
        "sr",
        "hon",
        "u.s",
        "u.k",
        "u.n",
        "e.u",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    }
)
_CANDIDATE = re.compile(r"([.!?]+)([\"'\u201d\u2019)\]]*)(\s+)")
_LIST_MARKER = re.compile(r"(?:^|\n)\s*(?:\d{1,3}|[a-z]|[ivxlc]{1,5})$", re.I)
_NEXT_STARTS_SENTENCE = re.compile(r"[\"'\u201c\u2018(\[]*[A-Z0-9\u00c0-\u00de]")


def _is_abbreviation(before: str) -> bool:
    word = before.rsplit(None, 1)[-1] if before.strip() else ""
    word = word.lstrip("(\"'\u201c\u2018[").lower()
    if not word:
        return False
    if word in _ABBREVIATIONS:
        return True
    # single initials ("J. Smith") and dotted acronyms ("U.S.A")
    return bool(re.fullmatch(r"[a-z]", word) or re.fullmatch(r"(?:[a-z]\.)+[a-z]", word))


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences without breaking legal references.

    A period ends a sentence only when the next word starts with a capital, digit or
    quote, and the word before it is not an abbreviation ("Inc.", "e.g.", "Sec.") or a
    list marker ("1." / "a." at the start of a line). Decimals such as "2.1" never split
    because no whitespace follows their period. Blank lines always end a sentence.
    """
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        start = 0
        for match in _CANDIDATE.finditer(paragraph):
            end = match.end(2)
            before = paragraph[start : match.start(1)]
            after = paragraph[match.end() :]
            if not after:
                continue
            if match.group(1) == "." and (
                _is_abbreviation(before) or _LIST_MARKER.search(paragraph[: match.start(1)])
            ):
                continue
            if not _NEXT_STARTS_SENTENCE.match(after):
                continue
            piece = paragraph[start:end].strip()
            if piece:
                sentences.append(piece)
            start = match.end()
        tail = paragraph[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences
