from __future__ import annotations

import json
import logging
import tomllib
from collections import Counter
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import InternalError, InvalidInput
from pipeline.intent.classifier import (
    CALIBRATION_FOLDS,
    DEFAULT_L2,
    DEFAULT_METHOD,
    DEFAULT_THRESHOLD,
    EXAMPLES_VERSION,
    INTENTS,
    IntentClassifier,
    IntentExample,
    default_examples_path,
    default_weights_path,
    file_sha256,
    read_weights,
)
from pipeline.intent.fit import (
    fit_calibrated_softmax,
    fit_intent,
    fit_softmax_regression,
    fit_temperature,
    load_examples,
    weights_metadata,
    write_weights,
)
from pipeline.retrieval.embeddings import MINILM_MODEL_ID, OnnxMiniLMEmbedder
from pipeline.settings import Settings
from scripts.eval_intent import fitted_without, leave_one_out
from tests.fakes import HashingEmbedder, shared_minilm

REPO = Path(__file__).resolve().parents[2]
REFIT = "python scripts/fit_intent.py"

#: Phrasings written for these tests only: not in the examples file, the dev set or the
#: probes of scripts/eval_intent.py (checked below).
HELD_OUT = [
    ("Could you sum this NDA up in a couple of lines?", "summarize"),
    ("I just want the key points of the reseller agreement.", "summarize"),
    ("How many days do we have to object to a new subprocessor?", "question"),
    ("Is the supplier allowed to subcontract the work?", "question"),
    ("What is the late fee?", "question"),
    ("Who is the landlord's agent?", "question"),
    ("Put every payment milestone into a table with amounts and dates.", "extract"),
    ("Extract all the definitions from section 1 as JSON.", "extract"),
    ("Does the termination clause leave us exposed?", "risk"),
    ("Which terms are most dangerous for a small customer like us?", "risk"),
    ("Write a limerick about lawyers.", "other"),
    ("hey, how's it going?", "other"),
]


@pytest.fixture(scope="module")
def minilm() -> OnnxMiniLMEmbedder:
    return shared_minilm()


@pytest.fixture(scope="module")
def classifier(minilm: OnnxMiniLMEmbedder) -> IntentClassifier:
    """What a worker gets: the shipped weights."""
    clf = IntentClassifier(minilm)
    clf.warm_up()
    return clf


@pytest.fixture(scope="module")
def freshly_fitted(minilm: OnnxMiniLMEmbedder) -> IntentClassifier:
    clf = IntentClassifier(minilm, load_weights=False)
    clf.warm_up()
    return clf


class CountingEmbedder:
    """The real MiniLM under any ``model_id``, counting the texts it is asked to embed."""

    def __init__(self, inner: OnnxMiniLMEmbedder, model_id: str = MINILM_MODEL_ID) -> None:
        self.inner, self.model_id, self.dim = inner, model_id, inner.dim
        self.texts = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.embed(texts)

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _dev_texts() -> set[str]:
    dev = Path(__file__).resolve().parents[2].parent / "shared" / "eval" / "intents.dev.jsonl"
    if not dev.is_file():
        pytest.skip("shared dev set not present")
    return {json.loads(line)["text"].strip().lower() for line in dev.read_text().splitlines() if line}


class TestExamples:
    def test_packaged_examples_cover_every_intent_in_quantity(self) -> None:
        examples = load_examples(default_examples_path())
        counts = Counter(e.intent for e in examples)
        assert set(counts) == set(INTENTS)
        assert all(40 <= n <= 150 for n in counts.values())
        assert len({e.text.strip().lower() for e in examples}) == len(examples)  # no duplicates
        assert default_examples_path().name == f"intent_examples.{EXAMPLES_VERSION}.jsonl"
        assert EXAMPLES_VERSION == "v2"

    def test_only_the_current_examples_file_is_packaged(self) -> None:
        files = sorted(p.name for p in default_examples_path().parent.glob("intent_examples.*.jsonl"))
        assert files == [default_examples_path().name]

    def test_examples_are_not_copied_from_the_dev_set(self) -> None:
        examples = {e.text.strip().lower() for e in load_examples(default_examples_path())}
        assert not _dev_texts() & examples

    def test_held_out_phrasings_are_really_held_out(self) -> None:
        from scripts.eval_intent import PROBES

        examples = {e.text.strip().lower() for e in load_examples(default_examples_path())}
        ours = {text.strip().lower() for text, _ in HELD_OUT}
        probes = {text.strip().lower() for text, _ in PROBES}
        assert not (ours | probes) & examples
        assert not ours & probes

    def test_unknown_intent_in_file_is_a_packaging_bug(self, tmp_path: Path) -> None:
        path = tmp_path / "ex.jsonl"
        path.write_text(json.dumps({"text": "x", "intent": "translate"}) + "\n")
        with pytest.raises(InternalError, match="unknown intent"):
            load_examples(path)

    def test_missing_intent_is_a_packaging_bug(self, tmp_path: Path) -> None:
        path = tmp_path / "ex.jsonl"
        path.write_text(json.dumps({"text": "x", "intent": "question"}) + "\n")
        with pytest.raises(InternalError, match="no examples"):
            load_examples(path)


