"""A fake OpenAI-compatible server with fault injection, for tests and benchmarks.

A real HTTP server (standard library ThreadingHTTPServer) speaking
``POST /v1/chat/completions``, ``POST /v1/embeddings`` and ``GET /v1/models``, so the
code under test runs its real httpx path over loopback. Standard library only;
``bpe_openai`` is used for token counts when importable (else about 4 characters a token).

Run it::

    python scripts/fake_openai_server.py --port 0 --rpm 60 --latency-ms 20 --fail-rate 0.1

The first stdout line is the bound base URL (``http://127.0.0.1:PORT/v1``). Import it::

    with FakeOpenAIServer(rpm=None, latency_s=0) as server:
        server.script(["429:retry_after=1", "500", "timeout", "malformed", "length", "refusal", "ok"])
        ...server.url, server.stats...

Scripted faults are consumed one per chat request, in order, after the rpm check:

    ok                  normal answer
    429[:retry_after=S | retry_after_ms=MS | retry_after_date=S]   rate limited
    quota               429 insufficient_quota (a permanent error upstream)
    NNN                 that HTTP status with an OpenAI-style error body (500, 503, 408, 400...)
    timeout[:s=SEC]     sleep longer than the client timeout (default ``hang_s``)
    disconnect          close the connection without a response
    malformed           200 with a truncated JSON body
    no_choices          200 with ``choices: []``
    no_usage            normal answer without a usage block
    length              answer cut short, finish_reason "length"
    refusal             message.refusal set, content null
    content_filter      finish_reason "content_filter"
    context_overflow    400 context_length_exceeded
    bad_json            200, but the content is prose around the JSON (not parseable)
    bad_schema          200, valid JSON of the wrong shape (for the one-repair path)

Without a script: ``rpm`` enforces a real sliding window over the server's own clock
(429 with ``Retry-After`` in whole seconds and ``retry-after-ms``), ``fail_rate`` injects
500s, a prompt larger than the model's context window gets a natural 400
context_length_exceeded, and an answer longer than ``max_tokens`` is cut with
finish_reason "length". When ``api_key`` is set, a wrong key gets a 401 whose message
echoes the presented key in full (worse than real providers, on purpose: tests use it to
prove the client scrubs secrets).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import queue
import random
import re
import signal
import sys
import threading
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_FAULT_NAMES = {
    "ok",
    "429",
    "quota",
    "timeout",
    "disconnect",
    "malformed",
    "no_choices",
    "no_usage",
    "length",
    "refusal",
    "content_filter",
    "context_overflow",
    "bad_json",
    "bad_schema",
}
_CHUNK_ID = re.compile(r"\[chunk:([A-Za-z0-9_.:\-]+)\]")
_SENTENCE = re.compile(r"(.+?[.!?])(?=\s|$)", re.DOTALL)
_DATE = re.compile(
    r"\b(?:January|February|March|April|May|June|July|August|September|October|November|December)"
    r"\s+\d{1,2},\s+\d{4}\b|\b\d{4}-\d{2}-\d{2}\b"
)
_PARTIES = re.compile(r"\bbetween\s+(.{2,80}?)\s+(?:\([^)]*\)\s+)?and\s+(.{2,80}?)(?:\s*\(|[,.;])", re.I)
_TERM = re.compile(r"\bterm of\s+([^.;\n]{2,80})", re.I)
_DEFINED = re.compile(r"[\"“]([A-Z][A-Za-z \-]{2,40})[\"”]")
_RISKY = re.compile(r"liabil|indemn|terminat|penalt|breach|warrant", re.I)


_TAG = re.compile(r"\[ref:([A-Za-z0-9_.:-]{1,64})\]")


def parse_fault(spec: str) -> tuple[str, dict[str, str]]:
    """``"429:retry_after=1"`` -> ``("429", {"retry_after": "1"})``; rejects unknown names."""
    name, _, rest = spec.strip().partition(":")
    params = dict(part.split("=", 1) for part in rest.split(",") if "=" in part)
    if name not in _FAULT_NAMES and not (name.isdigit() and len(name) == 3):
        raise ValueError(f"unknown fault {spec!r}")
    return name, params


@functools.lru_cache(maxsize=1)
def _o200k() -> Any:
    """The o200k_base encoding, loaded once per process; None when bpe_openai is missing."""
    try:
        with warnings.catch_warnings():  # bpe_openai uses a deprecated importlib API
            warnings.simplefilter("ignore", DeprecationWarning)
            import bpe_openai

            return bpe_openai.get_encoding("o200k_base")
    except Exception:  # optional: the estimate is fine without it
        return None


class _TokenCounter:
    """o200k_base via bpe_openai when installed, else a 4-characters-a-token estimate."""

    def _encoding(self) -> Any:
        return _o200k()

    def warm_up(self) -> None:
        """Load the encoding now, so the first timed request does not pay for it."""
        self._encoding()

    def encode(self, text: str) -> list[Any]:
        enc = self._encoding()
        if enc is not None:
            return list(enc.encode_ordinary(text))
        return [text[i : i + 4] for i in range(0, len(text), 4)]

    def count(self, text: str) -> int:
        return len(self.encode(text)) if text else 0

    def truncate(self, text: str, n: int) -> str:
        enc = self._encoding()
        if enc is None:
            return text[: 4 * n]
        return enc.decode_bytes(enc.encode_ordinary(text)[:n]).decode("utf-8", errors="ignore")

    def count_messages(self, messages: Sequence[dict[str, Any]]) -> int:
        total = 3
        for message in messages:
            total += 3 + sum(self.count(str(v)) for v in message.values() if v is not None)
        return total


def first_sentence(text: str, limit: int = 200) -> str:
    stripped = _CHUNK_ID.sub("", text).strip()
    match = _SENTENCE.match(stripped)
    sentence = (match.group(1) if match else stripped).strip()
    return " ".join(sentence.split())[:limit]


def _chunk_bodies(text: str) -> list[str]:
    """The text of each ``[chunk:ID]`` block of a prompt, without its "(doc / section)" line and the
    chunk's own header line, and without what follows the last chunk (the request and the task)."""
    blocks = _CHUNK_ID.split(text)[2::2]  # split keeps the ids: [before, id, block, id, block, ...]
    bodies = []
    for block in blocks:
        lines = block.split("\n\n", 1)[0].strip().splitlines()[2:]
        bodies.append("\n".join(lines))
    return bodies


