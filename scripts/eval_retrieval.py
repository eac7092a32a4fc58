"""Evaluate retrieval on the shared contract corpus.

Ingests ``<shared>/corpus/contracts`` into a temporary local Qdrant, runs
``<shared>/eval/questions.dev.jsonl`` (``{"q", "doc", "expect"}``) through
``retrieve_context`` (intent ``question``) across the corpus and with the document
filter, and reports recall@1/@5 and MRR@5, query latency (embed + search), ingest
throughput and embedder start-up time.

A returned chunk is a hit when ``normalize_for_match(chunk)`` contains
``normalize_for_match(expect)``; ``same_doc`` figures also require the chunk to come
from the question's document.

    .venv/bin/python scripts/eval_retrieval.py [--shared DIR] [--max-tokens N] [--overlap N]
                                               [--k 5] [--json-out FILE]

The last stdout line is one JSON object. Exits 0 with a message when the shared data is
absent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.retrieval.context import retrieve_context  # noqa: E402
from pipeline.retrieval.embeddings import OnnxMiniLMEmbedder  # noqa: E402
from pipeline.retrieval.ingest import DEFAULT_MAX_TOKENS, DEFAULT_OVERLAP, ingest_paths  # noqa: E402
from pipeline.retrieval.vectorstore import Hit, QdrantVectorStore, open_qdrant  # noqa: E402
from pipeline.text import normalize_for_match  # noqa: E402

TENANT = "eval"


def first_hit_rank(hits: list[Hit], expect: str, doc: str | None) -> int | None:
    """1-based rank of the first chunk containing ``expect`` (from ``doc`` if given)."""
    needle = normalize_for_match(expect)
    for rank, hit in enumerate(hits, start=1):
        if (doc is None or hit.doc_id == doc) and needle in normalize_for_match(hit.text):
            return rank
    return None


def metrics(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks) or 1
    return {
        "recall@1": round(sum(1 for r in ranks if r == 1) / n, 3),
        "recall@5": round(sum(1 for r in ranks if r is not None and r <= 5) / n, 3),
        "mrr": round(sum(1 / r for r in ranks if r is not None) / n, 3),
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(shared: Path, *, max_tokens: int, overlap: int, k: int) -> dict[str, Any]:
    corpus = shared / "corpus" / "contracts"
    questions = [
        json.loads(line)
        for line in (shared / "eval" / "questions.dev.jsonl").read_text().splitlines()
        if line.strip()
    ]

    started = time.perf_counter()
    embedder = OnnxMiniLMEmbedder()
    embedder.warm_up()
    startup_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="conveyor-eval-") as tmp:
        client = open_qdrant(path=tmp)
        try:
            store = QdrantVectorStore(client, "eval_chunks", embedder.dim)
            store.ensure_collection()
            report = ingest_paths(
                [corpus],
                tenant=TENANT,
                store=store,
                embedder=embedder,
                max_tokens=max_tokens,
                overlap=overlap,
            )
            rows: list[dict[str, Any]] = []
            latencies: list[float] = []
            for item in questions:
                t0 = time.perf_counter()
                vector = embedder.embed_one(item["q"])
                corpus_hits = retrieve_context(
                    store, query_vector=vector, intent="question", tenant=TENANT, k=k, token_budget=10**6
                )
                latencies.append((time.perf_counter() - t0) * 1000)
                doc_hits = retrieve_context(
                    store,
                    query_vector=vector,
                    intent="question",
                    tenant=TENANT,
                    doc_id=item["doc"],
                    k=k,
                    token_budget=10**6,
                )
                rows.append(
                    {
                        "q": item["q"],
                        "doc": item["doc"],
                        "corpus_rank": first_hit_rank(corpus_hits, item["expect"], None),
                        "corpus_same_doc_rank": first_hit_rank(corpus_hits, item["expect"], item["doc"]),
                        "doc_filter_rank": first_hit_rank(doc_hits, item["expect"], item["doc"]),
                        "top_doc": corpus_hits[0].doc_id if corpus_hits else None,
                    }
                )
        finally:
            client.close()

    return {
        "questions": len(questions),
        "max_tokens": max_tokens,
        "overlap": overlap,
        "k": k,
        "corpus": metrics([r["corpus_rank"] for r in rows]),
        "corpus_same_doc": metrics([r["corpus_same_doc_rank"] for r in rows]),
        "doc_filter": metrics([r["doc_filter_rank"] for r in rows]),
        "query_latency_ms": {
            "p50": round(statistics.median(latencies), 2),
            "p95": round(percentile(latencies, 0.95), 2),
        },
        "ingest": {
            "documents": report.documents,
            "chunks": report.chunks,
            "seconds": round(report.seconds, 3),
            "chunks_per_s": round(report.chunks_per_second, 1),
        },
        "embedder_startup_s": round(startup_s, 3),
        "rows": rows,
    }


def print_table(result: dict[str, Any]) -> None:
    sizes = f"max_tokens={result['max_tokens']} overlap={result['overlap']}"
    print(f"questions: {result['questions']}  chunking: {sizes}")
    print(f"{'setting':<22}{'recall@1':>10}{'recall@5':>10}{'MRR':>8}")
    for key, label in (
        ("corpus", "corpus (any doc)"),
        ("corpus_same_doc", "corpus (same doc)"),
        ("doc_filter", "doc filter"),
    ):
        m = result[key]
        print(f"{label:<22}{m['recall@1']:>10.3f}{m['recall@5']:>10.3f}{m['mrr']:>8.3f}")
    lat, ing = result["query_latency_ms"], result["ingest"]
    print(f"query latency (embed+search): p50 {lat['p50']} ms, p95 {lat['p95']} ms")
    print(
        f"ingest: {ing['documents']} docs, {ing['chunks']} chunks in {ing['seconds']} s "
        f"({ing['chunks_per_s']} chunks/s); embedder start-up {result['embedder_startup_s']} s"
    )
    for row in result["rows"]:
        if row["corpus_rank"] != 1:
            print(f"  corpus rank {row['corpus_rank']}, doc-filter rank {row['doc_filter_rank']}: {row['q']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)

    needed = [args.shared / "corpus" / "contracts", args.shared / "eval" / "questions.dev.jsonl"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        print(f"skipped: shared evaluation data not found: {', '.join(missing)} (pass --shared DIR)")
        print(json.dumps({"skipped": True, "reason": f"missing {', '.join(missing)}"}))
        return 0

    result = run(args.shared, max_tokens=args.max_tokens, overlap=args.overlap, k=args.k)
    print_table(result)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
