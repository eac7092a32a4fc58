"""Evaluate the prompt-injection detector against the shared development data.

    python scripts/eval_guard.py [--shared PATH] [--json OUT]

Reports recall on the labelled injections, the false-positive rate on the labelled benign
lines and on every block of the benign contracts (cut the way ``guard scan`` cuts them), and
per-call latency. Prints a table; the last line of stdout is the JSON report. Exits 0 with a
"skipped" message when the shared data is absent, so it is safe in any checkout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.guard.injection import InjectionResult, detect_injection  # noqa: E402
from pipeline.guard.scan import split_blocks  # noqa: E402


def _timed(text: str, latencies: list[float]) -> InjectionResult:
    started = time.perf_counter()
    result = detect_injection(text)
    latencies.append((time.perf_counter() - started) * 1000.0)
    return result


def load_labelled(path: Path) -> list[dict[str, Any]]:
    """Lines of ``{"text", "injection"}`` from a JSONL file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def contract_chunks(contracts_dir: Path) -> list[tuple[str, str]]:
    """``(label, text)`` for every block of every contract, label like ``nda.md#3``."""
    chunks: list[tuple[str, str]] = []
    for path in sorted(contracts_dir.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        for number, (start, end) in enumerate(split_blocks(text), start=1):
            chunks.append((f"{path.name}#{number}", text[start:end]))
    return chunks


def evaluate(shared: Path) -> dict[str, Any]:
    """Run the detector over the labelled set and the contract blocks; return the report."""
    latencies: list[float] = []
    labelled = load_labelled(shared / "eval" / "injections.dev.jsonl")
    positives = [row for row in labelled if row["injection"]]
    negatives = [row for row in labelled if not row["injection"]]
    missed = [row["text"] for row in positives if not _timed(row["text"], latencies).flagged]
    dev_false_positives = [row["text"] for row in negatives if _timed(row["text"], latencies).flagged]

    chunks = contract_chunks(shared / "corpus" / "contracts")
    flagged_chunks = []
    for label, text in chunks:
        result = _timed(text, latencies)
        if result.flagged:
            flagged_chunks.append({"chunk": label, "score": result.score, "reasons": result.reasons[:3]})
    words = [len(text.split()) for _, text in chunks]

    return {
        "injections": len(positives),
        "injections_detected": len(positives) - len(missed),
        "recall": round((len(positives) - len(missed)) / len(positives), 4) if positives else None,
        "missed": missed,
        "dev_benign": len(negatives),
        "dev_benign_flagged": len(dev_false_positives),
        "dev_false_positives": dev_false_positives,
        "contract_chunks": len(chunks),
        "contract_chunk_words_median": statistics.median(words) if words else 0,
        "contract_chunks_flagged": len(flagged_chunks),
        "contract_fp_rate": round(len(flagged_chunks) / len(chunks), 4) if chunks else None,
        "flagged_chunks": flagged_chunks,
        "calls": len(latencies),
        "latency_ms_mean": round(statistics.fmean(latencies), 3),
        "latency_ms_p95": round(_percentile(latencies, 0.95), 3),
        "latency_ms_max": round(max(latencies), 3),
    }


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def print_table(report: dict[str, Any]) -> None:
    rows = [
        (
            "injection recall",
            f"{report['recall']:.3f} ({report['injections_detected']}/{report['injections']})",
        ),
        ("dev benign flagged", f"{report['dev_benign_flagged']}/{report['dev_benign']}"),
        (
            "contract chunk FP rate",
            f"{report['contract_fp_rate']:.3f} "
            f"({report['contract_chunks_flagged']}/{report['contract_chunks']} chunks,"
            f" median {report['contract_chunk_words_median']} words)",
        ),
        ("latency per call", f"mean {report['latency_ms_mean']} ms, p95 {report['latency_ms_p95']} ms"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for text in report["missed"]:
        print(f"  missed injection: {text[:100]}")
    for text in report["dev_false_positives"]:
        print(f"  flagged benign:   {text[:100]}")
    for item in report["flagged_chunks"]:
        print(f"  flagged chunk:    {item['chunk']} score={item['score']} {'; '.join(item['reasons'])[:120]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="path to ../shared")
    parser.add_argument("--json", type=Path, dest="json_out", help="also write the JSON report here")
    args = parser.parse_args(argv)

    shared: Path = args.shared.resolve()
    if not (shared / "eval" / "injections.dev.jsonl").is_file():
        print(f"skipped: ../shared not found (looked for {shared / 'eval' / 'injections.dev.jsonl'})")
        return 0
    report = evaluate(shared)
    print_table(report)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
