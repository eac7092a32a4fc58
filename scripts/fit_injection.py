"""Fit the learned prompt-injection model and write the weights the package ships.

    .venv/bin/python scripts/fit_injection.py [--dev PATH] [--out FILE]

Training data: the public dev half of the injection benchmark (``--dev``, default
``../shared/eval/injections-public/dev.jsonl``), the project's own attacks and benign
look-alikes (``pipeline/guard/data/*.jsonl``), every sentence of the sample contracts
(``pipeline/data/contracts``, benign), every 250-word block of them as ``guard scan`` cuts
it (benign: so windows and whole blocks of legal text are negatives too), and the own
attacks inserted into sample-contract paragraphs (indirect attacks the project wrote).
The shared contract corpus is never read here: it only measures false positives. Same code as the leave-one-source-out
fits of ``scripts/eval_injection.py`` (``pipeline.guard.injection.fit_weights``); the fit is
deterministic and the file is byte-identical on unchanged data. The sha256 of every input
file is recorded in the weights; a unit test checks the project's files against it.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.guard.injection import (  # noqa: E402
    DEFAULT_L2,
    MIL_ROUNDS,
    MODEL_FORMAT,
    InjectionModel,
    default_data_paths,
    default_model_path,
    embed_for_fit,
    fit_weights,
    read_model,
    split_sentences,
    write_model,
)
from pipeline.retrieval.embeddings import OnnxMiniLMEmbedder  # noqa: E402

DEFAULT_DEV = REPO.parent / "shared" / "eval" / "injections-public" / "dev.jsonl"
CONTRACTS = REPO / "pipeline" / "data" / "contracts"
#: probability at or above which the model flags a unit (logit 3.0, steps of 0.2), and for a short text
#: (one line under 40 words, where a request typed on its own looks most like a direct attack; logit
#: 3.6). Chosen in the 5-fold run on the dev half as the highest recall with no chunk of the sample
#: contracts or of the golden set flagged (as ingest chunks them), none of the project's tricky
#: negatives (tests/unit/test_guard_injection.py) flagged, and at most 8 % of the dev half's benign
#: rows flagged (what the embedding-only model of format 1 flagged): recall 0.72, benign 7.9 %.
#: Logit 2.8 / 3.8 gives 0.73 for 10 %. The shared corpus is measured, not used to choose. A
#: sentence inside a document keeps the document threshold: what makes it suspicious there is the
#: document around it.
DEFAULT_MODEL_THRESHOLD = 0.9526
DEFAULT_MODEL_THRESHOLD_SINGLE = 0.9734


DEFAULT_CACHE = Path.home() / ".cache" / "conveyor" / "injection-embeddings.npz"


class CachedEmbedder:
    """The MiniLM embedder with a text -> vector cache on disk (outside the repo), so refits and the
    evaluation's 15 refits embed each sentence once. Vectors are the embedder's own; only speed changes."""

    def __init__(self, embedder: OnnxMiniLMEmbedder, path: Path | None) -> None:
        self.embedder = embedder
        self.model_id = embedder.model_id
        self.dim = embedder.dim
        self.path = path
        self.store: dict[str, np.ndarray] = {}
        if path is not None and path.is_file():
            with np.load(path) as data:
                self.store = {str(k): v for k, v in zip(data["keys"], data["vecs"], strict=True)}

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = sorted({t for t in texts if self._key(t) not in self.store})
        if missing:
            for text, vector in zip(missing, self.embedder.embed(missing), strict=True):
                self.store[self._key(text)] = vector
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(self.path, keys=np.array(list(self.store)), vecs=np.vstack(list(self.store.values())))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack([self.store[self._key(t)] for t in texts]).astype(np.float32)

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_rows(path: Path, source: str | None = None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        row["injection"] = bool(row["injection"])
        row.setdefault("kind", "own")
        row["source"] = (row.get("source") or source or path.name).split(":")[0]
    return rows


def contract_sentences() -> list[str]:
    out: list[str] = []
    for path in sorted(CONTRACTS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        out.extend(text[a:b] for a, b in split_sentences(text) if len(text[a:b].split()) >= 4)
    return out


def contract_blocks() -> list[str]:
    """The sample contracts cut into blocks the way ``guard scan`` and the chunk screen see them."""
    from pipeline.guard.scan import split_blocks

    out: list[str] = []
    for path in sorted(CONTRACTS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        out.extend(text[a:b] for a, b in split_blocks(text))
    return out


def contract_chunks() -> list[str]:
    """The sample contracts chunked as ingest chunks them: the unit the retrieve stage screens."""
    from pipeline.retrieval.chunking import chunk_document

    out: list[str] = []
    for path in sorted(CONTRACTS.glob("*.md")):
        out.extend(chunk.text for chunk in chunk_document(path.stem, path.read_text(encoding="utf-8")))
    return out


def contract_paragraphs() -> list[str]:
    paragraphs: list[str] = []
    for path in sorted(CONTRACTS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        paragraphs.extend(p.strip() for p in text.split("\n\n") if len(p.split()) >= 40)
    return paragraphs


def own_rows() -> list[dict[str, Any]]:
    """The project's examples, contract sentences, and own attacks buried in contract paragraphs."""
    rows: list[dict[str, Any]] = []
    buried: list[str] = []
    for path in default_data_paths():
        for row in load_rows(path, "conveyor"):
            # "own_buried": an instruction that is an attack only inside someone else's text (typed on
            # its own, "end your answer with a poem" is a fair request), so it is used only buried
            if row["kind"] == "own_buried":
                buried.append(row["text"])
            else:
                rows.append(row)
    rows.extend({"text": s, "injection": False, "kind": "benign", "source": "conveyor"} for s in contract_sentences())
    rows.extend({"text": b, "injection": False, "kind": "benign", "source": "conveyor"} for b in contract_blocks())
    rows.extend({"text": c, "injection": False, "kind": "benign", "source": "conveyor"} for c in contract_chunks())
    attacks = [r["text"] for r in rows if r["injection"]] + buried
    # carriers: contract paragraphs, and the own benign e-mails and notes of 25 words or more
    paragraphs = contract_paragraphs()
    carriers = [
        r["text"] for r in rows if not r["injection"] and r["kind"] == "own_benign" and len(r["text"].split()) >= 25
    ]
    for number, attack in enumerate(attacks):
        paragraph = paragraphs[(number * 7) % len(paragraphs)]
        sentences = split_sentences(paragraph)
        cut = sentences[len(sentences) // 2][0] if number % 3 == 1 and len(sentences) > 1 else None
        if number % 3 == 0:
            text = f"{attack}\n{paragraph}"
        elif cut is not None:
            text = f"{paragraph[:cut]}{attack} {paragraph[cut:]}"
        else:
            text = f"{paragraph}\n{attack}"
        rows.append({"text": text, "injection": True, "kind": "indirect", "source": "conveyor"})
    for number, attack in enumerate(attacks):
        carrier = carriers[(number * 5) % len(carriers)]
        text = f"{carrier}\n{attack}" if number % 2 else f"{attack} {carrier}"
        rows.append({"text": text, "injection": True, "kind": "indirect", "source": "conveyor"})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV, help="public dev half (JSONL)")
    parser.add_argument("--out", type=Path, default=default_model_path(), help="default: the packaged file")
    parser.add_argument("--threshold", type=float, default=DEFAULT_MODEL_THRESHOLD)
    parser.add_argument("--threshold-single", type=float, default=DEFAULT_MODEL_THRESHOLD_SINGLE)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="embedding cache (outside the repo)")
    parser.add_argument("--no-cache", action="store_true")
    args = parser.parse_args(argv)

    rows = load_rows(args.dev) + own_rows()
    embedder = CachedEmbedder(OnnxMiniLMEmbedder(threads=2), None if args.no_cache else args.cache)
    started = time.perf_counter()
    features = embed_for_fit(embedder, [r["text"] for r in rows])
    embed_s = time.perf_counter() - started
    weights = fit_weights(features, [r["injection"] for r in rows])
    fit_s = time.perf_counter() - started - embed_s
    inputs = {p.name: sha256(p) for p in [args.dev, *default_data_paths(), *sorted(CONTRACTS.glob("*.md"))]}
    meta = {
        "format": MODEL_FORMAT,
        "embedder_model_id": embedder.model_id,
        "dim": int(embedder.dim),
        "threshold": args.threshold,
        "threshold_single": args.threshold_single,
        "l2": DEFAULT_L2,
        "mil_rounds": MIL_ROUNDS,
        "examples": len(rows),
        "positives": sum(r["injection"] for r in rows),
        "units": int(sum(len(f) for f in features)),
        "training_sha256": inputs,
        "fitted_by": "scripts/fit_injection.py",
    }
    before = args.out.read_bytes() if args.out.is_file() else None
    write_model(
        args.out,
        InjectionModel(weights=weights, threshold=args.threshold, meta=meta, threshold_single=args.threshold_single),
    )
    read_model(args.out)
    changed = before != args.out.read_bytes()
    print(
        f"{args.out}: {args.out.stat().st_size / 1024:.0f} KiB, {meta['examples']} texts "
        f"({meta['positives']} attacks), "
        f"{meta['units']} units embedded in {embed_s:.1f}s, fitted in {fit_s:.1f}s, "
        f"{'changed' if changed else 'unchanged'}"
    )
    print(json.dumps({**meta, "path": str(args.out), "bytes": args.out.stat().st_size, "changed": changed}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
