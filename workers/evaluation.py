"""``conveyor eval``: golden suites run through the real pipeline, a table, JSON, and a gate.

Suites (in ``evals/``, written for this project):

- ``summary-fields``: the golden contracts (``evals/summary/contracts/*.md``) go through the
  pipeline as one batch (ingest, intent, retrieve, generate, guard, record), and each record's
  summary is compared with ``evals/summary/key.jsonl`` field by field (rules:
  ``workers/eval_scoring.py``). Metrics: each field's accuracy and ``overall``.
- ``questions``: ``evals/questions.jsonl`` (question, document, expected fact, section), asked of
  the ingested golden contracts with intent ``question``. ``answer_contains``: the answer contains
  the fact (``normalize_for_match``); ``cites_holder``: a cited chunk contains it; ``both``.
- ``intents``: ``evals/intents.jsonl`` through the configured classifier (the helpers of
  ``scripts/eval_intent.py``). Metric: ``accuracy``.
- ``injections``: ``evals/injections.jsonl`` through ``pipeline.guard.injection.detect_injection``
  (the helpers of ``scripts/eval_guard.py``), plus every block of the golden contracts as benign
  text. Metrics: ``recall``, ``benign_flagged`` and ``contract_fp_rate`` (upper bounds).

``evals/thresholds.toml`` holds the gate: ``[suite] metric = minimum`` and ``[suite.max]
metric = maximum``. Everything runs offline on the embedded runtime, in a temporary data
directory, with whatever generator the settings select (extractive, or the OpenAI-compatible
endpoint of ``CONVEYOR_LLM_BASE_URL``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline.settings import Settings
from workers.eval_scoring import FIELDS, score_summary

REPO = Path(__file__).resolve().parent.parent
EVALS = REPO / "evals"
SUITES = ("summary-fields", "questions", "intents", "injections")
TENANT = "eval"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _script(name: str) -> ModuleType:
    """One of the repository's evaluation scripts, imported by path (``scripts/`` is not a package)."""
    path = REPO / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"conveyor_scripts_{name}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- thresholds and the gate ------------------------------------------------------------------------
def load_thresholds(path: Path) -> dict[str, dict[str, Any]]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def gate(suites: dict[str, dict[str, Any]], thresholds: dict[str, dict[str, Any]]) -> list[str]:
    """Every metric outside its threshold, as 'suite.metric value < minimum' lines."""
    failures = []
    for suite, result in suites.items():
        metrics = result.get("metrics", {})
        bounds = thresholds.get(suite, {})
        for metric, minimum in bounds.items():
            if metric == "max" or metric not in metrics or metrics[metric] is None:
                continue
            if metrics[metric] < float(minimum):
                failures.append(f"{suite}.{metric} {metrics[metric]:.3f} < {float(minimum):.3f}")
        for metric, maximum in bounds.get("max", {}).items():
            if metric in metrics and metrics[metric] is not None and metrics[metric] > float(maximum):
                failures.append(f"{suite}.{metric} {metrics[metric]:.3f} > {float(maximum):.3f}")
    return failures


# --- the pipeline suites ----------------------------------------------------------------------------
def _summary_metrics(items: list[dict[str, Any]]) -> dict[str, float]:
    n = len(items) or 1
    metrics = {name: round(sum(item["correct"][name] for item in items) / n, 3) for name in FIELDS}
    metrics["overall"] = round(sum(sum(item["correct"].values()) for item in items) / (n * len(FIELDS)), 3)
    return metrics


