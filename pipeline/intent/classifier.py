"""Intent classification over sentence embeddings of labelled examples.

The request is embedded once; ``classify_vector`` lets the retrieve stage reuse that
vector. Three scorers share the same examples:

* ``logreg`` (default) — multinomial logistic regression (softmax) on the example
  embeddings, L2-regularised, class-balanced, fitted with a small deterministic L-BFGS in
  numpy (no randomness, no extra dependency; ``pipeline/intent/fit.py``). Its
  probabilities are calibrated by one temperature fitted on out-of-fold predictions
  (``CALIBRATION_FOLDS`` folds by example index), so ``confidence`` — the probability of
  the winning intent — can be read as an estimate of being right. ``scores`` holds the
  calibrated probability of every intent. The weights are a (dim+1) x 5 matrix: each
  intent is a direction in embedding space, which keeps the model inspectable.
* ``centroid`` — cosine to the mean example of each intent; ``scores`` are cosines and
  ``confidence`` a softmax over them at ``TEMPERATURE``.
* ``knn`` — mean cosine of the ``k`` most similar examples of each intent (same scoring).

The ``logreg`` model is fitted offline by ``scripts/fit_intent.py`` and shipped as
``model.v2.npz`` next to this module: the weights, the temperature, the example
embeddings in float16 (the nearest-example cosine below needs them; cosine error < 1e-4)
and metadata (examples version and sha256, embedder ``model_id``, ``l2``, folds).
``warm_up`` loads it when the embedder, the examples file (by sha256) and ``l2`` match,
and otherwise embeds the examples and fits here, logging a warning that says why (e.g.
an OpenAI-compatible embedder, or examples edited without re-running the script; a unit
test fails for the latter). ``centroid``/``knn`` and explicit ``examples`` always fit.

A prediction falls back to ``other`` when its confidence is below ``threshold`` or when
the request is unlike every example (``min_similarity``: the best centroid or k-NN score,
or for ``logreg`` the cosine to the nearest example): an unclear request should not be
summarised or searched on a guess. ``other`` itself is never turned into a fallback.

Measured with ``scripts/eval_intent.py`` (MiniLM int8; dev = ../shared intents.dev, 25
lines; probes = 71 held-out phrasings kept in the script and out of the examples; LOO =
leave-one-out on the examples; ECE = expected calibration error of the LOO confidences;
all at threshold 0.40):

    examples  method     LOO    dev    probes  ECE
    v1 (238)  centroid   0.840  0.920  0.901   0.056   (0.845 / 0.920 / 0.915 at 0.30)
    v1 (238)  knn (k=5)  0.777  0.840  0.789   0.107
    v1 (238)  logreg     0.920  1.000  0.930   0.033
    v2 (393)  centroid   0.850  0.920  0.915   0.059
    v2 (393)  knn (k=5)  0.809  1.000  0.915   0.102
    v2 (393)  logreg     0.944  1.000  0.944   0.028   <- default

v2 adds short factual questions ("What is the term of ...", "Who is the ..."), extraction
requests, risk questions and off-topic/gibberish lines, all written for the project.
The threshold barely binds for ``logreg`` (1 of 393 LOO predictions falls below 0.40;
the sweep is printed by the script). Lexical features (interrogative first word,
trailing "?", imperative verb) appended to the logistic regression gained 0.008 LOO and
nothing on dev or probes, and were left out: the intent stage calls ``classify_vector``
with the embedding only, so they could not be used where it matters.

Start-up, measured with ``scripts/bench_startup.py`` in one run (2 CPUs; medians of 5,
[min-max]; "before" = e583326, which fitted at every start; "after" = the working tree
at dd97e40, so the end-to-end rows could also carry other changes since e583326 — all
three drop by the warm-up's 0.8-0.9 s):

    IntentClassifier.warm_up()           0.792 s [0.76-0.84] fit  ->  0.004 s load
    conveyor classify (wall)             1.838 s [1.66-2.04]      ->  0.957 s [0.90-1.13]
    worker -Q intent --pool solo, start
      to "warmed up for intent"          1.775 s [1.75-1.84]      ->  0.919 s [0.84-1.00]
      to celery's "ready."               2.816 s [2.80-2.89]      ->  1.976 s [1.88-2.04]

Of the fit, embedding the 393 examples takes ≈0.75 s and the six L-BFGS fits (full +
calibration folds) ≈0.1 s; loading is reading 288 KiB and hashing the examples file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.errors import InternalError, InvalidInput
from pipeline.retrieval.embeddings import Embedder, l2_normalize

log = logging.getLogger(__name__)

INTENTS: tuple[str, ...] = ("summarize", "question", "extract", "risk", "other")
FALLBACK_INTENT = "other"
EXAMPLES_VERSION = "v2"
Method = Literal["logreg", "centroid", "knn"]
METHODS: tuple[str, ...] = ("logreg", "centroid", "knn")

DEFAULT_METHOD: Method = "logreg"
DEFAULT_K = 5
#: below this calibrated probability of the winning intent the request becomes ``other``.
DEFAULT_THRESHOLD = 0.40
DEFAULT_MIN_SIMILARITY = 0.20
#: L2 penalty on the logistic-regression weights (the bias is not penalised); chosen by
#: leave-one-out on the examples v2: 1e-2 0.873, 3e-3 0.916, 1e-3 0.931, 3e-4 0.944,
#: 1e-4 0.947 (dev and probes equal from 1e-3 down); 3e-4 is the most regularised end of
#: the plateau.
DEFAULT_L2 = 3e-4
#: folds for the out-of-fold predictions the confidence temperature is fitted on.
CALIBRATION_FOLDS = 5
#: softmax temperature over cosine scores (centroid/knn); cosines of MiniLM differ by a
#: few hundredths.
TEMPERATURE = 0.05
#: layout version of the shipped weights file (``scripts/fit_intent.py`` writes it).
WEIGHTS_FORMAT = 1


def default_examples_path() -> Path:
    return Path(str(resources.files("pipeline").joinpath(f"data/intent_examples.{EXAMPLES_VERSION}.jsonl")))


def default_weights_path() -> Path:
    """The logreg weights fitted offline for the default embedder and examples."""
    return Path(str(resources.files("pipeline").joinpath(f"intent/model.{EXAMPLES_VERSION}.npz")))


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class IntentExample:
    text: str
    intent: str


@dataclass(frozen=True)
class IntentPrediction:
    intent: str
    confidence: float
    method: str
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SoftmaxModel:
    """``logits = [x, 1] @ weights``; probabilities ``softmax(logits / temperature)``."""

    weights: np.ndarray  # (dim + 1, n_classes), float64, last row is the bias
    temperature: float = 1.0

    def logits(self, features: np.ndarray) -> np.ndarray:
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        return features @ self.weights[:-1] + self.weights[-1]

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return softmax(self.logits(features) / self.temperature)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class FittedIntent:
    """What a request is scored against: unit example embeddings, their labels, the method's model."""

    matrix: np.ndarray  # (n, dim) float32
    labels: np.ndarray  # (n,) indices into INTENTS
    model: SoftmaxModel | None = None  # logreg
    centroids: np.ndarray | None = None  # centroid, (len(INTENTS), dim)