def summary_object(messages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A deterministic JSON answer built from the prompt, shaped like a contract summary: what it says is
    quoted from the chunks it was given (a crude model, but one that does not invent)."""
    texts = [str(m.get("content") or "") for m in messages]
    everything = "\n".join(texts)
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"] or texts
    chunk_ids = list(dict.fromkeys(_CHUNK_ID.findall(everything)))
    prompt = next((u for u in users if _CHUNK_ID.search(u)), users[0])  # not the repair re-ask
    bodies = _chunk_bodies(prompt)
    quoted = "\n".join(bodies).strip() or prompt  # no chunk text (a combination of parts): the whole prompt
    parties_match = _PARTIES.search(quoted)
    date_match = _DATE.search(quoted)
    term_match = _TERM.search(quoted)
    sentences = [" ".join(s.split()) for s in _SENTENCE.findall(quoted)]
    return {
        "parties": [p.strip() for p in parties_match.groups()] if parties_match else [],
        "effective_date": date_match.group(0) if date_match else None,
        "term": term_match.group(1).strip() if term_match else None,
        "summary": first_sentence(next((b for b in bodies if b.strip()), quoted)),
        "key_terms": list(dict.fromkeys(_DEFINED.findall(quoted)))[:5],
        "risks": [s[:200] for s in sentences if _RISKY.search(s)][:3],
        "citations": chunk_ids[:5],
    }


def json_answer(messages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """JSON mode: an ``Answer`` when the prompt asks for an 'answer' field, else a summary."""
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    if users and '"answer":' in users[0]:
        summary = summary_object(messages)
        return {"answer": summary["summary"], "citations": summary["citations"][:1]}
    return summary_object(messages)


def text_answer(messages: Sequence[dict[str, Any]]) -> str:
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    quoted = first_sentence(users[-1] if users else "")
    ids = list(dict.fromkeys(_CHUNK_ID.findall("\n".join(str(m.get("content") or "") for m in messages))))
    cites = "".join(f" [chunk:{i}]" for i in ids[:3])
    return f'Based on the text: "{quoted}"{cites}'


def hashed_embedding(text: str, dim: int) -> list[float]:
    """Signed feature hashing of lowercased words, L2-normalised: similar texts, similar vectors."""
    vec = [0.0] * dim
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.sha256(word.encode("utf-8")).digest()
        for k in range(4):  # four signed features per word keep collisions from zeroing a vector
            index = int.from_bytes(digest[4 * k : 4 * k + 4], "big") % dim
            vec[index] += 1.0 if digest[16 + k] & 1 else -1.0
    if not any(vec):
        vec[int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big") % dim] = 1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [round(v / norm, 6) for v in vec]


class FakeOpenAIServer:
    """The server object: start/stop (or ``with``), ``url``, ``stats``, ``script``, ``faults``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rpm: int | None = None,
        rate_window_s: float = 60.0,
        latency_s: float = 0.0,
        fail_rate: float = 0.0,
        hang_s: float = 5.0,
        seed: int = 0,
        embedding_dim: int = 64,
        models: Sequence[str] = ("fake-model",),
        context_windows: dict[str, int] | None = None,
        default_context_window: int = 128_000,
        default_max_tokens: int = 512,
        api_key: str | None = None,
        on_chat: Callable[[str | None], None] | None = None,
    ) -> None:
        self.host = host
        #: called with the request's ``[ref:…]`` tag before a chat request is answered (chaos: a job of death)
        self.on_chat = on_chat
        self.port = port
        self.rpm = rpm
        self.rate_window_s = rate_window_s
        self.latency_s = latency_s
        self.fail_rate = fail_rate
        self.hang_s = hang_s
        self.embedding_dim = embedding_dim
        self.models = list(models)
        self.context_windows = dict(context_windows or {})
        self.default_context_window = default_context_window
        self.default_max_tokens = default_max_tokens
        self.api_key = api_key
        self.faults: queue.Queue[str] = queue.Queue()
        #: one entry per request: path, model, status, fault, time (epoch seconds).
        self.requests_log: list[dict[str, Any]] = []
        #: the messages of every chat request, in arrival order (what a test asserts prompts on).
        self.chat_messages: list[list[dict[str, Any]]] = []
        #: epoch seconds of every successful chat completion (for throughput measurement).
        self.completion_times: list[float] = []
        self.tokens = _TokenCounter()
        self._rng = random.Random(seed)
        self._stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._window: deque[float] = deque()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = 0

    # lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL in the OpenAI convention (ends in /v1)."""
        return f"{self.root_url}/v1"

    # test controls -------------------------------------------------------------------

    def script(self, faults: Iterable[str]) -> None:
        """Queue the next responses (validated now, so a typo fails the test at once)."""
        for spec in faults:
            parse_fault(spec)
            self.faults.put(spec)

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            out = {"requests": 0, "chat": 0, "ok": 0, "http_429": 0, "http_500": 0}
            out.update(self._stats)
            return out

    def chat_models(self) -> list[str]:
        """Model of every chat request, in arrival order."""
        with self._lock:
            return [r["model"] for r in self.requests_log if r["path"] == "/v1/chat/completions"]

    def fill_rate_window(self) -> None:
        """Fill the rpm window as if the last minute ran at exactly the limit (steady state).

        Entry i leaves the window at now + i * window / rpm, so a client pacing at the
        limit from now on never sees a 429, and one bursting sees one at once.
        """
        if not self.rpm:
            return
        now = time.monotonic()
        step = self.rate_window_s / self.rpm
        with self._lock:
            self._window = deque(now - self.rate_window_s + i * step for i in range(self.rpm))

    # internals used by the handler ---------------------------------------------------

    def _count(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._stats[key] += 1

    def _log(self, path: str, model: str | None, status: int, fault: str | None, tag: str | None = None) -> None:
        with self._lock:
            self.requests_log.append(
                {"path": path, "model": model, "status": status, "fault": fault, "time": time.time(), "tag": tag}
            )
            if status:
                self._stats[f"http_{status}"] += 1
            if status == 200 and path == "/v1/chat/completions" and fault in (None, "no_usage", "length"):
                self.completion_times.append(time.time())

    def tag_of(self, messages: Sequence[dict[str, Any]]) -> str | None:
        """The first ``[ref:ID]`` in the prompt, so a harness can count upstream calls per job."""
        for message in messages:
            found = _TAG.search(str(message.get("content") or ""))
            if found:
                return found.group(1)
        return None

    def _rate_check(self) -> float | None:
        """None when admitted (and recorded), else the seconds until a slot frees."""
        if not self.rpm:
            return None
        now = time.monotonic()
        with self._lock:
            while self._window and self._window[0] <= now - self.rate_window_s:
                self._window.popleft()
            if len(self._window) >= self.rpm:
                return self._window[0] + self.rate_window_s - now
            self._window.append(now)
            return None

    def _next_fault(self) -> str | None:
        try:
            return self.faults.get_nowait()
        except queue.Empty:
            pass
        if self.fail_rate and self._rng.random() < self.fail_rate:
            return "500"
        return None

    def _next_id(self) -> str:
        with self._lock:
            self._ids += 1
            return f"chatcmpl-fake-{self._ids}"

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)