def run_pipeline_suites(
    make_settings: Callable[[Path], Settings],
    *,
    summary: bool,
    questions: bool,
    contracts_dir: Path,
    key_path: Path,
    questions_path: Path,
    limit: int | None = None,
    timeout: float = 600.0,
) -> dict[str, dict[str, Any]]:
    """Ingest and summarize the golden contracts in an embedded runtime; ask the questions."""
    from pipeline.text import normalize_for_match
    from schemas import Intent, JobRequest
    from workers.batch import records_of
    from workers.embedded import EmbeddedRuntime

    keys = _read_jsonl(key_path)[:limit] if limit else _read_jsonl(key_path)
    docs = [key["doc"] for key in keys]
    asked = [q for q in _read_jsonl(questions_path) if q["doc"] in docs] if questions else []
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="conveyor-eval-") as tmp:
        settings = make_settings(Path(tmp))
        with EmbeddedRuntime(settings) as rt:
            started = time.monotonic()
            report = rt.client.submit_batch([contracts_dir / doc for doc in docs], tenant=TENANT)
            rt.client.wait_batch(report.batch_id, timeout=timeout)
            records = {Path(r.request.document_id or "").name: r for r in records_of(rt.components.state,
                                                                                      report.batch_id)}
            provider = next(iter(records.values())).provider if records else None
            prompt_version = next(iter(records.values())).prompt_version if records else None
            if summary:
                items = []
                for key in keys:
                    record = records.get(key["doc"])
                    output = record.output if record else {}
                    correct = score_summary(output, key)
                    items.append({
                        "doc": key["doc"], "correct": correct,
                        "got": {name: output.get(name) for name in
                                ("parties", "effective_date", "term_months", "governing_law", "payment",
                                 "liability_cap", "termination_notice", "termination_notice_days")},
                        "coverage": record.coverage if record else None,
                        "error": None if record else "no record (the job failed)",
                    })
                # share of each contract's chunks that fed its summary (whole-document summaries, issue #11.3)
                coverage = round(sum(item["coverage"] or 0.0 for item in items) / (len(items) or 1), 3)
                out["summary-fields"] = {
                    "metrics": {**_summary_metrics(items), "coverage": coverage}, "items": items,
                    "documents": len(items),
                    "provider": provider, "prompt_version": prompt_version,
                    "seconds": round(time.monotonic() - started, 1),
                }
            if asked:
                started = time.monotonic()
                store = rt.components.vector_store
                doc_ids = {Path(r.request.document_id or "").name: r.request.document_id for r in records.values()}
                jobs: list[tuple[dict[str, Any], str | None]] = []
                for q in asked:
                    doc_id = doc_ids.get(q["doc"])
                    if doc_id is None:
                        jobs.append((q, None))
                        continue
                    request = JobRequest(tenant=TENANT, text=q["q"], document_id=doc_id, intent_hint=Intent.question)
                    jobs.append((q, rt.client.submit(request)))
                q_items = []
                for q, job_id in jobs:
                    entry: dict[str, Any] = {"q": q["q"], "doc": q["doc"], "expect": q["expect"],
                                             "section": q.get("section"), "answer_contains": False,
                                             "cites_holder": False}
                    if job_id is None:
                        entry["error"] = "document not ingested"
                        q_items.append(entry)
                        continue
                    try:
                        record = rt.client.result(job_id, timeout=timeout)
                    except Exception as exc:  # a failed job is a miss, not a crash of the evaluation
                        entry["error"] = f"{type(exc).__name__}: {exc}"
                        q_items.append(entry)
                        continue
                    needle = normalize_for_match(q["expect"])
                    answer = str(record.output.get("answer") or record.output.get("summary") or "")
                    texts = {h.chunk_id: h.text for h in store.document_chunks(TENANT, str(doc_ids[q["doc"]]))}
                    cited = [str(c) for c in record.output.get("citations", [])]
                    entry["answer"] = answer
                    entry["answer_contains"] = needle in normalize_for_match(answer)
                    entry["cites_holder"] = any(needle in normalize_for_match(texts.get(c, "")) for c in cited)
                    q_items.append(entry)
                n = len(q_items) or 1
                out["questions"] = {
                    "metrics": {
                        "answer_contains": round(sum(i["answer_contains"] for i in q_items) / n, 3),
                        "cites_holder": round(sum(i["cites_holder"] for i in q_items) / n, 3),
                        "both": round(sum(i["answer_contains"] and i["cites_holder"] for i in q_items) / n, 3),
                    },
                    "items": q_items, "questions": len(q_items), "provider": provider,
                    "seconds": round(time.monotonic() - started, 1),
                }
    return out