def predict(
    vector: np.ndarray, fitted: FittedIntent, *, method: Method, k: int, threshold: float, min_similarity: float
) -> IntentPrediction:
    """Score one embedding and apply the fallback rule (shared by the classifier and the LOO evaluation)."""
    query = l2_normalize(np.asarray(vector, dtype=np.float32).reshape(-1))
    if method == "logreg":
        if fitted.model is None:
            raise InternalError("the logreg intent method has no fitted model")
        probabilities = fitted.model.probabilities(query)[0]
        scores = probabilities
        similarity = float((fitted.matrix @ query).max())  # nearest example
    else:
        scores = _similarity_scores(query, fitted, method, k)
        probabilities = softmax((scores - scores.max()) / TEMPERATURE)
        similarity = float(scores.max())
    best = int(np.argmax(probabilities))
    intent, confidence = INTENTS[best], float(probabilities[best])
    name = f"embedding-{method}"
    score_map = {intent_name: round(float(s), 4) for intent_name, s in zip(INTENTS, scores, strict=True)}
    if intent != FALLBACK_INTENT and (similarity < min_similarity or confidence < threshold):
        return IntentPrediction(FALLBACK_INTENT, confidence, f"{name}+fallback", score_map)
    return IntentPrediction(intent, confidence, name, score_map)


def _similarity_scores(query: np.ndarray, fitted: FittedIntent, method: Method, k: int) -> np.ndarray:
    if method == "centroid":
        if fitted.centroids is None:
            raise InternalError("the centroid intent method has no centroids")
        return fitted.centroids @ query
    similarities = fitted.matrix @ query
    scores = np.empty(len(INTENTS), dtype=np.float32)
    for i in range(len(INTENTS)):
        own = np.sort(similarities[fitted.labels == i])[::-1][:k]
        scores[i] = own.mean()
    return scores


def read_weights(path: str | Path) -> tuple[dict[str, Any], FittedIntent]:
    """The metadata and logreg state in a weights file; ``InternalError`` if it is not one."""
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:  # closed on a bad zip too
            meta = json.loads(str(data["meta"]))
            weights = np.asarray(data["weights"], dtype=np.float64)
            matrix = np.asarray(data["embeddings"], dtype=np.float32)
            labels = np.asarray(data["labels"], dtype=np.int64)
        if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"not intent weights of format {WEIGHTS_FORMAT}")
        dim, n, temperature = int(meta["dim"]), int(meta["examples"]), float(meta["temperature"])
    except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        raise InternalError(f"cannot read intent weights {path}: {exc}") from exc
    if (
        weights.shape != (dim + 1, len(INTENTS))
        or matrix.shape != (n, dim)
        or labels.shape != (n,)
        or not ((labels >= 0) & (labels < len(INTENTS))).all()
    ):
        raise InternalError(f"cannot read intent weights {path}: arrays do not match dim {dim}, {n} examples")
    return meta, FittedIntent(matrix, labels, model=SoftmaxModel(weights, temperature))