class TestShippedWeights:
    def test_metadata_matches_the_examples_file(self) -> None:
        meta, fitted = read_weights(default_weights_path())
        examples = load_examples(default_examples_path())
        stale = f"pipeline/intent/{default_weights_path().name} is stale: run {REFIT}"
        assert default_weights_path().name == f"model.{EXAMPLES_VERSION}.npz"
        assert meta["examples_version"] == EXAMPLES_VERSION, stale
        assert meta["examples_file"] == default_examples_path().name, stale
        assert meta["examples_sha256"] == file_sha256(default_examples_path()), stale
        assert [INTENTS[i] for i in fitted.labels] == [e.intent for e in examples], stale
        assert meta["embedder_model_id"] == MINILM_MODEL_ID, stale
        assert (meta["method"], meta["l2"]) == ("logreg", DEFAULT_L2), stale
        assert meta["calibration_folds"] == CALIBRATION_FOLDS, stale
        assert tuple(meta["intents"]) == INTENTS, stale

    def test_weights_are_package_data(self) -> None:
        patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
        relative = default_weights_path().relative_to(REPO / "pipeline").as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns["pipeline"])

    def test_worker_classifier_loads_the_shipped_weights(self, classifier: IntentClassifier) -> None:
        assert classifier.loaded_from == default_weights_path()

    @pytest.mark.parametrize(
        "text",
        [
            "Summarize this contract.",
            "Who are the parties?",
            "Pull the payment dates into a table.",
            "Is the indemnity a problem for us?",
            "Summarise the agreement and flag anything risky for us.",
            "asdf qwer zxcv",
        ],
    )
    def test_loaded_weights_predict_like_a_fresh_fit(
        self, classifier: IntentClassifier, freshly_fitted: IntentClassifier, minilm: OnnxMiniLMEmbedder, text: str
    ) -> None:
        assert freshly_fitted.loaded_from is None
        vector = minilm.embed_one(text)
        loaded, fresh = classifier.classify_vector(vector), freshly_fitted.classify_vector(vector)
        assert (loaded.intent, loaded.method) == (fresh.intent, fresh.method), f"re-run {REFIT}"
        # onnxruntime's kernels differ by CPU (AVX2 / AVX-512): a refit elsewhere moves scores by ~1e-4
        assert loaded.confidence == pytest.approx(fresh.confidence, abs=2e-3)
        assert loaded.scores == pytest.approx(fresh.scores, abs=2e-3)

    def test_shipped_state_is_the_fitted_state(
        self, classifier: IntentClassifier, freshly_fitted: IntentClassifier
    ) -> None:
        loaded, fresh = classifier.model, freshly_fitted.model
        assert loaded is not None and fresh is not None
        # the same fit on another CPU (onnxruntime's AVX2 vs AVX-512 kernels) differs by ~1e-4; staleness
        # (other examples, other settings) moves weights by far more, and the metadata test pins the inputs
        assert np.allclose(loaded.weights, fresh.weights, atol=2e-3)
        assert loaded.temperature == pytest.approx(fresh.temperature, rel=1e-3)
        # float16 example embeddings: the nearest-example cosine (min_similarity) moves < 1e-3
        assert np.abs(classifier.fitted.matrix - freshly_fitted.fitted.matrix).max() < 1e-3

    def test_loading_embeds_no_examples(self, minilm: OnnxMiniLMEmbedder, caplog: pytest.LogCaptureFixture) -> None:
        embedder = CountingEmbedder(minilm)
        clf = IntentClassifier(embedder, threshold=0.3)
        clf.warm_up()
        assert embedder.texts == 0
        assert clf.loaded_from == default_weights_path()
        assert clf.classify("Summarize this contract.").intent == "summarize"
        assert embedder.texts == 1
        assert not _warnings(caplog)

    def test_another_embedding_model_fits_once_and_says_why(self, caplog: pytest.LogCaptureFixture) -> None:
        embedder = HashingEmbedder(dim=64)
        clf = IntentClassifier(embedder)
        clf.warm_up()
        clf.warm_up()
        clf.classify("what is the fee")
        assert clf.loaded_from is None
        assert embedder.calls == 2  # the examples in one batch, then the request
        assert clf.model is not None and clf.model.weights.shape == (65, len(INTENTS))
        warnings = _warnings(caplog)
        assert len(warnings) == 1
        assert "test-hashing" in warnings[0] and MINILM_MODEL_ID in warnings[0]

    def test_edited_examples_fit_instead_of_loading_stale_weights(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        lines = default_examples_path().read_text(encoding="utf-8").splitlines()
        kept = [line for i, line in enumerate(lines) if i % 8 == 0]
        edited = tmp_path / default_examples_path().name
        edited.write_text("\n".join(kept) + "\n", encoding="utf-8")
        embedder = HashingEmbedder(dim=384)
        embedder.model_id = MINILM_MODEL_ID  # as if MiniLM: only the examples differ
        clf = IntentClassifier(embedder, edited)
        clf.warm_up()
        assert clf.loaded_from is None and embedder.calls == 1
        assert len(clf.fitted.labels) == len(kept)
        [warning] = _warnings(caplog)
        assert edited.name in warning and REFIT in warning

    def test_weights_round_trip_through_the_file(self, tmp_path: Path) -> None:
        examples = TestClassifierMechanics()._examples()
        examples_path = tmp_path / "examples.jsonl"
        examples_path.write_text("".join(json.dumps({"text": e.text, "intent": e.intent}) + "\n" for e in examples))
        fitter = HashingEmbedder(dim=128)
        fitted = fit_intent(fitter, examples, "logreg", DEFAULT_L2)
        weights = tmp_path / "model.npz"
        write_weights(weights, fitted, weights_metadata(fitter, examples_path, fitted, DEFAULT_L2))
        first = weights.read_bytes()
        write_weights(weights, fitted, weights_metadata(fitter, examples_path, fitted, DEFAULT_L2))
        assert weights.read_bytes() == first  # deterministic: no diff without a change

        embedder = HashingEmbedder(dim=128)
        loaded = IntentClassifier(embedder, examples_path, weights_path=weights)
        fresh = IntentClassifier(HashingEmbedder(dim=128), examples_path, load_weights=False)
        assert loaded.loaded_from == weights and embedder.calls == 0
        for text in ("gist of it", "risk exposure", "pizza", "who"):
            a, b = loaded.classify(text), fresh.classify(text)
            assert a.intent == b.intent and a.confidence == pytest.approx(b.confidence, abs=1e-4)

    @pytest.mark.parametrize("damage", ["garbage", "truncated"])
    def test_unreadable_weights_fit_and_say_why(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
    ) -> None:
        broken = tmp_path / "model.npz"
        broken.write_bytes(b"not a zip" if damage == "garbage" else default_weights_path().read_bytes()[:4096])
        clf = IntentClassifier(HashingEmbedder(dim=64), weights_path=broken)
        clf.warm_up()
        assert clf.loaded_from is None
        [warning] = _warnings(caplog)
        assert "cannot read intent weights" in warning

    @pytest.mark.parametrize("kwargs", [{"load_weights": False}, {"method": "centroid"}])
    def test_asking_for_a_fit_fits_without_a_warning(
        self, caplog: pytest.LogCaptureFixture, kwargs: dict[str, object]
    ) -> None:
        embedder = HashingEmbedder(dim=64)  # would warn about its model_id if loading were tried
        clf = IntentClassifier(embedder, **kwargs)  # type: ignore[arg-type]
        clf.warm_up()
        assert clf.loaded_from is None and embedder.calls == 1
        assert not _warnings(caplog)


class TestDefaults:
    def test_default_is_calibrated_logistic_regression(self) -> None:
        assert DEFAULT_METHOD == "logreg"

    def test_settings_threshold_matches_the_classifier_default(self) -> None:
        assert Settings.model_fields["intent_threshold"].default == DEFAULT_THRESHOLD


class TestClassifierWithMiniLM:
    @pytest.mark.parametrize(
        "text, intent",
        [
            ("Please give me a brief summary of this supplier agreement.", "summarize"),
            ("How many days' notice does the landlord need to give?", "question"),
            ("Extract the effective date, parties and fees into JSON.", "extract"),
            ("Which clauses in this contract are dangerous for us as the buyer?", "risk"),
            ("What's a good recipe for pancakes?", "other"),
        ],
    )
    def test_clear_requests(self, classifier: IntentClassifier, text: str, intent: str) -> None:
        prediction = classifier.classify(text)
        assert prediction.intent == intent
        assert 0.0 < prediction.confidence <= 1.0
        assert prediction.method == "embedding-logreg"
        assert set(prediction.scores) == set(INTENTS)

    @pytest.mark.parametrize(
        "text",
        [
            "What is the term of this agreement?",  # was summarize with confidence 0.93
            "Who are the parties?",  # was extract
        ],
    )
    def test_short_factual_questions_are_questions(self, classifier: IntentClassifier, text: str) -> None:
        prediction = classifier.classify(text)
        assert prediction.intent == "question"
        assert prediction.method == "embedding-logreg"
        assert prediction.confidence >= classifier.threshold

    @pytest.mark.parametrize("text, intent", HELD_OUT)
    def test_held_out_phrasings(self, classifier: IntentClassifier, text: str, intent: str) -> None:
        assert classifier.classify(text).intent == intent

    @pytest.mark.parametrize("text", ["Summarize this contract.", "asdf qwer zxcv", "Is there a cap?"])
    def test_scores_are_calibrated_probabilities(self, classifier: IntentClassifier, text: str) -> None:
        prediction = classifier.classify(text)
        assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-3)
        assert prediction.confidence == pytest.approx(max(prediction.scores.values()), abs=1e-4)

    def test_confidence_is_not_saturated_on_an_ambiguous_request(self, classifier: IntentClassifier) -> None:
        clear = classifier.classify("Summarize this agreement in three sentences.")
        ambiguous = classifier.classify("Summarise the agreement and flag anything risky for us.")
        assert clear.confidence > 0.9
        assert ambiguous.intent in ("summarize", "risk")
        assert ambiguous.confidence < clear.confidence

    def test_model_is_fitted_and_temperature_calibrated(self, classifier: IntentClassifier) -> None:
        model = classifier.model
        assert model is not None
        assert model.weights.shape == (classifier.embedder.dim + 1, len(INTENTS))
        assert 0.05 < model.temperature < 20.0

    def test_classify_vector_reuses_a_precomputed_embedding(
        self, classifier: IntentClassifier, minilm: OnnxMiniLMEmbedder
    ) -> None:
        text = "List all payment deadlines in the contract."
        assert classifier.classify_vector(minilm.embed_one(text)) == classifier.classify(text)

    def test_high_threshold_falls_back_to_other(self, minilm: OnnxMiniLMEmbedder) -> None:
        strict = IntentClassifier(minilm, threshold=0.999)
        prediction = strict.classify("Summarise the agreement and flag risky terms.")
        assert prediction.intent == "other"
        assert prediction.method == "embedding-logreg+fallback"

    @pytest.mark.parametrize("method", ["centroid", "knn"])
    def test_similarity_methods_are_still_available(self, minilm: OnnxMiniLMEmbedder, method: str) -> None:
        clf = IntentClassifier(minilm, method=method, k=3)  # type: ignore[arg-type]
        prediction = clf.classify("Give me a summary of the NDA.")
        assert prediction.intent == "summarize"
        assert prediction.method == f"embedding-{method}"
        assert clf.model is None

    def test_empty_text_is_invalid(self, classifier: IntentClassifier) -> None:
        with pytest.raises(InvalidInput):
            classifier.classify("  ")