# --- the classifier and detector suites -------------------------------------------------------------
def run_intents(settings: Settings, path: Path) -> dict[str, Any]:
    from pipeline.wiring import Components

    helpers = _script("eval_intent")
    items = [(str(row["text"]), str(row["intent"])) for row in _read_jsonl(path)]
    components = Components(settings)
    try:
        classifier = components.intent_classifier
        classifier.warm_up()
        raw = helpers.raw_predictions(classifier, items)  # the classifier's own threshold applies
    finally:
        components.close()
    pairs = [(gold, pred) for gold, pred, _ in raw]
    return {
        "metrics": {"accuracy": helpers.accuracy(pairs)},
        "confusion": helpers.confusion_table(pairs),
        "items": [{"text": t, "gold": g, "pred": p} for (t, _), (g, p) in zip(items, pairs, strict=True) if g != p],
        "examples": len(items),
    }


def run_injections(path: Path, contracts_dir: Path) -> dict[str, Any]:
    from pipeline.guard.injection import detect_injection

    helpers = _script("eval_guard")
    labelled = helpers.load_labelled(path)
    positives = [row["text"] for row in labelled if row["injection"]]
    negatives = [row["text"] for row in labelled if not row["injection"]]
    missed = [text for text in positives if not detect_injection(text).flagged]
    flagged = [text for text in negatives if detect_injection(text).flagged]
    blocks = helpers.contract_chunks(contracts_dir)
    flagged_blocks = [label for label, text in blocks if detect_injection(text).flagged]
    return {
        "metrics": {
            "recall": round((len(positives) - len(missed)) / len(positives), 3) if positives else None,
            "benign_flagged": round(len(flagged) / len(negatives), 3) if negatives else None,
            "contract_fp_rate": round(len(flagged_blocks) / len(blocks), 3) if blocks else None,
        },
        "items": [{"missed": t} for t in missed] + [{"flagged_benign": t} for t in flagged]
        + [{"flagged_block": b} for b in flagged_blocks],
        "injections": len(positives), "benign": len(negatives), "contract_blocks": len(blocks),
    }


def run(
    suites: list[str],
    make_settings: Callable[[Path | None], Settings],
    *,
    evals_dir: Path = EVALS,
    intents_file: Path | None = None,
    injections_file: Path | None = None,
    questions_file: Path | None = None,
    summary_dir: Path | None = None,
    limit: int | None = None,
) -> dict[str, dict[str, Any]]:
    """``summary_dir``: another summary golden set (``contracts/`` and ``key.jsonl``), e.g. contracts held
    out from development; the questions suite keeps the shipped contracts it refers to."""
    contracts_dir = evals_dir / "summary" / "contracts"
    questions_path = questions_file or evals_dir / "questions.jsonl"
    results: dict[str, dict[str, Any]] = {}
    if summary_dir is not None and "summary-fields" in suites:
        results.update(run_pipeline_suites(
            make_settings, summary=True, questions=False, contracts_dir=summary_dir / "contracts",
            key_path=summary_dir / "key.jsonl", questions_path=questions_path, limit=limit,
        ))
    summary_here = summary_dir is None and "summary-fields" in suites
    if summary_here or "questions" in suites:
        results.update(run_pipeline_suites(
            make_settings, summary=summary_here, questions="questions" in suites,
            contracts_dir=contracts_dir, key_path=evals_dir / "summary" / "key.jsonl",
            questions_path=questions_path, limit=limit,
        ))
    if "intents" in suites:
        with tempfile.TemporaryDirectory(prefix="conveyor-eval-") as tmp:
            results["intents"] = run_intents(make_settings(Path(tmp)), intents_file or evals_dir / "intents.jsonl")
    if "injections" in suites:
        results["injections"] = run_injections(injections_file or evals_dir / "injections.jsonl", contracts_dir)
    return {name: results[name] for name in suites if name in results}


# --- --compare ----------------------------------------------------------------------------------------
_SHORT_KEYS = {"base_url": "LLM_BASE_URL", "model": "LLM_MODEL", "api_key": "LLM_API_KEY"}


def parse_config(spec: str) -> dict[str, str]:
    """'provider=llm,model=gpt-4o-mini' -> {'provider': 'llm', 'model': 'gpt-4o-mini'}"""
    config: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--compare wants KEY=VALUE[,KEY=VALUE...], got {part!r}")
        config[key.strip().lower()] = value.strip()
    return config