def _mismatch(meta: dict[str, Any], embedder: Embedder, examples_path: Path, l2: float) -> str | None:
    """Why the shipped weights cannot stand in for a fit with this configuration, or None."""
    if meta.get("embedder_model_id") != embedder.model_id or meta.get("dim") != embedder.dim:
        return (
            f"they were fitted for embedder {meta.get('embedder_model_id')!r} (dim {meta.get('dim')}), "
            f"this one is {embedder.model_id!r} (dim {embedder.dim})"
        )
    if tuple(meta.get("intents", ())) != INTENTS:
        return f"they were fitted for intents {meta.get('intents')}, the classifier has {list(INTENTS)}"
    if meta.get("l2") != l2 or meta.get("calibration_folds") != CALIBRATION_FOLDS:
        return f"they were fitted with l2={meta.get('l2')} and {meta.get('calibration_folds')} calibration folds"
    try:
        sha = file_sha256(examples_path)
    except OSError as exc:
        return f"cannot hash the examples {examples_path}: {exc}"
    if sha != meta.get("examples_sha256"):
        return (
            f"{examples_path.name} is not the file they were fitted on (sha256 {sha[:12]}..., "
            f"weights {str(meta.get('examples_sha256'))[:12]}...); run python scripts/fit_intent.py"
        )
    return None


class IntentClassifier:
    """Softmax regression (shipped weights or fitted), nearest centroid or k-NN over example embeddings."""

    def __init__(
        self,
        embedder: Embedder,
        examples_path: str | Path | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        k: int = DEFAULT_K,
        *,
        method: Method = DEFAULT_METHOD,
        min_similarity: float = DEFAULT_MIN_SIMILARITY,
        examples: Sequence[IntentExample] | None = None,
        l2: float = DEFAULT_L2,
        weights_path: str | Path | None = None,
        load_weights: bool = True,
    ) -> None:
        """``load_weights=False`` always fits from the examples (evaluation, tests)."""
        if method not in METHODS:
            raise ValueError(f"unknown intent method {method!r}; expected one of {METHODS}")
        if k < 1:
            raise ValueError("k must be at least 1")
        if not l2 > 0.0:
            raise ValueError("l2 must be positive")
        self.embedder = embedder
        self.examples_path = Path(examples_path) if examples_path else default_examples_path()
        self.weights_path = Path(weights_path) if weights_path else default_weights_path()
        self.threshold = threshold
        self.min_similarity = min_similarity
        self.k = k
        self.l2 = l2
        self.method: Method = method
        self.load_weights = load_weights
        self._given_examples = list(examples) if examples is not None else None
        self._lock = threading.Lock()
        self._fitted: FittedIntent | None = None
        self._loaded_from: Path | None = None

    @property
    def fitted(self) -> FittedIntent:
        self.warm_up()
        assert self._fitted is not None
        return self._fitted

    @property
    def model(self) -> SoftmaxModel | None:
        """The softmax regression (``logreg`` only), for inspection."""
        return self.fitted.model

    @property
    def loaded_from(self) -> Path | None:
        """The weights file the model was loaded from; None when it was fitted here."""
        self.warm_up()
        return self._loaded_from

    def warm_up(self) -> None:
        """Load the shipped weights, else embed the examples and fit (once); call at worker start."""
        if self._fitted is not None:
            return
        with self._lock:
            if self._fitted is not None:
                return
            fitted, reason = self._load()
            if fitted is not None:
                self._loaded_from = self.weights_path
            else:
                from pipeline.intent.fit import fit_intent, load_examples

                if reason is not None:
                    log.warning("intent classifier: fitting from the examples, not loading %s: %s",
                                self.weights_path.name, reason)
                examples = self._given_examples or load_examples(self.examples_path)
                fitted = fit_intent(self.embedder, examples, self.method, self.l2)
            self._fitted = fitted

    def _load(self) -> tuple[FittedIntent | None, str | None]:
        """The shipped state, or why not (None when fitting was asked for and is no surprise)."""
        if not self.load_weights or self.method != "logreg" or self._given_examples is not None:
            return None, None
        try:
            meta, fitted = read_weights(self.weights_path)
        except InternalError as exc:
            return None, str(exc)
        reason = _mismatch(meta, self.embedder, self.examples_path, self.l2)
        return (None, reason) if reason else (fitted, None)

    def classify(self, text: str) -> IntentPrediction:
        if not text or not text.strip():
            raise InvalidInput("cannot classify an empty request")
        return self.classify_vector(self.embedder.embed_one(text))

    def classify_vector(self, vector: np.ndarray) -> IntentPrediction:
        """Classify an already computed query embedding (the intent stage reuses the request's)."""
        return predict(
            vector,
            self.fitted,
            method=self.method,
            k=self.k,
            threshold=self.threshold,
            min_similarity=self.min_similarity,
        )
