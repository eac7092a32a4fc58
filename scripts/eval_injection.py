"""Evaluate the injection detector: rules alone vs rules + learned model, side by side.

    .venv/bin/python scripts/eval_injection.py [--dev PATH] [--corpus DIR] [--json-out FILE]

Reports, with Wilson 95 % intervals: recall on the public dev half overall, per kind and
per source; the false-positive rate on its benign rows; the false-positive rate on contract
clauses (every block of ``pipeline/data/contracts`` and, for evaluation only, of the shared
corpus ``../shared/corpus/contracts``, cut as ``guard scan`` cuts them); and the
leave-one-source-out figure: for each source of the dev half, the model is refitted
in-process without that source's rows and tested on them. The shipped model was fitted
on the whole dev half, so its dev recall is a training-set figure; leave-one-source-out is
the honest estimate for unseen attacks. The last stdout line is the JSON report.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.guard.injection import (  # noqa: E402
    DEFAULT_THRESHOLD,
    InjectionModel,
    combine,
    default_model_path,
    detect_injection_rules,
    embed_for_fit,
    fit_weights,
    read_model,
)
from pipeline.guard.scan import split_blocks  # noqa: E402
from pipeline.retrieval.embeddings import OnnxMiniLMEmbedder  # noqa: E402

DEFAULT_DEV = REPO.parent / "shared" / "eval" / "injections-public" / "dev.jsonl"
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "contracts"


def _fit_module() -> Any:
    spec = importlib.util.spec_from_file_location("fit_injection", REPO / "scripts" / "fit_injection.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wilson(hits: int, n: int, z: float = 1.96) -> dict[str, Any]:
    """Proportion with its Wilson score interval (sound at 0/n and n/n, unlike the normal one)."""
    if n == 0:
        return {"k": 0, "n": 0, "rate": None, "ci95": None}
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {
        "k": hits,
        "n": n,
        "rate": round(p, 4),
        "ci95": [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)],
    }


def _legal(row: dict[str, Any]) -> bool:
    """Dev rows that are contract clauses (LegalBench, Common Paper): the legal look-alikes."""
    return not row["injection"] and row["source"].split("/")[0] in ("HazyResearch", "CommonPaper")


def stratified_folds(rows: list[dict[str, Any]], k: int, seed: int = 0) -> list[int]:
    """Fold number per row, each (source, kind) group dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    fold = [0] * len(rows)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[(row["source"], row["kind"])].append(i)
    for key in sorted(groups):
        members = np.array(groups[key])
        rng.shuffle(members)
        offset = int(rng.integers(k))
        for j, i in enumerate(members):
            fold[int(i)] = (j + offset) % k
    return fold


