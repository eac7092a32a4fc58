"""Fitting the intent classifier from its labelled examples, and writing the shipped weights.

Three callers, none of them a normally configured worker: ``scripts/fit_intent.py``
(writes ``pipeline/intent/model.<version>.npz``), ``scripts/eval_intent.py``, and
``IntentClassifier.warm_up`` when the shipped weights do not apply (another embedding
model, edited examples, another ``l2``). Keeping it out of ``classifier.py`` keeps the
runtime path to loading and scoring.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InternalError
from pipeline.intent.classifier import (
    CALIBRATION_FOLDS,
    EXAMPLES_VERSION,
    INTENTS,
    WEIGHTS_FORMAT,
    FittedIntent,
    IntentExample,
    Method,
    SoftmaxModel,
    file_sha256,
)
from pipeline.retrieval.embeddings import Embedder, l2_normalize


def load_examples(path: str | Path) -> list[IntentExample]:
    """Read ``{"text", "intent"}`` lines; unknown intents are a packaging bug."""
    examples: list[IntentExample] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InternalError(f"cannot read intent examples {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            example = IntentExample(text=str(item["text"]), intent=str(item["intent"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InternalError(f"{path}:{number}: not an intent example: {exc}") from exc
        if example.intent not in INTENTS:
            raise InternalError(f"{path}:{number}: unknown intent {example.intent!r}")
        examples.append(example)
    missing = set(INTENTS) - {e.intent for e in examples}
    if missing:
        raise InternalError(f"{path}: no examples for {sorted(missing)}")
    return examples


def fit_intent(embedder: Embedder, examples: Sequence[IntentExample], method: Method, l2: float) -> FittedIntent:
    """Embed the examples (one batch) and fit what ``method`` scores with."""
    matrix = l2_normalize(embedder.embed([e.text for e in examples]))
    labels = np.array([INTENTS.index(e.intent) for e in examples])
    model = fit_calibrated_softmax(matrix, labels, len(INTENTS), l2) if method == "logreg" else None
    means = centroids(matrix, labels) if method == "centroid" else None
    return FittedIntent(matrix, labels, model=model, centroids=means)


def centroids(matrix: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The unit mean example of each intent (the ``centroid`` method's whole model)."""
    return l2_normalize(np.stack([matrix[labels == i].mean(axis=0) for i in range(len(INTENTS))]))


# --- softmax regression ---------------------------------------------------------------


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def fit_softmax_regression(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    l2: float,
    *,
    balanced: bool = True,
    init: np.ndarray | None = None,
    max_iter: int = 500,
    tolerance: float = 1e-6,
    memory: int = 10,
) -> np.ndarray:
    """Weights minimising weighted cross-entropy + ``l2/2 * |W|^2`` (bias unpenalised).

    The objective is strictly convex once the bias is centred, so the optimum is unique
    and the result depends only on the data (``init`` merely warm-starts). L-BFGS with
    Armijo backtracking; stops when the largest gradient component is below
    ``tolerance``. With ``balanced`` each class carries the same total weight, so the
    prior does not follow how many examples happen to be written for each intent.
    """
    x = np.asarray(features, dtype=np.float64)
    n, dim = x.shape
    xa = np.hstack([x, np.ones((n, 1))])
    onehot = np.eye(n_classes)[labels]
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    if balanced:
        present = int((counts > 0).sum())
        sample_weight = 1.0 / (present * counts[labels])
    else:
        sample_weight = np.full(n, 1.0 / n)
    penalty = np.ones((dim + 1, 1))
    penalty[-1] = 0.0
    weighted_onehot = sample_weight[:, None] * onehot

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights = theta.reshape(dim + 1, n_classes)
        log_p = _log_softmax(xa @ weights)
        loss = -float((weighted_onehot * log_p).sum()) + 0.5 * l2 * float((penalty * weights**2).sum())
        residual = sample_weight[:, None] * np.exp(log_p) - weighted_onehot
        grad = xa.T @ residual + l2 * penalty * weights
        return loss, grad.ravel()

    start = np.zeros((dim + 1, n_classes)) if init is None else np.array(init, dtype=np.float64)
    # softmax ignores a shift common to all logits and the bias is unpenalised, so the
    # bias is centred (its gradient sums to zero over classes and keeps it centred).
    start[-1] -= start[-1].mean()
    theta = start.ravel()
    loss, grad = loss_and_grad(theta)
    steps: list[np.ndarray] = []
    changes: list[np.ndarray] = []
    for _ in range(max_iter):
        if float(np.abs(grad).max()) < tolerance:
            break
        # two-loop recursion: direction = -H^-1 grad for the L-BFGS inverse-Hessian estimate
        direction = grad.copy()
        alphas: list[float] = []
        for s, y in zip(reversed(steps), reversed(changes), strict=True):
            alpha = float(s @ direction) / float(y @ s)
            alphas.append(alpha)
            direction -= alpha * y
        if steps:
            direction *= float(steps[-1] @ changes[-1]) / float(changes[-1] @ changes[-1])
        else:
            direction /= max(1.0, 10.0 * float(np.abs(grad).max()))
        for s, y, alpha in zip(steps, changes, reversed(alphas), strict=True):
            direction += s * (alpha - float(y @ direction) / float(y @ s))
        direction = -direction
        slope = float(grad @ direction)
        if slope >= 0.0:  # not a descent direction: restart from the gradient
            steps.clear()
            changes.clear()
            direction = -grad / max(1.0, 10.0 * float(np.abs(grad).max()))
            slope = float(grad @ direction)
        step = 1.0
        while True:
            candidate = theta + step * direction
            new_loss, new_grad = loss_and_grad(candidate)
            if new_loss <= loss + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, y = candidate - theta, new_grad - grad
        if float(s @ y) > 1e-12:
            steps.append(s)
            changes.append(y)
            if len(steps) > memory:
                steps.pop(0)
                changes.pop(0)
        theta, loss, grad = candidate, new_loss, new_grad
    return theta.reshape(dim + 1, n_classes)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """The temperature minimising the negative log-likelihood of held-out ``logits``.

    Golden-section search on log T (the NLL is unimodal in T); deterministic.
    """
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        return -float(_log_softmax(logits / np.exp(log_t))[rows, labels].mean())

    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(60):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    return float(np.exp((a + b) / 2.0))