class TestClassifierMechanics:
    def _examples(self) -> list[IntentExample]:
        words = {
            "summarize": "summary overview gist",
            "question": "what when who",
            "extract": "extract list table",
            "risk": "risk danger exposure",
            "other": "weather pizza music",
        }
        return [IntentExample(f"{w} {i}", intent) for intent, ws in words.items() for w in ws.split() for i in (1, 2)]

    def test_examples_are_embedded_once_and_lazily(self) -> None:
        embedder = HashingEmbedder(dim=128)
        clf = IntentClassifier(embedder, examples=self._examples())
        assert embedder.calls == 0
        clf.classify("what")
        clf.classify("table")
        assert embedder.calls == 3  # one batch for the examples, one per request

    @pytest.mark.parametrize("method", ["logreg", "centroid", "knn"])
    def test_each_method_and_leave_one_out(self, method: str) -> None:
        clf = IntentClassifier(
            HashingEmbedder(dim=128),
            examples=self._examples(),
            threshold=0.0,
            min_similarity=0.0,
            method=method,  # type: ignore[arg-type]
        )
        assert clf.classify("risk exposure").intent == "risk"
        loo = leave_one_out(clf, 0)
        assert loo.intent in INTENTS
        assert loo.method == f"embedding-{method}"

    def test_leave_one_out_refits_without_touching_the_full_model(self) -> None:
        clf = IntentClassifier(HashingEmbedder(dim=128), examples=self._examples(), threshold=0.0)
        full_state = clf.fitted
        assert full_state.model is not None
        before = full_state.model.weights.copy()
        full = clf.classify_vector(full_state.matrix[0])
        held_out = leave_one_out(clf, 0)
        assert np.array_equal(full_state.model.weights, before)
        assert held_out.intent in INTENTS
        without = fitted_without(full_state, 0, clf.l2)
        assert without.model is not None and len(without.labels) == len(full_state.labels) - 1
        assert not np.array_equal(without.model.weights, before)  # refitted without example 0
        assert without.model.temperature == full_state.model.temperature
        assert clf.classify_vector(full_state.matrix[0]) == full

    def test_training_is_deterministic(self) -> None:
        first = IntentClassifier(HashingEmbedder(dim=128), examples=self._examples())
        second = IntentClassifier(HashingEmbedder(dim=128), examples=self._examples())
        assert first.model is not None and second.model is not None
        assert np.array_equal(first.model.weights, second.model.weights)
        assert first.model.temperature == second.model.temperature
        assert first.classify("gist of it") == second.classify("gist of it")

    def test_low_similarity_falls_back_to_other(self) -> None:
        clf = IntentClassifier(HashingEmbedder(dim=128), examples=self._examples(), min_similarity=0.99)
        prediction = clf.classify("extract")
        assert prediction.intent == "other" and prediction.method.endswith("+fallback")

    @pytest.mark.parametrize("method", ["logreg", "centroid"])
    def test_other_is_never_overridden_by_fallback(self, method: str) -> None:
        clf = IntentClassifier(
            HashingEmbedder(dim=128),
            examples=self._examples(),
            threshold=0.99,
            method=method,  # type: ignore[arg-type]
        )
        prediction = clf.classify("weather pizza music")
        assert prediction.intent == "other" and not prediction.method.endswith("+fallback")

    def test_confidence_is_a_probability(self) -> None:
        clf = IntentClassifier(HashingEmbedder(dim=128), examples=self._examples())
        prediction = clf.classify_vector(np.ones(128, dtype=np.float32))
        assert 0.0 <= prediction.confidence <= 1.0

    @pytest.mark.parametrize("kwargs", [{"method": "svm"}, {"k": 0}, {"l2": 0.0}, {"l2": -1.0}])
    def test_bad_configuration(self, kwargs: dict[str, object]) -> None:
        with pytest.raises(ValueError):
            IntentClassifier(HashingEmbedder(), **kwargs)  # type: ignore[arg-type]