def blocks_of(directory: Path) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for path in sorted(directory.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        out.extend((f"{path.name}#{i}", text[a:b]) for i, (a, b) in enumerate(split_blocks(text), start=1))
    return out


def ingest_chunks_of(directory: Path) -> list[str]:
    """Every chunk of every contract as ingest cuts it: the unit the retrieve stage screens."""
    from pipeline.retrieval.chunking import chunk_document

    out: list[str] = []
    for path in sorted(directory.glob("*.md")):
        out.extend(chunk.text for chunk in chunk_document(path.stem, path.read_text(encoding="utf-8")))
    return out


def verdicts(texts: list[str], feats: list[np.ndarray], model: InjectionModel | None) -> list[bool]:
    out = []
    for text, f in zip(texts, feats, strict=True):
        rules = detect_injection_rules(text)
        if model is None:
            out.append(rules.flagged)
            continue
        probs = model.probabilities(f)
        limit = model.threshold_for(text)
        out.append(combine(rules, text, float(probs.max()), None, limit, DEFAULT_THRESHOLD).flagged)
    return out


def recall_table(rows: list[dict[str, Any]], flagged: list[bool]) -> dict[str, Any]:
    table: dict[str, Any] = {"overall": None, "by_kind": {}, "by_source": {}, "benign_fp": None}
    pos = [(r, f) for r, f in zip(rows, flagged, strict=True) if r["injection"]]
    neg = [f for r, f in zip(rows, flagged, strict=True) if not r["injection"]]
    table["overall"] = wilson(sum(f for _, f in pos), len(pos))
    table["benign_fp"] = wilson(sum(neg), len(neg))
    for key, field in (("by_kind", "kind"), ("by_source", "source")):
        groups: dict[str, list[bool]] = defaultdict(list)
        for r, f in pos:
            groups[r[field]].append(f)
        table[key] = {g: wilson(sum(v), len(v)) for g, v in sorted(groups.items())}
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="contracts for the FP rate (eval only)")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--no-loso", action="store_true", help="skip the leave-one-source-out refits")
    parser.add_argument("--folds", type=int, default=5, help="stratified k-fold on the dev half")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "conveyor" / "injection-embeddings.npz")
    parser.add_argument("--no-cache", action="store_true")
    args = parser.parse_args(argv)
    if not args.dev.is_file():
        print(f"skipped: dev set not found at {args.dev}")
        return 0
    fit = _fit_module()
    dev = fit.load_rows(args.dev)
    own = fit.own_rows()
    clauses = blocks_of(REPO / "pipeline" / "data" / "contracts")
    chunk_sets = {
        "samples": ingest_chunks_of(REPO / "pipeline" / "data" / "contracts"),
        "golden": ingest_chunks_of(REPO / "evals" / "summary" / "contracts"),
        "corpus": ingest_chunks_of(args.corpus) if args.corpus.is_dir() else [],
    }
    corpus = blocks_of(args.corpus) if args.corpus.is_dir() else []
    embedder = fit.CachedEmbedder(OnnxMiniLMEmbedder(threads=2), None if args.no_cache else args.cache)
    started = time.perf_counter()
    texts = [r["text"] for r in dev] + [r["text"] for r in own] + [t for _, t in clauses] + [t for _, t in corpus]
    feats = embed_for_fit(embedder, texts)
    embed_s = time.perf_counter() - started
    units = sum(len(f) for f in feats)
    n_dev, n_own, n_cl = len(dev), len(own), len(clauses)
    f_dev, f_own = feats[:n_dev], feats[n_dev : n_dev + n_own]
    f_cl, f_corpus = feats[n_dev + n_own : n_dev + n_own + n_cl], feats[n_dev + n_own + n_cl :]
    dev_texts = [r["text"] for r in dev]
    shipped = read_model(default_model_path())

    report: dict[str, Any] = {
        "dev": str(args.dev),
        "dev_rows": n_dev,
        "model_threshold": shipped.threshold,
        "model_threshold_single": shipped.threshold_single,
    }
    for name, model in (("rules", None), ("rules+model", shipped)):
        report[name] = {
            "dev_in_sample": recall_table(dev, verdicts(dev_texts, f_dev, model)),
            "fp_sample_contract_blocks": wilson(sum(verdicts([t for _, t in clauses], f_cl, model)), n_cl),
            "fp_corpus_contract_blocks": wilson(sum(verdicts([t for _, t in corpus], f_corpus, model)), len(corpus)),
        }
    # stratified k-fold: the honest estimate of the held-out half (same sources, same kinds)
    cv_flags: list[bool] = [False] * n_dev
    cv_corpus_fp: list[int] = []
    fold_of = stratified_folds(dev, args.folds)
    for fold in range(args.folds):
        test = [i for i, f in enumerate(fold_of) if f == fold]
        train = [i for i, f in enumerate(fold_of) if f != fold]
        weights = fit_weights(
            [f_dev[i] for i in train] + f_own, [dev[i]["injection"] for i in train] + [r["injection"] for r in own]
        )
        model = InjectionModel(weights=weights, threshold=shipped.threshold, threshold_single=shipped.threshold_single)
        for i, flagged in zip(
            test, verdicts([dev_texts[i] for i in test], [f_dev[i] for i in test], model), strict=True
        ):
            cv_flags[i] = flagged
        cv_corpus_fp.append(sum(verdicts([t for _, t in corpus], f_corpus, model)))
    report["rules+model"]["cv"] = recall_table(dev, cv_flags)
    report["rules+model"]["cv"]["folds"] = args.folds
    report["rules+model"]["cv"]["corpus_fp_per_fold"] = cv_corpus_fp
    report["rules+model"]["cv"]["fp_dev_legal_clauses"] = wilson(
        sum(f for r, f in zip(dev, cv_flags, strict=True) if _legal(r)), sum(1 for r in dev if _legal(r))
    )
    report["rules"]["dev_in_sample"]["fp_dev_legal_clauses"] = wilson(
        sum(f for r, f in zip(dev, verdicts(dev_texts, f_dev, None), strict=True) if _legal(r)),
        sum(1 for r in dev if _legal(r)),
    )
    if not args.no_loso:
        loso_flags: list[bool] = [False] * n_dev
        loso_corpus_fp: list[int] = []
        sources = sorted({r["source"] for r in dev})
        for source in sources:
            train = [i for i, r in enumerate(dev) if r["source"] != source]
            weights = fit_weights(
                [f_dev[i] for i in train] + f_own, [dev[i]["injection"] for i in train] + [r["injection"] for r in own]
            )
            model = InjectionModel(
                weights=weights, threshold=shipped.threshold, threshold_single=shipped.threshold_single
            )
            test = [i for i, r in enumerate(dev) if r["source"] == source]
            for i, flagged in zip(
                test, verdicts([dev_texts[i] for i in test], [f_dev[i] for i in test], model), strict=True
            ):
                loso_flags[i] = flagged
            loso_corpus_fp.append(sum(verdicts([t for _, t in corpus], f_corpus, model)))
        report["rules+model"]["leave_one_source_out"] = recall_table(dev, loso_flags)
        report["rules+model"]["leave_one_source_out"]["corpus_fp_per_fold_max"] = max(loso_corpus_fp, default=0)
    # contract chunks as ingest cuts them (the unit the retrieve stage screens), shipped model
    chunk_started = time.perf_counter()
    chunk_texts = [t for texts_ in chunk_sets.values() for t in texts_]
    chunk_feats = embed_for_fit(embedder, chunk_texts)
    chunk_s = time.perf_counter() - chunk_started
    report["rules+model"]["fp_contract_chunks"] = {}
    offset = 0
    for name, texts_ in chunk_sets.items():
        flagged_ = verdicts(texts_, chunk_feats[offset : offset + len(texts_)], shipped)
        offset += len(texts_)
        report["rules+model"]["fp_contract_chunks"][name] = wilson(sum(flagged_), len(texts_))
    chunk_units = sum(len(f) for f in chunk_feats)
    report["chunk_cost"] = {
        "chunks": len(chunk_texts),
        "units_per_chunk": round(chunk_units / max(1, len(chunk_texts)), 2),
        "seconds": round(chunk_s, 2),
    }
    # what one chunk costs the retrieve stage: a fresh detector (no memo, no cache) on 40 golden chunks
    sample = chunk_sets["golden"][:40]
    if sample:
        from pipeline.guard.injection import LearnedDetector

        detector = LearnedDetector(embedder.embedder, shipped)
        timed = time.perf_counter()
        detector.score_many(sample)
        report["chunk_cost"]["ms_per_chunk_uncached"] = round(1000 * (time.perf_counter() - timed) / len(sample), 1)
    report["embedding"] = {
        "texts": len(texts),
        "units": units,
        "seconds": round(embed_s, 2),
        "cached": not args.no_cache,
        "ms_per_unit": round(1000 * embed_s / max(1, units), 2),
        "ms_per_contract_block": round(
            1000 * embed_s / max(1, units) * sum(len(f) for f in f_cl + f_corpus) / max(1, n_cl + len(corpus)), 1
        ),
    }
    print_table(report)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report))
    return 0


