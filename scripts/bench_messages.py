"""Bytes of each inter-stage message, this tree against a baseline commit, in one run.

Each side runs in its own subprocess on its own code (the baseline from a temporary
``git worktree``), with the real embedder, Qdrant local mode and the extractive generator,
over the shipped sample contracts: one summary and one question per contract. The figure
is the mean size of the JSON a stage hands to the next (what travels through the broker,
what Celery logs and Flower shows).

    python scripts/bench_messages.py [--baseline e583326] [--json-out bench-messages.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EDGES = ["request", "intent->retrieve", "retrieve->generate", "generate->guard", "guard->record"]
ASKS = [("Summarize this contract.", None), ("What is the governing law?", "question")]

# Runs inside the subprocess, against whichever tree is first on sys.path. The baseline
# (before the worker-core change) has ``pipeline.resources`` and ``pipeline.stages``; this tree
# has ``pipeline.wiring`` and the stage table.
_MEASURE = r"""
import json, sys, tempfile
from pathlib import Path
import pipeline
from pipeline.settings import load_settings
from schemas import JobRequest
from workers.cli import sample_contracts

asks = json.loads(sys.argv[1])
settings = load_settings(data_dir=Path(tempfile.mkdtemp()))
try:
    from pipeline.wiring import Components
    from schemas import PIPELINE
    from pipeline.retrieval.ingest import ingest_paths
    components = Components(settings)
    stages = [components.stage(spec) for spec in PIPELINE[:-1]]
    store, embedder = components.vector_store, components.embedder
except ImportError:
    from pipeline.ingest import ingest_paths
    from pipeline.resources import Resources
    from pipeline.stages import run_generate, run_guard, run_intent, run_retrieve
    res = Resources(settings)
    stages = [lambda m, f=f: f(m, res) for f in (run_intent, run_retrieve, run_generate, run_guard)]
    store, embedder = res.vector_store, res.embedder
docs = sample_contracts()
ingest_paths(docs, tenant="t", store=store, embedder=embedder)
sizes = {}
for text, hint in asks:
    rows = []
    for doc in docs:
        message = JobRequest(text=text, document_id=doc.stem, tenant="t", intent_hint=hint)
        row = [len(message.model_dump_json().encode())]
        for stage in stages:
            message = stage(message)
            row.append(len(message.model_dump_json().encode()))
        rows.append(row)
    sizes[text] = [round(sum(col) / len(col)) for col in zip(*rows)]
print(json.dumps({"code": str(Path(pipeline.__file__).parent.parent), "sizes": sizes}))
"""


def measure(tree: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVEYOR_")}
    env["PYTHONPATH"] = str(tree)
    done = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(ASKS)], cwd=tree, env=env,
                          capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(str(result["code"])).resolve() != tree.resolve():
        raise RuntimeError(f"measured {result['code']}, not {tree}: the import path is wrong")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="e583326", help="commit to compare with")
    parser.add_argument("--json-out", type=Path, default=Path("bench-messages.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), args.baseline],
                       check=True, capture_output=True)
        try:
            before = measure(worktree)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                           check=False, capture_output=True)
    after = measure(REPO)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mean JSON bytes per inter-stage message ({args.baseline} → this tree)")
    table.add_column("request")
    table.add_column("edge")
    table.add_column(f"before ({args.baseline})", justify="right")
    table.add_column("after", justify="right")
    table.add_column("change", justify="right")
    rows = []
    for text, _ in ASKS:
        b_sizes = before["sizes"][text]  # type: ignore[index]
        a_sizes = after["sizes"][text]  # type: ignore[index]
        for edge, b, a in zip(EDGES, b_sizes, a_sizes, strict=True):
            rows.append({"request": text, "edge": edge, "before_bytes": b, "after_bytes": a})
            table.add_row(text, edge, f"{b:,}", f"{a:,}", f"{(a - b) / b:+.0%}")
    Console(width=140).print(table)
    args.json_out.write_text(json.dumps({"baseline": args.baseline, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
