"""Evaluate the intent classifier: dev-set accuracy with a confusion table, and
leave-one-out accuracy on the project's own labelled examples.

    .venv/bin/python scripts/eval_intent.py [--shared ../shared] [--method knn|centroid|both]
                                            [--json-out FILE]

The last stdout line is one JSON object. Exits 0 with a message when the shared
evaluation data is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.embeddings import OnnxMiniLMEmbedder  # noqa: E402
from pipeline.intent import (  # noqa: E402
    DEFAULT_K,
    DEFAULT_METHOD,
    DEFAULT_MIN_SIMILARITY,
    DEFAULT_THRESHOLD,
    EXAMPLES_VERSION,
    INTENTS,
    IntentClassifier,
)


def confusion_table(pairs: list[tuple[str, str]]) -> str:
    counts = Counter(pairs)
    width = max(len(i) for i in INTENTS) + 2
    lines = ["gold \\ pred".ljust(width + 2) + "".join(i[:9].rjust(10) for i in INTENTS)]
    for gold in INTENTS:
        lines.append(gold.ljust(width + 2) + "".join(str(counts[(gold, p)]).rjust(10) for p in INTENTS))
    return "\n".join(lines)


def evaluate(classifier: IntentClassifier, dev: list[dict[str, str]]) -> dict[str, Any]:
    vectors = classifier.embedder.embed([d["text"] for d in dev])
    pairs = [(d["intent"], classifier.classify_vector(v).intent) for d, v in zip(dev, vectors, strict=True)]
    errors = [
        {"text": d["text"], "gold": gold, "pred": pred}
        for d, (gold, pred) in zip(dev, pairs, strict=True)
        if gold != pred
    ]
    per_intent = {
        intent: round(
            sum(1 for g, p in pairs if g == intent and p == intent)
            / max(1, sum(1 for g, _ in pairs if g == intent)),
            3,
        )
        for intent in INTENTS
    }
    examples = classifier.examples
    assert classifier._matrix is not None
    loo = [
        classifier.classify_vector(classifier._matrix[i], exclude=i).intent == e.intent
        for i, e in enumerate(examples)
    ]
    return {
        "method": classifier.method,
        "dev_accuracy": round(sum(g == p for g, p in pairs) / len(pairs), 3),
        "dev_per_intent_recall": per_intent,
        "loo_accuracy": round(sum(loo) / len(loo), 3),
        "examples": len(examples),
        "errors": errors,
        "_pairs": pairs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--method", choices=["knn", "centroid", "both"], default="both")
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--min-similarity", type=float, default=DEFAULT_MIN_SIMILARITY)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)

    dev_path = args.shared / "eval" / "intents.dev.jsonl"
    if not dev_path.is_file():
        print(f"skipped: {dev_path} not found (pass --shared DIR)")
        print(json.dumps({"skipped": True, "reason": f"missing {dev_path}"}))
        return 0
    dev = [json.loads(line) for line in dev_path.read_text().splitlines() if line.strip()]

    started = time.perf_counter()
    embedder = OnnxMiniLMEmbedder()
    embedder.warm_up()
    startup = time.perf_counter() - started

    methods = ["knn", "centroid"] if args.method == "both" else [args.method]
    results = {}
    for method in methods:
        classifier = IntentClassifier(
            embedder, threshold=args.threshold, k=args.k, method=method, min_similarity=args.min_similarity
        )
        result = evaluate(classifier, dev)
        pairs = result.pop("_pairs")
        results[method] = result
        print(f"== {method} (examples {EXAMPLES_VERSION}: {result['examples']})")
        print(
            f"dev accuracy {result['dev_accuracy']:.3f}   leave-one-out accuracy {result['loo_accuracy']:.3f}"
        )
        print(confusion_table(pairs))
        for error in result["errors"]:
            print(f"  miss: {error['gold']:>9} -> {error['pred']:<9} {error['text']}")
        print()

    summary = {
        "default_method": DEFAULT_METHOD,
        "examples_version": EXAMPLES_VERSION,
        "dev_size": len(dev),
        "embedder_startup_s": round(startup, 3),
        "results": results,
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