def _fmt(w: dict[str, Any] | None) -> str:
    if not w or w["rate"] is None:
        return "-"
    return f"{w['rate']:.3f} [{w['ci95'][0]:.2f}-{w['ci95'][1]:.2f}] ({w['k']}/{w['n']})"


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    rules, both = report["rules"]["dev_in_sample"], report["rules+model"]
    cv, loso, fitted = both["cv"], both.get("leave_one_source_out"), both["dev_in_sample"]
    table = Table(title=f"Injection detector on {report['dev_rows']} dev rows (Wilson 95 % intervals)")
    for name in ("", "rules only", f"rules+model {cv['folds']}-fold CV", "rules+model leave-one-source-out",
                 "rules+model in-sample*"):  # fmt: skip
        table.add_column(name)

    def row(label: str, key: Any) -> None:
        table.add_row(label, *(_fmt(key(t)) if t else "-" for t in (rules, cv, loso, fitted)))

    row("recall, all attacks", lambda t: t["overall"])
    for kind in rules["by_kind"]:
        row(f"  {kind}", lambda t, kind=kind: t["by_kind"].get(kind))
    for source in rules["by_source"]:
        row(f"  {source}", lambda t, source=source: t["by_source"].get(source))
    row("FP, dev benign rows", lambda t: t["benign_fp"])
    table.add_row("FP, dev legal clauses", _fmt(rules["fp_dev_legal_clauses"]), _fmt(cv["fp_dev_legal_clauses"]),
                  "-", "-")  # fmt: skip
    table.add_row(
        "FP, shared corpus contract blocks",
        _fmt(report["rules"]["fp_corpus_contract_blocks"]),
        f"per fold {cv['corpus_fp_per_fold']}",
        f"max per fold {loso['corpus_fp_per_fold_max']}" if loso else "-",
        _fmt(both["fp_corpus_contract_blocks"]),
    )
    table.add_row(
        "FP, sample contract blocks*",
        _fmt(report["rules"]["fp_sample_contract_blocks"]),
        "-",
        "-",
        _fmt(both["fp_sample_contract_blocks"]),
    )
    Console(width=200).print(table)
    print("* in-sample: the shipped model, fitted on all of the dev half and the sample contracts.")
    print(
        f"model threshold p >= {report['model_threshold']} (one-sentence texts: {report['model_threshold_single']});"
        " the held-out half will likely score lower than CV."
    )
    chunks = report["rules+model"].get("fp_contract_chunks", {})
    print(
        "FP, contract chunks as ingest cuts them (shipped model): "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in chunks.items())
    )
    c = report.get("chunk_cost", {})
    print(f"per chunk: {c.get('units_per_chunk')} units, {c.get('ms_per_chunk_uncached')} ms per chunk (uncached)")
    e = report["embedding"]
    print(f"embedding: {e['units']} units in {e['seconds']} s (cached: {e.get('cached', False)})")


if __name__ == "__main__":
    sys.exit(main())