class TestSoftmaxRegression:
    def _blobs(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(7)
        centres = np.eye(3, 6) * 3.0
        labels = np.repeat(np.arange(3), 20)
        return centres[labels] + rng.normal(scale=0.5, size=(60, 6)), labels

    def test_separates_classes_and_reaches_a_stationary_point(self) -> None:
        x, y = self._blobs()
        weights = fit_softmax_regression(x, y, 3, l2=1e-2)
        logits = x @ weights[:-1] + weights[-1]
        assert (logits.argmax(axis=1) == y).mean() > 0.95
        # optimality: the gradient of the objective vanishes (bias row unpenalised)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        residual = (p - np.eye(3)[y]) / (3 * 20)  # balanced weights, 20 per class
        grad_w = x.T @ residual + 1e-2 * weights[:-1]
        grad_b = residual.sum(axis=0)
        assert np.abs(grad_w).max() < 1e-5 and np.abs(grad_b).max() < 1e-5

    def test_warm_start_reaches_the_same_optimum(self) -> None:
        x, y = self._blobs()
        cold = fit_softmax_regression(x, y, 3, l2=1e-2)
        warm = fit_softmax_regression(x, y, 3, l2=1e-2, init=np.ones_like(cold))
        assert np.allclose(cold, warm, atol=1e-4)

    def test_too_few_examples_per_intent_skips_calibration(self) -> None:
        x, y = self._blobs()
        keep = np.r_[0:20, 20:40, 40:43]  # the third class has 3 examples, fewer than the folds
        model = fit_calibrated_softmax(x[keep], y[keep], 3, l2=1e-2)
        assert model.temperature == 1.0
        assert fit_calibrated_softmax(x, y, 3, l2=1e-2).temperature != 1.0

    def test_temperature_recovers_a_known_scale(self) -> None:
        rng = np.random.default_rng(3)
        true_logits = rng.normal(scale=2.0, size=(4000, 4))
        p = np.exp(true_logits - true_logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        labels = np.array([rng.choice(4, p=row) for row in p])
        # a model that is twice as confident as it should be needs T = 2
        assert fit_temperature(2.0 * true_logits, labels) == pytest.approx(2.0, rel=0.1)
