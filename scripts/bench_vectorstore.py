"""Per-job vector-store time at two collection sizes, old way vs new way, in one run.

    .venv/bin/python scripts/bench_vectorstore.py [--sizes 1000,20000] [--chunks-per-doc 20]
                                                  [--jobs 40] [--json-out FILE]

For each size, a fresh Qdrant local-mode (embedded, on-disk) store in a temp dir is filled
with synthetic documents through the real ``QdrantVectorStore.upsert_document`` (random
384-dim unit vectors, ``--chunks-per-doc`` chunks each, spread over four tenants). Then, for
``--jobs`` documents picked at random, each operation a job naming a document performs is
timed both ways:

* **old** (labelled ``old: filtered scan``): a small copy of the calls the store made before
  the manifest layout (``LegacyCalls`` below): ``count`` with a tenant+doc filter for
  ``has_document``, a filtered ``scroll`` for ``document_chunks``, a filtered
  ``query_points`` for a document-scoped question. They run on the same collection (its
  payload still has ``tenant`` and ``doc_id``), and their results are checked against the
  new ones.
* **new**: ``QdrantVectorStore.has_document`` / ``document_chunks`` / ``search(tenant=...,
  doc_ids=[doc])``, which are lookups by id (+ numpy cosine for the question).

A job's store time is what ``RetrieveStage`` asks of the store: ``has_document`` twice (the
stage's check and ``retrieve_context``'s) plus ``document_chunks`` (summary) or the scoped
search (question). Tenant-wide search (no document) is unchanged and shown for reference:
in local mode it scans every point, which is what a Qdrant server (``CONVEYOR_QDRANT_URL``)
is for. Goal: per-job store time growing < 1.5x from the smallest to the largest size.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.retrieval.chunking import Chunk, chunk_id_for, content_hash_of  # noqa: E402
from pipeline.retrieval.vectorstore import Hit, QdrantVectorStore, _hit, open_qdrant  # noqa: E402

DIM = 384
TENANTS = ("acme", "globex", "initech", "umbrella")
K = 5
OVERFETCH = 3  # retrieve_context asks the store for k * OVERFETCH candidates
GOAL_RATIO = 1.5


class LegacyCalls:
    """BASELINE: the store's calls before the manifest layout (filtered scans), kept here verbatim
    in spirit so the benchmark can compare both on one collection."""

    def __init__(self, store: QdrantVectorStore) -> None:
        self.store = store
        self.client = store.client
        self.collection = store.collection

    def has_document(self, tenant: str, doc_id: str) -> bool:
        result = self.client.count(
            self.collection, count_filter=QdrantVectorStore._filter(tenant, [doc_id]), exact=True
        )
        return result.count > 0

    def document_chunks(self, tenant: str, doc_id: str) -> list[Hit]:
        hits: list[Hit] = []
        offset: Any = None
        while True:
            page, offset = self.client.scroll(
                self.collection,
                scroll_filter=QdrantVectorStore._filter(tenant, [doc_id]),
                limit=256,
                offset=offset,
                with_payload=True,
                with_vectors=False,
            )
            hits.extend(_hit(record.payload or {}, 0.0) for record in page)
            if offset is None:
                break
        return sorted(hits, key=lambda hit: hit.position)

    def search(self, vector: np.ndarray, *, k: int, tenant: str, doc_ids: list[str]) -> list[Hit]:
        response = self.client.query_points(
            self.collection,
            query=np.asarray(vector, dtype=np.float32).tolist(),
            query_filter=QdrantVectorStore._filter(tenant, doc_ids),
            limit=k,
            with_payload=True,
        )
        return [_hit(point.payload or {}, float(point.score)) for point in response.points]


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def synthetic_chunks(doc_id: str, n: int) -> list[Chunk]:
    chunks = []
    for position in range(n):
        text = f"{doc_id} | Section {position // 4 + 1}\nClause {position} of {doc_id}: the parties agree."
        digest = content_hash_of(text)
        chunks.append(Chunk(doc_id, chunk_id_for(doc_id, digest, position), f"Section {position // 4 + 1}",
                            text, position, digest))
    return chunks


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return (time.perf_counter() - started) * 1000.0, result


def summarize(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def bench_size(size: int, chunks_per_doc: int, jobs: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n_docs = max(1, size // chunks_per_doc)
    with tempfile.TemporaryDirectory(prefix="bench-vectorstore-") as tmp:
        client = open_qdrant(path=str(Path(tmp) / "qdrant"))
        try:
            store = QdrantVectorStore(client, "bench", DIM)
            store.ensure_collection()
            docs: list[tuple[str, str]] = []
            started = time.perf_counter()
            for d in range(n_docs):
                tenant, doc_id = TENANTS[d % len(TENANTS)], f"contract-{d:05d}"
                chunks = synthetic_chunks(doc_id, chunks_per_doc)
                store.upsert_document(tenant, doc_id, chunks, unit_vectors(rng, len(chunks), DIM),
                                      content_sha256=content_hash_of(doc_id))
                docs.append((tenant, doc_id))
            build_s = time.perf_counter() - started
            points = client.count("bench", exact=True).count
            legacy = LegacyCalls(store)
            picks = [docs[i] for i in rng.choice(len(docs), size=min(jobs, len(docs)), replace=False)]
            queries = unit_vectors(rng, len(picks), DIM)
            # one untimed pass of each path, so first-call costs do not land on either side
            legacy.document_chunks(*picks[0])
            store.document_chunks(*picks[0])
            samples: dict[str, dict[str, list[float]]] = {
                op: {"old": [], "new": []} for op in ("has_document", "document_chunks", "scoped_search")
            }
            tenant_wide: list[float] = []
            mismatches = 0
            for (tenant, doc_id), query in zip(picks, queries, strict=True):
                for way, api in (("old", legacy), ("new", store)):
                    ms, found = timed(partial(api.has_document, tenant, doc_id))
                    samples["has_document"][way].append(ms)
                    mismatches += not found
                ms_old, old_chunks = timed(partial(legacy.document_chunks, tenant, doc_id))
                ms_new, new_chunks = timed(partial(store.document_chunks, tenant, doc_id))
                samples["document_chunks"]["old"].append(ms_old)
                samples["document_chunks"]["new"].append(ms_new)
                mismatches += old_chunks != new_chunks
                k = K * OVERFETCH
                ms_old, old_hits = timed(partial(legacy.search, query, k=k, tenant=tenant, doc_ids=[doc_id]))
                ms_new, new_hits = timed(partial(store.search, query, k=k, tenant=tenant, doc_ids=[doc_id]))
                samples["scoped_search"]["old"].append(ms_old)
                samples["scoped_search"]["new"].append(ms_new)
                mismatches += [h.chunk_id for h in old_hits] != [h.chunk_id for h in new_hits]
                mismatches += not np.allclose([h.score for h in old_hits], [h.score for h in new_hits], atol=1e-5)
                ms, _ = timed(partial(store.search, query, k=k, tenant=tenant))
                tenant_wide.append(ms)
        finally:
            client.close()
    ops = {op: {way: summarize(values) for way, values in ways.items()} for op, ways in samples.items()}
    jobs_out: dict[str, dict[str, float]] = {}
    for way in ("old", "new"):
        has = ops["has_document"][way]["median_ms"]
        jobs_out[way] = {
            "summary_job_ms": round(2 * has + ops["document_chunks"][way]["median_ms"], 3),
            "question_job_ms": round(2 * has + ops["scoped_search"][way]["median_ms"], 3),
        }
    return {
        "target_chunks": size,
        "points": points,
        "documents": n_docs,
        "chunks_per_doc": chunks_per_doc,
        "jobs_sampled": len(picks),
        "build_seconds": round(build_s, 2),
        "results_agree": mismatches == 0,
        "mismatches": int(mismatches),
        "ops": ops,
        "per_job": jobs_out,
        "tenant_wide_search_unchanged": summarize(tenant_wide),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,20000", help="collection sizes in chunks, comma-separated")
    parser.add_argument("--chunks-per-doc", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=40, help="documents sampled per size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 110))
    runs = []
    for size in sizes:
        console.print(f"[dim]building {size} chunks ({size // args.chunks_per_doc} documents) ...[/dim]")
        runs.append(bench_size(size, args.chunks_per_doc, args.jobs, args.seed))
        run = runs[-1]
        console.print(f"[dim]  {run['points']} points in {run['build_seconds']} s; "
                      f"old and new agree: {run['results_agree']}[/dim]")

    first, last = runs[0], runs[-1]

    def ratio(a: float, b: float) -> float:
        return round(b / a, 2) if a > 0 else float("inf")

    table = Table(title=f"vector-store time per operation, Qdrant local mode (median ms over {args.jobs} jobs)")
    table.add_column("operation")
    table.add_column("way")
    for run in runs:
        table.add_column(f"{run['points']:,} pts", justify="right")
    table.add_column(f"x {last['points']:,}/{first['points']:,}", justify="right")
    labels = {"old": "old (filtered scan)", "new": "new (by id)"}
    rows: list[tuple[str, str, list[float]]] = []
    for op in ("has_document", "document_chunks", "scoped_search"):
        for way in ("old", "new"):
            rows.append((op, way, [run["ops"][op][way]["median_ms"] for run in runs]))
    for job in ("summary_job_ms", "question_job_ms"):
        for way in ("old", "new"):
            rows.append((job.removesuffix("_ms").replace("_", " ") + " total", way,
                         [run["per_job"][way][job] for run in runs]))
    for name, way, values in rows:
        growth = ratio(values[0], values[-1])
        style = "bold" if "job" in name else ""
        mark = "" if way == "old" else (" ok" if growth < GOAL_RATIO else " over")
        table.add_row(name, labels[way], *[f"{v:.3f}" for v in values], f"{growth}{mark}", style=style)
    wide = [run["tenant_wide_search_unchanged"]["median_ms"] for run in runs]
    table.add_row("tenant-wide search", "unchanged", *[f"{v:.3f}" for v in wide],
                  str(ratio(wide[0], wide[-1])), style="dim")
    console.print(table)

    growth = {
        job: ratio(first["per_job"]["new"][job], last["per_job"]["new"][job])
        for job in ("summary_job_ms", "question_job_ms")
    }
    goal_met = all(value < GOAL_RATIO for value in growth.values())
    agree = all(run["results_agree"] for run in runs)
    console.print(f"per-job store time growth (new) {first['points']:,} -> {last['points']:,} points: "
                  f"summary x{growth['summary_job_ms']}, question x{growth['question_job_ms']} "
                  f"(goal < {GOAL_RATIO}): {'[green]met[/green]' if goal_met else '[red]not met[/red]'}; "
                  f"old/new results agree: {agree}")
    if args.json_out:
        args.json_out.write_text(json.dumps({
            "benchmark": "bench_vectorstore",
            "mode": "qdrant local (embedded, on-disk)",
            "python": platform.python_version(),
            "machine": platform.machine(),
            "dim": DIM,
            "k": K * OVERFETCH,
            "runs": runs,
            "per_job_growth_new": growth,
            "goal_ratio": GOAL_RATIO,
            "goal_met": goal_met,
            "results_agree": agree,
        }, indent=2) + "\n")
        console.print(f"wrote {args.json_out}")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
