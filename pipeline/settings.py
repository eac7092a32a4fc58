"""All configuration as one typed object, read from ``CONVEYOR_*`` environment variables.

Built on demand (``load_settings()``), never at import, and validated at start-up so a bad
value stops a worker with a message that names the variable. An unknown ``CONVEYOR_*``
variable is an error too: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CONVEYOR_"


class GuardPolicy(BaseModel):
    """What the guard does about each kind of finding; one default, overridable per tenant."""

    model_config = ConfigDict(extra="forbid")

    injection: Literal["block", "flag"] = Field(
        default="block", description="a request carrying injected instructions: block it, or only record it"
    )
    quarantine_chunks: bool = Field(default=True, description="drop retrieved chunks that carry injections")
    pii: Literal["redact", "block", "allow"] = "redact"
    grounding: Literal["remove", "block", "flag"] = Field(
        default="remove", description="unsupported sentences: remove them, block the output, or only score"
    )
    grounding_threshold: float = Field(default=0.6, ge=0.0, le=1.0)
    min_grounding_score: float = Field(default=0.5, ge=0.0, le=1.0, description="below this the output is blocked")
    blocklist: list[str] = Field(default_factory=list, description="terms that must not appear in an output")
    blocklist_patterns: list[str] = Field(default_factory=list)


class LLMPrice(BaseModel):
    """A model's price in USD per one million tokens (CONVEYOR_LLM_PRICES)."""

    model_config = ConfigDict(extra="forbid")

    input_per_1m: float = Field(ge=0, description="USD per 1M prompt tokens")
    output_per_1m: float = Field(ge=0, description="USD per 1M completion tokens")


_BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "memory")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _mask(url: str) -> str:
    """The URL with any password replaced, for error messages."""
    return re.sub(r":[^:/@]*@", ":***@", url)


