"""Start-up cost before and after shipping the fitted intent weights, measured in one run.

    .venv/bin/python scripts/bench_startup.py [--baseline e583326] [--runs 5] [--worker-runs 3]
                                              [--broker-url redis://127.0.0.1:6379/14] [--json-out FILE]

"before" is ``--baseline`` (the commit whose classifier fitted at every start), checked
out with ``git worktree add --detach`` into a temp dir and removed at the end; "after" is
this working tree as it is (uncommitted changes included; the JSON records how many).
Both run with this venv through the same launcher, ``python -c "from workers.cli import
main; main()"`` with ``PYTHONPATH`` and cwd at the tree, and every run prints
``pipeline.__file__`` so a run that imported the other tree (the venv's editable install
points at this one) is rejected. Each side gets its own bytecode cache
(``PYTHONPYCACHEPREFIX``, warmed by one discarded run) and data dir; ``CONVEYOR_*``
variables other than the ones set here are removed.

Measured per side:

* ``conveyor classify TEXT``: wall time of the whole process (median of ``--runs``);
* ``IntentClassifier.warm_up()`` alone, in a fresh process with the embedder loaded;
* ``conveyor worker -Q intent --pool solo`` against the Redis at ``--broker-url`` (a
  database of its own, never flushed): time from process start to the log line
  "warmed up for intent" and to celery's "ready." (median of ``--worker-runs``); the
  worker is stopped by its PID (SIGTERM, then SIGKILL after 20 s).

A side that fails (e.g. a tree in the middle of a refactor) is reported as failed with
its last output line instead of stopping the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: the console script ``conveyor`` is ``from workers.cli import main; sys.exit(main())``; this
#: adds the import check (printed to stderr, before the command runs).
LAUNCH = (
    "import sys, pipeline; print('bench:pipeline=' + pipeline.__file__, file=sys.stderr, flush=True); "
    "from workers.cli import main; sys.argv[0] = 'conveyor'; sys.exit(main())"
)

#: the classifier's warm-up alone; module paths differ between the two trees.
WARM_UP_ONLY = """
import json, sys, time
import pipeline
try:
    from pipeline.intent.classifier import IntentClassifier
    from pipeline.retrieval.embeddings import OnnxMiniLMEmbedder
except ImportError:  # before the folders of 936f4da
    from pipeline.intent import IntentClassifier
    from pipeline.embeddings import OnnxMiniLMEmbedder
