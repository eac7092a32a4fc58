"""Shared rate limiter vs naive retry-on-429, four worker processes, one rpm-limited upstream.

    python scripts/bench_ratelimit.py --rpm 120 --duration 75 --json-out bench-ratelimit.json

For each mode a fresh FakeOpenAIServer is started in this process with a sliding-window
limit of ``--rpm`` requests per minute; ``--workers`` processes then call it through the
real OpenAICompatProvider for ``--duration`` seconds:

* conveyor: every call first reserves a slot in SharedRateLimiter on the real Redis at
  CONVEYOR_REDIS_URL (default redis://127.0.0.1:6379/0, a unique key per run, deleted
  afterwards), configured at ``--headroom`` x the limit to absorb loopback jitter;
* naive: no limiter; a 429 is retried after the server's Retry-After (as precise as the
  server gives it: retry-after-ms), as a well-behaved client without coordination would.

By default the server's window starts *warm* (as if the previous minute had run at the
limit), which is the steady state of a pipeline that has been busy for a while. A cold,
empty window lets anything burst a full minute's quota in the first second, which
measures the window rather than the client; ``--cold`` runs that anyway.

Figures come from the server's own log over [start, start + duration]: ``calls`` = chat
requests received, ``http_429`` = those answered 429, ``achieved_rpm`` = successful
completions per minute, ``ratio`` = achieved_rpm / limit. The last stdout line is one
JSON object: {"limit_rpm", "conveyor": {...}, "naive": {...}}.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402 - after the repo root is importable

from pipeline.errors import ConveyorError  # noqa: E402
from pipeline.llm.base import ChatMessage, LLMRequest  # noqa: E402
from pipeline.llm.openai_compat import OpenAICompatProvider  # noqa: E402
from pipeline.llm.ratelimit import SharedRateLimiter  # noqa: E402
from scripts.fake_openai_server import FakeOpenAIServer  # noqa: E402


class DeadlineReached(BaseException):
    """Raised from the injected sleep: the run is over (BaseException so no layer swallows it)."""


def _deadline_sleep(deadline: float) -> Any:
    def sleep(seconds: float) -> None:
        if time.time() + seconds > deadline:
            raise DeadlineReached
        time.sleep(seconds)

    return sleep


def worker(
    index: int,
    mode: str,
    base_url: str,
    redis_url: str,
    key: str,
    limiter_rpm: float,
    duration: float,
    ready: Any,
    go: Any,
    start_at: Any,
    results: Any,
) -> None:
    """One worker process: build clients here (never before the fork), wait, call until the deadline."""
    logging.getLogger("pipeline.llm").setLevel(logging.ERROR)  # a naive run logs every 429 otherwise
    client = redis.Redis.from_url(redis_url) if mode == "conveyor" else None
    holder: dict[str, float] = {"deadline": float("inf")}

    def sleep(seconds: float) -> None:
        _deadline_sleep(holder["deadline"])(seconds)

    limiter = (
        SharedRateLimiter(client, key, rpm=limiter_rpm, sleep=sleep, max_wait_s=duration + 60)
        if client is not None
        else None
    )
    provider = OpenAICompatProvider(
        base_url,
        api_key=None,
        default_model="fake-model",
        timeout_s=10.0,
        max_attempts=3 if mode == "conveyor" else 10_000,
        backoff_base_s=0.05,
        backoff_max_s=1.0,
        rate_limiter=limiter,
        retry_after_cap_s=120.0,
        sleep=sleep,
    )
    if limiter is not None:
        provider._estimate_tokens(LLMRequest(messages=(ChatMessage(role="user", content="warm up"),)), "fake-model")
    ready.put(index)
    go.wait()
    holder["deadline"] = start_at.value + duration
    time.sleep(max(0.0, start_at.value - time.time()))
    ok = 0
    errors: dict[str, int] = {}
    i = 0
    try:
        while time.time() < holder["deadline"]:
            i += 1
            text = f"Request {index}-{i}. Summarise the clause briefly."
            try:
                provider.complete(LLMRequest(messages=(ChatMessage(role="user", content=text),), max_tokens=64))
                ok += 1
            except ConveyorError as exc:
                errors[exc.failure_class] = errors.get(exc.failure_class, 0) + 1
    except DeadlineReached:
        pass
    finally:
        provider.close()
        if client is not None:
            client.close()
    results.put({"worker": index, "ok": ok, "errors": errors})


def _max_in_window(times: list[float], width: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def run_mode(mode: str, args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    key = f"conveyor:bench:ratelimit:{uuid.uuid4().hex}"
    limiter_rpm = args.rpm * args.headroom
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    start_at = ctx.Value("d", 0.0)
    with FakeOpenAIServer(rpm=args.rpm, latency_s=args.latency_ms / 1000.0) as server:
        server.tokens.warm_up()
        procs = [
            ctx.Process(
                target=worker,
                args=(
                    i,
                    mode,
                    server.url,
                    redis_url,
                    key,
                    limiter_rpm,
                    args.duration,
                    ready,
                    go,
                    start_at,
                    results,
                ),
            )
            for i in range(args.workers)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=120)
        start = time.time() + 0.5
        start_at.value = start
        go.set()
        time.sleep(max(0.0, start - 0.01 - time.time()))
        if not args.cold:
            server.fill_rate_window()
        worker_results = [results.get(timeout=args.duration + 120) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        end = start + args.duration
        log = [r for r in server.requests_log if r["path"] == "/v1/chat/completions" and start <= r["time"] <= end]
        ok_times = sorted(t for t in server.completion_times if start <= t <= end)
    if mode == "conveyor":
        client = redis.Redis.from_url(redis_url)
        client.delete(f"{{{key}}}:rpm", f"{{{key}}}:tpm")
        client.close()
    calls = len(log)
    http_429 = sum(1 for r in log if r["status"] == 429)
    achieved = len(ok_times) / (args.duration / 60.0)
    return {
        "achieved_rpm": round(achieved, 1),
        "ratio": round(achieved / args.rpm, 3),
        "calls": calls,
        "http_429": http_429,
        "completions": len(ok_times),
        "http_429_fraction": round(http_429 / calls, 4) if calls else 0.0,
        "max_completions_in_any_60s": _max_in_window(ok_times, 60.0),
        "max_completions_in_any_1s": _max_in_window(ok_times, 1.0),
        "limiter_rpm": round(limiter_rpm, 2) if mode == "conveyor" else None,
        "worker_errors": _merge_errors(worker_results),
    }


def _merge_errors(worker_results: list[dict[str, Any]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for result in worker_results:
        for name, count in result["errors"].items():
            merged[name] = merged.get(name, 0) + count
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpm", type=int, default=120, help="the upstream's requests-per-minute limit")
    parser.add_argument("--duration", type=float, default=75.0, help="seconds per mode")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--headroom", type=float, default=0.97, help="limiter rate as a fraction of the limit")
    parser.add_argument("--cold", action="store_true", help="start each run with an empty server window")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    redis_url = os.environ.get("CONVEYOR_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        probe = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
        probe.ping()
        probe.close()
    except redis.RedisError as exc:
        print(f"Redis unreachable at {redis_url}: {exc}", file=sys.stderr)
        return 2
    print(
        f"limit {args.rpm} rpm, {args.workers} workers, {args.duration:g}s per mode, "
        f"latency {args.latency_ms:g}ms, window {'cold' if args.cold else 'warm'}",
        flush=True,
    )
    report: dict[str, Any] = {"limit_rpm": args.rpm}
    details: dict[str, Any] = {}
    for mode in ("conveyor", "naive"):
        figures = run_mode(mode, args, redis_url)
        details[mode] = figures
        report[mode] = {k: figures[k] for k in ("achieved_rpm", "ratio", "calls", "http_429")}
        print(
            f"{mode:>9}: {figures['achieved_rpm']:7.1f} rpm  ratio {figures['ratio']:.3f}  "
            f"calls {figures['calls']:5d}  429s {figures['http_429']:5d} "
            f"({figures['http_429_fraction']:.1%})  "
            f"max/60s {figures['max_completions_in_any_60s']}  max/1s {figures['max_completions_in_any_1s']}",
            flush=True,
        )
    if args.json_out is not None:
        full = {
            **report,
            "details": details,
            "settings": {
                "duration_s": args.duration,
                "workers": args.workers,
                "latency_ms": args.latency_ms,
                "headroom": args.headroom,
                "window": "cold" if args.cold else "warm",
            },
        }
        args.json_out.write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
