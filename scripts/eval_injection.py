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


def blocks_of(directory: Path) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for path in sorted(directory.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        out.extend((f"{path.name}#{i}", text[a:b]) for i, (a, b) in enumerate(split_blocks(text), start=1))
    return out


def verdicts(texts: list[str], feats: list[np.ndarray], model: InjectionModel | None) -> list[bool]:
    out = []
    for text, f in zip(texts, feats, strict=True):
        rules = detect_injection_rules(text)
        if model is None:
            out.append(rules.flagged)
            continue
        probs = model.probabilities(f)
        out.append(combine(rules, text, float(probs.max()), None, model.threshold, DEFAULT_THRESHOLD).flagged)
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
    args = parser.parse_args(argv)
    if not args.dev.is_file():
        print(f"skipped: dev set not found at {args.dev}")
        return 0
    fit = _fit_module()
    dev = fit.load_rows(args.dev)
    own = fit.own_rows()
    clauses = blocks_of(REPO / "pipeline" / "data" / "contracts")
    corpus = blocks_of(args.corpus) if args.corpus.is_dir() else []
    embedder = OnnxMiniLMEmbedder(threads=2)
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

    report: dict[str, Any] = {"dev": str(args.dev), "dev_rows": n_dev, "model_threshold": shipped.threshold}
    for name, model in (("rules", None), ("rules+model", shipped)):
        report[name] = {
            "dev_in_sample": recall_table(dev, verdicts(dev_texts, f_dev, model)),
            "fp_sample_contract_blocks": wilson(sum(verdicts([t for _, t in clauses], f_cl, model)), n_cl),
            "fp_corpus_contract_blocks": wilson(sum(verdicts([t for _, t in corpus], f_corpus, model)), len(corpus)),
        }
    if not args.no_loso:
        loso_flags: list[bool] = [False] * n_dev
        loso_corpus_fp: list[int] = []
        sources = sorted({r["source"] for r in dev})
        for source in sources:
            train = [i for i, r in enumerate(dev) if r["source"] != source]
            weights = fit_weights(
                [f_dev[i] for i in train] + f_own, [dev[i]["injection"] for i in train] + [r["injection"] for r in own]
            )
            model = InjectionModel(weights=weights, threshold=shipped.threshold)
            test = [i for i, r in enumerate(dev) if r["source"] == source]
            for i, flagged in zip(
                test, verdicts([dev_texts[i] for i in test], [f_dev[i] for i in test], model), strict=True
            ):
                loso_flags[i] = flagged
            loso_corpus_fp.append(sum(verdicts([t for _, t in corpus], f_corpus, model)))
        report["rules+model"]["leave_one_source_out"] = recall_table(dev, loso_flags)
        report["rules+model"]["leave_one_source_out"]["corpus_fp_per_fold_max"] = max(loso_corpus_fp, default=0)
    report["embedding"] = {
        "texts": len(texts),
        "units": units,
        "seconds": round(embed_s, 2),
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
    rules, both = report["rules"], report["rules+model"]
    loso = both.get("leave_one_source_out")
    print(f"{'':34} {'rules':32} {'rules+model (dev in-sample)':32} {'rules+model leave-one-source-out'}")

    def line(label: str, a: Any, b: Any, c: Any) -> None:
        print(f"{label:34} {_fmt(a):32} {_fmt(b):32} {_fmt(c)}")

    line(
        "recall, all attacks",
        rules["dev_in_sample"]["overall"],
        both["dev_in_sample"]["overall"],
        loso and loso["overall"],
    )
    for kind in rules["dev_in_sample"]["by_kind"]:
        line(f"  kind {kind}", rules["dev_in_sample"]["by_kind"][kind], both["dev_in_sample"]["by_kind"][kind],
             loso and loso["by_kind"][kind])  # fmt: skip
    for source in rules["dev_in_sample"]["by_source"]:
        line(f"  source {source[:26]}", rules["dev_in_sample"]["by_source"][source],
             both["dev_in_sample"]["by_source"][source], loso and loso["by_source"][source])  # fmt: skip
    line(
        "FP, dev benign rows",
        rules["dev_in_sample"]["benign_fp"],
        both["dev_in_sample"]["benign_fp"],
        loso and loso["benign_fp"],
    )
    line("FP, sample contract blocks*", rules["fp_sample_contract_blocks"], both["fp_sample_contract_blocks"], None)
    line(
        "FP, shared corpus contract blocks", rules["fp_corpus_contract_blocks"], both["fp_corpus_contract_blocks"], None
    )
    print("* the sample contracts' sentences are model training data; the shared corpus is not.")
    e = report["embedding"]
    print(f"embedding: {e['units']} units in {e['seconds']} s, {e['ms_per_unit']} ms/unit, "
          f"~{e['ms_per_contract_block']} ms per 250-word contract block")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