def fit_calibrated_softmax(
    features: np.ndarray, labels: np.ndarray, n_classes: int, l2: float, folds: int = CALIBRATION_FOLDS
) -> SoftmaxModel:
    """Fit on all examples; fit the temperature on ``folds``-fold out-of-fold logits."""
    weights = fit_softmax_regression(features, labels, n_classes, l2)
    if folds < 2 or np.bincount(labels, minlength=n_classes).min() < folds:
        return SoftmaxModel(weights)  # too few examples of some intent to hold any out
    x = np.asarray(features, dtype=np.float64)
    fold_of = np.arange(len(labels)) % folds
    held_out = np.zeros((len(labels), n_classes))
    for fold in range(folds):
        train = fold_of != fold
        fold_weights = fit_softmax_regression(x[train], labels[train], n_classes, l2, init=weights)
        held_out[~train] = SoftmaxModel(fold_weights).logits(x[~train])
    return SoftmaxModel(weights, fit_temperature(held_out, labels))


# --- the shipped artefact ---------------------------------------------------------------


def weights_metadata(embedder: Embedder, examples_path: Path, fitted: FittedIntent, l2: float) -> dict[str, Any]:
    """What ``IntentClassifier.warm_up`` checks before it trusts the weights (no threshold: that is runtime)."""
    if fitted.model is None:
        raise ValueError("only the logreg model is shipped")
    return {
        "format": WEIGHTS_FORMAT,
        "examples_version": EXAMPLES_VERSION,
        "examples_file": examples_path.name,
        "examples_sha256": file_sha256(examples_path),
        "examples": len(fitted.labels),
        "embedder_model_id": embedder.model_id,
        "dim": int(embedder.dim),
        "method": "logreg",
        "intents": list(INTENTS),
        "l2": l2,
        "balanced": True,
        "calibration_folds": CALIBRATION_FOLDS,
        "temperature": fitted.model.temperature,
        "embeddings_dtype": "float16",
        "fitted_by": "scripts/fit_intent.py",
    }


def write_weights(path: Path, fitted: FittedIntent, meta: dict[str, Any]) -> None:
    """An ``.npz`` that ``np.load(allow_pickle=False)`` reads, byte-identical for identical inputs.

    ``weights`` stay float64 (7 KB); the example embeddings, needed only for the
    nearest-example cosine of ``min_similarity``, are float16 (cosine error < 1e-4).
    Zip entries get a fixed date so re-running the fit on unchanged examples changes nothing.
    """
    if fitted.model is None:
        raise ValueError("only the logreg model is shipped")
    arrays = {
        "meta": np.array(json.dumps(meta, sort_keys=True)),
        "weights": np.asarray(fitted.model.weights, dtype=np.float64),
        "embeddings": np.asarray(fitted.matrix, dtype=np.float16),
        "labels": np.asarray(fitted.labels, dtype=np.uint8),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue(), compresslevel=9)
    path.write_bytes(buffer.getvalue())