embedder = OnnxMiniLMEmbedder()
embedder.warm_up()
started = time.perf_counter()
IntentClassifier(embedder).warm_up()
print(json.dumps({"warm_up_s": time.perf_counter() - started, "pipeline": pipeline.__file__}))
"""

WARMED = re.compile(r"warmed up for intent")
READY = re.compile(r"celery@\S+ ready\.")


@dataclass
class Measure:
    """One quantity on one side: the samples, or why there are none."""

    samples: list[float] = field(default_factory=list)
    error: str | None = None
    detail: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


@dataclass
class Side:
    name: str
    root: Path
    label: str
    env: dict[str, str]
    results: dict[str, Measure] = field(default_factory=dict)


def side_env(root: Path, scratch: Path, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVEYOR_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        PYTHONPATH=str(root),
        PYTHONPYCACHEPREFIX=str(scratch / f"pycache-{name}"),
        PYTHONUNBUFFERED="1",
        CONVEYOR_DATA_DIR=str(scratch / f"data-{name}"),
    )
    return env


def check_import(stderr: str, root: Path) -> None:
    """Raise unless the run imported ``pipeline`` from ``root``."""
    match = re.search(r"^bench:pipeline=(.+)$", stderr, re.M)
    if not match:
        raise RuntimeError("the run did not report pipeline.__file__")
    if not Path(match.group(1)).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"imported {match.group(1)}, not the tree at {root}")


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip() and not line.startswith("bench:")]
    return lines[-1][:160] if lines else "(no output)"


def bench_classify(side: Side, text: str, runs: int) -> Measure:
    measure = Measure()
    command = [PYTHON, "-c", LAUNCH, "classify", text]
    for run in range(runs + 1):  # run 0 fills the bytecode cache and the page cache: not counted
        started = time.perf_counter()
        done = subprocess.run(command, cwd=side.root, env=side.env, capture_output=True, text=True, timeout=300)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            measure.error = f"exit {done.returncode}: {last_line(done.stderr or done.stdout)}"
            return measure
        check_import(done.stderr, side.root)
        measure.detail = done.stdout.strip()
        if run:
            measure.samples.append(elapsed)
    return measure


def bench_warm_up_only(side: Side, runs: int) -> Measure:
    measure = Measure()
    for run in range(runs + 1):
        done = subprocess.run(
            [PYTHON, "-c", WARM_UP_ONLY], cwd=side.root, env=side.env, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            measure.error = f"exit {done.returncode}: {last_line(done.stderr)}"
            return measure
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if not Path(result["pipeline"]).resolve().is_relative_to(side.root.resolve()):
            raise RuntimeError(f"imported {result['pipeline']}, not the tree at {side.root}")
        if run:
            measure.samples.append(float(result["warm_up_s"]))
    return measure


def run_worker_once(side: Side, broker_url: str, timeout: float) -> tuple[float | None, float | None, str]:
    """(seconds to "warmed up for intent", seconds to "ready.", last line); stops the worker by PID."""
    env = {**side.env, "CONVEYOR_BROKER_URL": broker_url}
    command = [PYTHON, "-c", LAUNCH, "worker", "-Q", "intent", "--pool", "solo"]
    lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=side.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((time.perf_counter() - started, line.rstrip("\n")))
        lines.put((time.perf_counter() - started, None))

    threading.Thread(target=pump, daemon=True).start()
    warmed = ready = None
    output: list[str] = []
    ending = ""
    try:
        while ready is None:
            try:
                at, line = lines.get(timeout=max(0.1, timeout - (time.perf_counter() - started)))
            except queue.Empty:
                ending = f"no 'ready.' after {timeout:.0f}s"
                break
            if line is None:
                ending = f"exit {proc.wait()}"
                break
            output.append(line)
            if line.startswith("bench:pipeline="):
                check_import(line, side.root)
            if warmed is None and WARMED.search(line):
                warmed = at
            if READY.search(line):
                ready = at
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # warm shutdown of the one process we started
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if warmed is None and ready is not None:
        skipped = [line for line in output if "warm-up skipped" in line]
        return warmed, ready, (skipped or ["ready without 'warmed up for intent'"])[0][-160:]
    if warmed is None or ready is None:
        return warmed, ready, f"{ending}: {last_line(chr(10).join(output))}"
    return warmed, ready, ""


def bench_worker(side: Side, broker_url: str, runs: int, timeout: float) -> tuple[Measure, Measure]:
    warmed, ready = Measure(), Measure()
    for run in range(runs + 1):
        to_warm, to_ready, problem = run_worker_once(side, broker_url, timeout)
        if problem:
            warmed.error = ready.error = problem
            return warmed, ready
        if run:
            assert to_warm is not None and to_ready is not None
            warmed.samples.append(to_warm)
            ready.samples.append(to_ready)
    return warmed, ready


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


ROWS = (
    ("classify", "conveyor classify (wall, s)"),
    ("warm_up_only", "IntentClassifier.warm_up() (s)"),
    ("worker_warmed", "worker: 'warmed up for intent' (s)"),
    ("worker_ready", "worker: 'ready.' (s)"),
)


def cell(measure: Measure | None) -> str:
    if measure is None:
        return "not run"
    if measure.error:
        return f"FAILED ({measure.error[:70]})"
    if not measure.samples:
        return "no samples"
    value = measure.median
    assert value is not None
    spread = f" [{min(measure.samples):.3f}-{max(measure.samples):.3f}]" if len(measure.samples) > 1 else ""
    return f"{value:.3f}{spread}"


def change(before: Measure | None, after: Measure | None) -> str:
    if not before or not after or before.median is None or after.median is None or before.error or after.error:
        return ""
    delta = after.median - before.median
    return f"{delta:+.3f} s ({delta / before.median:+.0%})"


def table_rows(sides: list[Side]) -> list[tuple[str, str, str, str]]:
    """Header first, then one row per measure."""
    before, after = sides
    header = ("median [min-max]", f"before {before.label}", f"after {after.label}", "change")
    return [header] + [
        (title, cell(before.results.get(key)), cell(after.results.get(key)),
         change(before.results.get(key), after.results.get(key)))
        for key, title in ROWS
    ]


def plain_table(rows: list[tuple[str, str, str, str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(value.ljust(widths[i]) for i, value in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(sides: list[Side]) -> None:
    """rich when it is installed, else plain text (same cells)."""
    rows = table_rows(sides)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(plain_table(rows))
        return
    table = Table(title="start-up, seconds")
    for i, name in enumerate(rows[0]):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows[1:]:
        table.add_row(*row)
    Console(width=max(120, Console().width)).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="e583326", help="commit for 'before' (fits at every start)")
    parser.add_argument("--text", default="Summarize this contract.")
    parser.add_argument("--runs", type=int, default=5, help="timed classify runs per side (after one untimed)")
    parser.add_argument("--worker-runs", type=int, default=3, help="timed worker starts per side; 0 skips")
    parser.add_argument("--worker-timeout", type=float, default=120.0)
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--json-out", type=Path, default=Path("bench-startup.json"))
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="conveyor-bench-startup-"))
    worktree = scratch / "baseline"
    baseline = git("rev-parse", "--short", args.baseline)
    git("worktree", "add", "--detach", str(worktree), args.baseline)
    try:
        dirty = len(git("status", "--porcelain").splitlines())
        head = git("rev-parse", "--short", "HEAD")
        sides = [
            Side("before", worktree, baseline, side_env(worktree, scratch, "before")),
            Side("after", REPO, f"{head}+{dirty} changed", side_env(REPO, scratch, "after")),
        ]
        for side in sides:
            print(f"{side.name}: {side.root} ({side.label})", file=sys.stderr)
            side.results["classify"] = bench_classify(side, args.text, args.runs)
            side.results["warm_up_only"] = bench_warm_up_only(side, args.runs)
            if args.worker_runs > 0:
                warmed, ready = bench_worker(side, args.broker_url, args.worker_runs, args.worker_timeout)
                side.results["worker_warmed"], side.results["worker_ready"] = warmed, ready
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False)
        shutil.rmtree(scratch, ignore_errors=True)

    print_table(sides)
    for side in sides:
        output = side.results["classify"].detail
        if output:
            print(f"{side.name}: conveyor classify {args.text!r} -> {output}")
    summary: dict[str, Any] = {
        "baseline": baseline,
        "text": args.text,
        "runs": args.runs,
        "worker_runs": args.worker_runs,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sides": {
            side.name: {
                "root": str(side.root) if side.name == "after" else f"worktree of {baseline}",
                "label": side.label,
                "results": {key: {**asdict(m), "median": m.median} for key, m in side.results.items()},
            }
            for side in sides
        },
    }
    args.json_out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