class SettingsError(ValueError):
    """Raised with a readable, multi-line explanation of what is wrong with the configuration."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", case_sensitive=False)

    # --- where things run -------------------------------------------------------------
    broker_url: str | None = Field(
        default=None,
        description="Celery broker: redis:// or amqp:// (RabbitMQ, quorum queues). "
        "Unset = embedded mode (in-process worker, memory transport).",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for job state, dead letters, cache, rate limits. "
        "Default: broker_url if redis; required with amqp.",
    )
    redis_retry_s: float = Field(
        default=20.0, ge=0, le=600,
        description="how long a Redis outage (a restart) is ridden out before a store call fails",
    )
    data_dir: Path = Field(default=Path(".conveyor"), description="Embedded state: Qdrant path, SQLite store.")
    results_log: Path | None = Field(
        default=None, description="JSONL log of every job record. Default: <data_dir>/records.jsonl."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="worker log level")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="json: one JSON object per log line (ts, level, logger, message, job_id, stage, batch_id, "
        "tenant), for workers and the CLI",
    )

    # --- vector store and embeddings --------------------------------------------------
    qdrant_url: str | None = Field(default=None, description="Qdrant server. Unset = local mode under data_dir.")
    qdrant_api_key: SecretStr | None = Field(default=None, description="API key of the Qdrant server")
    qdrant_collection: str = Field(default="conveyor_chunks", description="collection holding all chunks")
    embedding_provider: Literal["onnx-minilm", "openai"] = Field(
        default="onnx-minilm", description="onnx-minilm: offline int8 all-MiniLM-L6-v2; openai: the URL below"
    )
    embedding_url: str | None = Field(default=None, description="OpenAI-compatible /v1/embeddings base URL")
    embedding_api_key: SecretStr | None = Field(default=None, description="key for the embeddings endpoint")
    embedding_model: str = Field(default="text-embedding-3-small", description="model name for the endpoint")
    embedding_dim: int = Field(default=384, ge=8, description="vector size of the endpoint's model")

    # --- intent and retrieval ---------------------------------------------------------
    intent_threshold: float = Field(default=0.40, ge=0.0, le=1.0, description="below this -> 'other'")
    retrieve_top_k: int = Field(default=5, ge=1, le=50, description="chunks for question/extract/risk")
    retrieve_score_threshold: float | None = Field(
        default=None, ge=-1.0, le=1.0, description="drop hits below this cosine score"
    )
    context_token_budget: int = Field(
        default=6000, ge=100, description="tokens of context per prompt; a summary of a longer document is "
        "written part by part (one call per part, then one to combine them)")
    screen_at_ingest: bool = Field(
        default=True, description="score new chunks for prompt injection at ingest and store the verdict (else "
        "retrieve scores each chunk the first time a process retrieves it); costs about 4x the embedding at ingest")
    summary_max_chunks: int = Field(
        default=300, ge=1, description="chunks of one document a summary reads at most (beyond: round-robin over "
        "sections; the record's coverage says how much was read); bounds the size of stage messages")
    chunk_max_tokens: int = Field(default=220, ge=32, le=512, description="chunk size at ingest (MiniLM tokens)")
    chunk_overlap_tokens: int = Field(default=40, ge=0, description="overlap inside long sections")

    # --- LLM --------------------------------------------------------------------------
    llm_base_url: str | None = Field(default=None, description="OpenAI-compatible base URL. Unset = extractive.")
    llm_api_key: SecretStr | None = Field(default=None, description="bearer key for the LLM endpoint")
    llm_model: str = Field(default="gpt-4o-mini", description="primary model")
    prompt_versions: list[str] = Field(
        default_factory=list, description='JSON list of older prompt versions to use, e.g. ["summarize/v1"]')
    llm_fallback_models: list[str] = Field(default_factory=list, description="JSON list, tried in order")
    llm_timeout_s: float = Field(default=60.0, gt=0, description="per HTTP call")
    llm_max_tokens: int = Field(default=700, ge=16, description="completion tokens per call")
    llm_temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="sampling temperature")
    llm_max_attempts: int = Field(default=3, ge=1, le=10, description="HTTP attempts per call (tenacity)")
    llm_backoff_base_s: float = Field(default=0.5, gt=0, description="per-call retry backoff base (x2 per try)")
    llm_backoff_max_s: float = Field(default=8.0, gt=0, description="per-call retry backoff cap")
    llm_rpm: float | None = Field(default=None, gt=0, description="shared requests/minute limit")
    llm_tpm: float | None = Field(default=None, gt=0, description="shared tokens/minute limit")
    llm_rate_limit_max_wait_s: float = Field(
        default=120.0, gt=0, description="a call waits this long for its slot, else the job is re-queued"
    )
    llm_cache_ttl_s: int = Field(default=7 * 24 * 3600, ge=0, description="0 disables the response cache")
    llm_prices: dict[str, LLMPrice] = Field(
        default_factory=dict,
        description='JSON {"model": {"input_per_1m": USD, "output_per_1m": USD}}: overrides or adds to the '
        "genai-prices table; a model priced by neither has cost_usd null",
    )

    # --- reliability ------------------------------------------------------------------
    stage_max_retries: int = Field(default=4, ge=0, le=20, description="Celery retries per stage")
    retry_backoff_base_s: float = Field(default=1.0, gt=0, description="stage retry backoff base (x2 per try)")
    retry_backoff_max_s: float = Field(default=60.0, gt=0, description="stage retry backoff cap")
    task_soft_time_limit_s: int = Field(default=240, ge=1, description="prefork pool: StageTimeout raised")
    task_time_limit_s: int = Field(default=300, ge=1, description="prefork pool: task killed")
    visibility_timeout_s: int = Field(
        default=60,
        ge=20,
        description="Redis broker lease: a dead worker's messages are redelivered after this long "
        "(live workers renew theirs every quarter lease)",
    )
    broker_delivery_limit: int = Field(
        default=5, ge=1, le=100,
        description="deliveries of one message (a worker killed under it counts) before it is "
        "dead-lettered as delivery_limit (RabbitMQ: also the quorum queues' x-delivery-limit)",
    )
    reconcile_interval_s: int = Field(
        default=300, ge=0,
        description="workers run conveyor reconcile this often (one at a time, by a Redis lock); 0 = never",
    )
    reconcile_after_s: int = Field(
        default=1800, ge=60,
        description="a non-terminal job whose status has not moved this long counts as stalled",
    )
    worker_concurrency: int = Field(default=4, ge=1, description="embedded worker threads")

    # --- batches ------------------------------------------------------------------------
    batch_max_document_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024,
        description="a batch item's document over this size is refused (its own invalid_input dead letter)",
    )
    retention_s: int = Field(
        default=30 * 24 * 3600, ge=0,
        description="records, statuses, batches and idempotency keys expire after this long (0 = never); "
        "open dead letters stay until resolved",
    )
    document_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=60,
        description="how long a submitted document's bytes wait in the state store for the ingest stage",
    )

    # --- guardrails ---------------------------------------------------------------------
    guard_policy: GuardPolicy = Field(default_factory=GuardPolicy, description="JSON, see GuardPolicy")
    guard_tenant_policies: dict[str, GuardPolicy] = Field(
        default_factory=dict, description='JSON {"tenant": {...GuardPolicy fields}}; replaces the default'
    )

    # --- observability and security ---------------------------------------------------
    sentry_dsn: SecretStr | None = Field(default=None, description="enables Sentry in every worker process")
    sentry_environment: str = Field(default="development", description="Sentry environment tag")
    flower_basic_auth: SecretStr | None = Field(default=None, description="user:password for Flower")
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="conveyor worker serves Prometheus metrics on this port, all interfaces (--metrics-port); "
        "unset = off",
    )
    otel_endpoint: str | None = Field(
        default=None,
        description="OpenTelemetry traces over OTLP/HTTP to this collector, e.g. http://otel-collector:4318 "
        "(needs conveyor[tracing]); unset = off",
    )
    otel_file: Path | None = Field(
        default=None,
        description="OpenTelemetry spans appended to this JSONL file, one span a line, every worker process "
        "(tests, local debugging; needs conveyor[tracing]); unset = off",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("task_soft_time_limit_s must be below task_time_limit_s")
        if self.chunk_overlap_tokens >= self.chunk_max_tokens:
            raise ValueError("chunk_overlap_tokens must be below chunk_max_tokens")
        if self.broker_url and not self.broker_url.startswith(("redis", "memory")) and not self.redis_url:
            # an AMQP broker keeps messages, not job state: each worker would write its own SQLite file
            raise ValueError("with a RabbitMQ broker, set CONVEYOR_REDIS_URL too: job state, dead letters and "
                             "rate limits live in Redis, shared by every worker")
        if self.reconcile_after_s <= self.task_time_limit_s:
            raise ValueError("reconcile_after_s must be above task_time_limit_s (a running stage is not stalled)")
        return self

    @field_validator("broker_url", "redis_url")
    @classmethod
    def _url_with_a_known_scheme(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A typo in a URL is caught at start, with the variable named, not as a library's traceback."""
        if value is None:
            return None
        schemes = _BROKER_SCHEMES if info.field_name == "broker_url" else _REDIS_SCHEMES
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in schemes or not rest:
            raise ValueError(f"not a URL of the form {'|'.join(schemes)}://host:port/... (got {_mask(value)!r})")
        return value

    @field_validator("otel_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"not an http(s):// URL of an OTLP/HTTP collector (got {_mask(value)!r})")
        return value

    # --- derived --------------------------------------------------------------------------
    def guard_policy_for(self, tenant: str) -> GuardPolicy:
        return self.guard_tenant_policies.get(tenant, self.guard_policy)

    def secret_values(self) -> list[str]:
        """Every configured secret, so the guard can refuse an output that leaks one."""
        secrets = (self.llm_api_key, self.embedding_api_key, self.qdrant_api_key, self.sentry_dsn,
                   self.flower_basic_auth)
        return [v.get_secret_value() for v in secrets if v is not None and len(v.get_secret_value()) >= 8]

    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def store_url(self) -> str | None:
        """Redis URL for state; None means the embedded SQLite store."""
        if self.redis_url:
            return self.redis_url
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return None

    @property
    def records_path(self) -> Path:
        return self.results_log or self.data_dir / "records.jsonl"


#: settings that are secrets: never in a ConfigMap, a compose file, a log or a task argument.
SECRET_SETTINGS = frozenset(
    ENV_PREFIX + name.upper()
    for name, field in Settings.model_fields.items()
    if "SecretStr" in repr(field.annotation)
)


#: CONVEYOR_* variables that are not settings but are documented (the tests' Redis).
NOT_SETTINGS = frozenset({"CONVEYOR_TEST_REDIS_URL"})


def _unknown_variables(environ: dict[str, str]) -> list[str]:
    """A typo of a setting (a close match) is an error; another service's unrelated CONVEYOR_* variable
    is only logged, so a producer importing the client is not stopped by its neighbours' names."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    messages = []
    for key in sorted(environ):
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper in NOT_SETTINGS:
            continue
        # compared without the shared prefix, which would make any two names look alike
        names = {k.removeprefix(ENV_PREFIX): k for k in known}
        close = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), names, n=1, cutoff=0.75)
        if close:
            messages.append(f"  {key}: unknown setting (did you mean {names[close[0]]}?)")
        else:
            logging.getLogger("conveyor.settings").warning("%s is not a Conveyor setting; ignored", key)
    return messages


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings from the environment; raise SettingsError naming every bad variable."""
    problems = _unknown_variables(dict(os.environ))
    if problems:
        raise SettingsError("Invalid Conveyor configuration:\n" + "\n".join(problems))
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper() if err["loc"] else "settings"
            lines.append(f"  {loc}: {err['msg']}")
        raise SettingsError("Invalid Conveyor configuration:\n" + "\n".join(lines)) from exc
