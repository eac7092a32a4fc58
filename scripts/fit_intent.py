"""Fit the default intent model offline and write the weights the package ships.

    .venv/bin/python scripts/fit_intent.py [--out FILE]

Run it after editing ``pipeline/data/intent_examples.<version>.jsonl``: the shipped file
records the examples' sha256, a unit test fails until they agree, and a worker with
stale weights fits at start instead (with a warning). Same code and hyper-parameters as
that runtime fallback (``pipeline.intent.fit``) with the MiniLM int8 embedder; the fit is
deterministic and the file written byte for byte the same on unchanged examples, so an
unneeded re-run shows no diff. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.intent.classifier import (  # noqa: E402
    DEFAULT_L2,
    default_examples_path,
    default_weights_path,
    read_weights,
)
from pipeline.intent.fit import fit_intent, load_examples, weights_metadata, write_weights  # noqa: E402
from pipeline.retrieval.embeddings import OnnxMiniLMEmbedder  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=default_weights_path(), help="default: the packaged file")
    args = parser.parse_args(argv)

    examples_path = default_examples_path()
    examples = load_examples(examples_path)
    embedder = OnnxMiniLMEmbedder()
    started = time.perf_counter()
    fitted = fit_intent(embedder, examples, "logreg", DEFAULT_L2)
    fit_s = time.perf_counter() - started
    meta = weights_metadata(embedder, examples_path, fitted, DEFAULT_L2)
    before = args.out.read_bytes() if args.out.is_file() else None
    write_weights(args.out, fitted, meta)
    read_weights(args.out)  # what the classifier will do with it
    changed = before != args.out.read_bytes()
    print(
        f"{args.out}: {args.out.stat().st_size / 1024:.0f} KiB, {meta['examples']} examples of {examples_path.name}, "
        f"temperature {meta['temperature']:.4f}, embedded and fitted in {fit_s:.2f}s, "
        f"{'changed' if changed else 'unchanged'}"
    )
    print(json.dumps({**meta, "path": str(args.out), "bytes": args.out.stat().st_size, "changed": changed}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