def config_env(config: dict[str, str], base: dict[str, str]) -> dict[str, str]:
    """The environment of a run with ``config``: provider / base_url / model / prompt_version / any setting."""
    env = dict(base)
    for key, value in config.items():
        if key == "provider":
            if value == "extractive":
                env.pop("CONVEYOR_LLM_BASE_URL", None)
            elif value in {"llm", "openai", "openai-compatible"}:
                if not (config.get("base_url") or env.get("CONVEYOR_LLM_BASE_URL")):
                    raise ValueError("provider=llm needs base_url=... or CONVEYOR_LLM_BASE_URL")
            else:
                raise ValueError(f"provider must be extractive or llm, not {value!r}")
        elif key in {"prompt_version", "prompt_versions"}:
            env["CONVEYOR_PROMPT_VERSIONS"] = json.dumps([v for v in value.split("+") if v])
        else:
            env["CONVEYOR_" + _SHORT_KEYS.get(key, key).upper()] = value
    return env


def run_config_subprocess(config: dict[str, str], args: list[str], timeout: float = 1800) -> dict[str, Any]:
    """One configuration's report, from ``conveyor eval`` in a child process with that environment."""
    with tempfile.TemporaryDirectory(prefix="conveyor-eval-cmp-") as tmp:
        out = Path(tmp) / "report.json"
        env = config_env(config, dict(os.environ))
        proc = subprocess.run(
            [sys.executable, "-m", "workers.cli", "eval", *args, "--no-gate", "--json-out", str(out)],
            env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=str(REPO),
        )
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"configuration {config_label(config)} failed: {tail[0]}")
        report: dict[str, Any] = json.loads(out.read_text())
        return report


_SECRET_KEYS = re.compile(r"key|secret|password|token|auth", re.IGNORECASE)


def config_label(config: dict[str, str]) -> str:
    """How a configuration is shown in the table, the JSON and error lines: secrets masked."""
    shown = {k: "**" if _SECRET_KEYS.search(k) else v for k, v in config.items()}
    return ",".join(f"{k}={v}" for k, v in shown.items()) or "current settings"


# --- output ---------------------------------------------------------------------------------------------
def _bounds(thresholds: dict[str, dict[str, Any]], suite: str, metric: str) -> str:
    bounds = thresholds.get(suite, {})
    if metric in bounds and metric != "max":
        return f">= {float(bounds[metric]):.2f}"
    if metric in bounds.get("max", {}):
        return f"<= {float(bounds['max'][metric]):.2f}"
    return ""


def render(reports: list[tuple[str, dict[str, Any]]], thresholds: dict[str, dict[str, Any]]) -> Any:
    """A rich table: one row per suite metric, one column per configuration, then the threshold."""
    from rich.table import Table

    table = Table(title="conveyor eval", show_lines=False)
    table.add_column("suite")
    table.add_column("metric")
    for label, _ in reports:
        table.add_column(label, justify="right")
    table.add_column("threshold", justify="right")
    suites = list(dict.fromkeys(name for _, report in reports for name in report))
    for suite in suites:
        metrics = list(dict.fromkeys(m for _, report in reports for m in report.get(suite, {}).get("metrics", {})))
        for metric in metrics:
            cells = []
            for _, report in reports:
                value = report.get(suite, {}).get("metrics", {}).get(metric)
                failed = any(f.startswith(f"{suite}.{metric} ") for f in gate({suite: report.get(suite, {})},
                                                                               thresholds))
                text = "-" if value is None else f"{value:.3f}"
                cells.append(f"[red]{text}[/red]" if failed else text)
            table.add_row(suite, metric, *cells, _bounds(thresholds, suite, metric))
    return table


def misses(report: dict[str, Any]) -> list[str]:
    """One line per wrong summary field or missed question (what to look at first)."""
    lines = []
    for item in report.get("summary-fields", {}).get("items", []):
        wrong = [name for name, ok in item["correct"].items() if not ok]
        if wrong:
            got = item["got"]
            shown = {"term": got.get("term_months"), "termination_notice": got.get("termination_notice")}
            lines.append(f"summary-fields {item['doc']}: " + "; ".join(
                f"{name}={shown.get(name, got.get(name))!r}" for name in wrong))
    for item in report.get("questions", {}).get("items", []):
        if not (item["answer_contains"] and item["cites_holder"]):
            lines.append(f"questions {item['doc']}: {item['q']} (answer {'ok' if item['answer_contains'] else 'miss'}"
                         f", citation {'ok' if item['cites_holder'] else 'miss'})")
    return lines