def _error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeOpenAIServer  # set on the per-server subclass
    _tag: str | None = None  # the request's [ref:ID], for per-job call counts

    def log_message(self, format: str, *args: Any) -> None:
        return

    # plumbing ------------------------------------------------------------------------

    def _send(self, status: int, body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw or b"{}")

    def _authorised(self, path: str) -> bool:
        fake = self.fake
        if fake.api_key is None:
            return True
        presented = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if presented == fake.api_key:
            return True
        fake._log(path, None, 401, "auth")
        self._send(
            401,
            _error(f"Incorrect API key provided: {presented}.", "invalid_request_error", "invalid_api_key"),
        )
        return False

    # routes --------------------------------------------------------------------------

    def do_GET(self) -> None:
        fake = self.fake
        fake._count("requests")
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            fake._count("models")
            if not self._authorised(path):
                return
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "conveyor-fake"} for m in fake.models]
            fake._log(path, None, 200, None)
            self._send(200, {"object": "list", "data": data})
            return
        fake._log(path, None, 404, None)
        self._send(404, _error(f"no route GET {path}", "invalid_request_error", "not_found"))

    def do_POST(self) -> None:
        fake = self.fake
        fake._count("requests")
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            body = self._read_json()
        except (ValueError, UnicodeDecodeError):
            fake._log(path, None, 400, None)
            self._send(400, _error("request body is not JSON", "invalid_request_error", None))
            return
        if path in ("/v1/chat/completions", "/chat/completions"):
            fake._count("chat")
            if self._authorised("/v1/chat/completions"):
                self._chat(body if isinstance(body, dict) else {})
        elif path in ("/v1/embeddings", "/embeddings"):
            fake._count("embeddings")
            if self._authorised("/v1/embeddings"):
                self._embeddings(body if isinstance(body, dict) else {})
        else:
            fake._log(path, None, 404, None)
            self._send(404, _error(f"no route POST {path}", "invalid_request_error", "not_found"))

    def _rate_limited(self, path: str, model: str | None) -> bool:
        fake = self.fake
        wait = fake._rate_check()
        if wait is None:
            return False
        fake._count("rate_limited")
        fake._log(path, model, 429, "rpm", tag=self._tag)
        headers = {
            "Retry-After": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
        }
        message = f"Rate limit reached: {fake.rpm} requests per {fake.rate_window_s:g}s. Try again in {wait:.3f}s."
        self._send(429, _error(message, "requests", "rate_limit_exceeded"), headers)
        return True

    def _chat(self, body: dict[str, Any]) -> None:
        fake = self.fake
        path = "/v1/chat/completions"
        model = str(body.get("model") or (fake.models[0] if fake.models else "fake-model"))
        raw_messages = body.get("messages")
        messages: list[dict[str, Any]] = (
            [m for m in raw_messages if isinstance(m, dict)] if isinstance(raw_messages, list) else []
        )
        self._tag = fake.tag_of(messages)
        with fake._lock:
            fake.chat_messages.append(messages)
        if fake.on_chat is not None:
            fake.on_chat(self._tag)
        if self._rate_limited(path, model):
            return
        spec = fake._next_fault()
        name, params = parse_fault(spec) if spec else ("ok", {})
        if name == "timeout":
            fake._count("timeouts")
            fake._log(path, model, 504, name, tag=self._tag)
            fake._pause(float(params.get("s", fake.hang_s)))
            self._send(504, _error("upstream hung", "server_error", "timeout"))
            return
        if name == "disconnect":
            fake._count("disconnects")
            fake._log(path, model, 0, name, tag=self._tag)
            self.close_connection = True
            return
        fake._pause(fake.latency_s)
        if name == "429":
            self._send_429(params, model)
            return
        if name == "quota":
            fake._log(path, model, 429, name, tag=self._tag)
            self._send(429, _error("You exceeded your current quota.", "insufficient_quota", "insufficient_quota"))
            return
        if name.isdigit():
            status = int(name)
            fake._log(path, model, status, name, tag=self._tag)
            self._send(status, _error(f"injected HTTP {status}", "server_error", None))
            return
        prompt_tokens = fake.tokens.count_messages(messages)
        window = fake.context_windows.get(model, fake.default_context_window)
        if name == "context_overflow" or prompt_tokens > window:
            fake._count("context_overflow")
            fake._log(path, model, 400, "context_overflow", tag=self._tag)
            message = (
                f"This model's maximum context length is {window} tokens. However, your messages "
                f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
            )
            self._send(400, _error(message, "invalid_request_error", "context_length_exceeded"))
            return
        if name == "malformed":
            fake._count("malformed")
            fake._log(path, model, 200, name, tag=self._tag)
            self._send(200, b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, "mes')
            return
        self._answer(body, model, messages, prompt_tokens, name)

    def _send_429(self, params: dict[str, str], model: str) -> None:
        fake = self.fake
        headers: dict[str, str] = {}
        if "retry_after" in params:
            headers["Retry-After"] = params["retry_after"]
        if "retry_after_ms" in params:
            headers["retry-after-ms"] = params["retry_after_ms"]
        if "retry_after_date" in params:
            headers["Retry-After"] = formatdate(time.time() + float(params["retry_after_date"]), usegmt=True)
        fake._log("/v1/chat/completions", model, 429, "429", tag=self._tag)
        self._send(429, _error("Rate limit reached (injected).", "requests", "rate_limit_exceeded"), headers)

    def _answer(
        self, body: dict[str, Any], model: str, messages: list[dict[str, Any]], prompt_tokens: int, fault: str
    ) -> None:
        fake = self.fake
        fmt = body.get("response_format")
        json_mode = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or fake.default_max_tokens)
        text = json.dumps(json_answer(messages)) if json_mode else text_answer(messages)
        if fault == "bad_json":  # the model chatters around its JSON: not parseable as a whole
            text = "Sure! Here is the JSON you asked for:\n" + text
        elif fault == "bad_schema":  # parseable, but not the requested shape
            text = json.dumps({"result": "see above"})
        finish = "stop"
        tokens = fake.tokens.count(text)
        if fault == "length" or tokens > max_tokens:
            keep = min(max_tokens, max(1, tokens // 2)) if fault == "length" else max_tokens
            text = fake.tokens.truncate(text, keep)
            finish = "length"
            fake._count("length")
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if fault == "refusal":
            message = {
                "role": "assistant",
                "content": None,
                "refusal": "I'm sorry, but I can't help with that.",
            }
            fake._count("refusals")
        elif fault == "content_filter":
            message = {"role": "assistant", "content": None, "refusal": None}
            finish = "content_filter"
            fake._count("refusals")
        completion_tokens = fake.tokens.count(message["content"] or message["refusal"] or "")
        choices: list[dict[str, Any]] = [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}]
        payload: dict[str, Any] = {
            "id": fake._next_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [] if fault == "no_choices" else choices,
            "system_fingerprint": "fp_conveyor_fake",
        }
        if fault != "no_usage":
            payload["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        if fault in ("ok", "no_usage", "length", "bad_json", "bad_schema") and finish != "content_filter":
            fake._count("ok")
        fake._log("/v1/chat/completions", model, 200, None if fault == "ok" else fault, tag=self._tag)
        self._send(200, payload)

    def _embeddings(self, body: dict[str, Any]) -> None:
        fake = self.fake
        path = "/v1/embeddings"
        model = str(body.get("model") or "fake-embedding")
        if self._rate_limited(path, model):
            return
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else None
        if inputs is None or not all(isinstance(i, str) for i in inputs):
            fake._log(path, model, 400, None)
            self._send(400, _error("input must be a string or a list of strings", "invalid_request_error", None))
            return
        dim = int(body.get("dimensions") or fake.embedding_dim)
        fake._pause(fake.latency_s)
        data = [
            {"object": "embedding", "index": i, "embedding": hashed_embedding(t, dim)} for i, t in enumerate(inputs)
        ]
        used = sum(fake.tokens.count(t) for t in inputs)
        fake._log(path, model, 200, None)
        self._send(
            200,
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": used, "total_tokens": used},
            },
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server with fault injection.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--rpm", type=int, default=None, help="sliding-window requests per minute (429 above)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.0, help="fraction of chat requests answered 500")
    parser.add_argument("--hang-s", type=float, default=5.0, help="how long a 'timeout' fault hangs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--model", action="append", default=None, help="served model id (repeatable)")
    parser.add_argument("--context-window", type=int, default=128_000)
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument("--script", default="", help="comma-separated faults for the first requests")
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(
        host=args.host,
        port=args.port,
        rpm=args.rpm,
        latency_s=args.latency_ms / 1000.0,
        fail_rate=args.fail_rate,
        hang_s=args.hang_s,
        seed=args.seed,
        embedding_dim=args.embedding_dim,
        models=args.model or ["fake-model"],
        default_context_window=args.context_window,
        api_key=args.api_key,
    )
    if args.script:
        server.script(s for s in args.script.split(";" if ";" in args.script else ",") if s.strip())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print(server.url, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print(json.dumps(server.stats), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
