from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline.embeddings import OnnxMiniLMEmbedder
from pipeline.errors import InternalError, InvalidInput
from pipeline.intent import (
    EXAMPLES_VERSION,
    INTENTS,
    IntentClassifier,
    IntentExample,
    default_examples_path,
    load_examples,
)
from tests.fakes import HashingEmbedder, shared_minilm


@pytest.fixture(scope="module")
def minilm() -> OnnxMiniLMEmbedder:
    return shared_minilm()


@pytest.fixture(scope="module")
def classifier(minilm: OnnxMiniLMEmbedder) -> IntentClassifier:
    clf = IntentClassifier(minilm)
    clf.warm_up()
    return clf


class TestExamples:
    def test_packaged_examples_cover_every_intent_in_quantity(self) -> None:
        examples = load_examples(default_examples_path())
        counts = Counter(e.intent for e in examples)
        assert set(counts) == set(INTENTS)
        assert all(25 <= n <= 60 for n in counts.values())
        assert len({e.text.lower() for e in examples}) == len(examples)  # no duplicates
        assert EXAMPLES_VERSION in default_examples_path().name

    def test_examples_are_not_copied_from_the_dev_set(self) -> None:
        dev = Path(__file__).resolve().parents[2].parent / "shared" / "eval" / "intents.dev.jsonl"
        if not dev.is_file():
            pytest.skip("shared dev set not present")
        dev_texts = {
            json.loads(line)["text"].strip().lower() for line in dev.read_text().splitlines() if line
        }
        assert not dev_texts & {e.text.strip().lower() for e in load_examples(default_examples_path())}

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
        assert prediction.method == "embedding-centroid"
        assert set(prediction.scores) == set(INTENTS)

    def test_classify_vector_reuses_a_precomputed_embedding(
        self, classifier: IntentClassifier, minilm: OnnxMiniLMEmbedder
    ) -> None:
        text = "List all payment deadlines in the contract."
        assert classifier.classify_vector(minilm.embed_one(text)) == classifier.classify(text)

    def test_high_threshold_falls_back_to_other(self, minilm: OnnxMiniLMEmbedder) -> None:
        strict = IntentClassifier(minilm, threshold=0.999)
        prediction = strict.classify("Summarise the agreement and flag risky terms.")
        assert prediction.intent == "other"
        assert prediction.method.endswith("+fallback")

    def test_knn_method_is_available(self, minilm: OnnxMiniLMEmbedder) -> None:
        knn = IntentClassifier(minilm, method="knn", k=3)
        assert knn.classify("Give me a summary of the NDA.").intent == "summarize"
        assert knn.classify("Give me a summary of the NDA.").method == "embedding-knn"

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
        return [
            IntentExample(f"{w} {i}", intent)
            for intent, ws in words.items()
            for w in ws.split()
            for i in (1, 2)
        ]

    def test_examples_are_embedded_once_and_lazily(self) -> None:
        embedder = HashingEmbedder(dim=128)
        clf = IntentClassifier(embedder, examples=self._examples())
        assert embedder.calls == 0
        clf.classify("what")
        clf.classify("table")
        assert embedder.calls == 3  # one batch for the examples, one per request

    def test_nearest_centroid_and_leave_one_out(self) -> None:
        clf = IntentClassifier(
            HashingEmbedder(dim=128), examples=self._examples(), threshold=0.0, min_similarity=0.0
        )
        assert clf.classify("risk exposure").intent == "risk"
        clf.warm_up()
        assert clf._matrix is not None
        loo = clf.classify_vector(clf._matrix[0], exclude=0)
        assert loo.intent in INTENTS

    def test_low_similarity_falls_back_to_other(self) -> None:
        clf = IntentClassifier(HashingEmbedder(dim=128), examples=self._examples(), min_similarity=0.99)
        assert clf.classify("extract").intent == "other"

    def test_other_is_never_overridden_by_fallback(self) -> None:
        clf = IntentClassifier(HashingEmbedder(dim=128), examples=self._examples(), threshold=0.99)
        prediction = clf.classify("weather pizza music")
        assert prediction.intent == "other" and not prediction.method.endswith("+fallback")

    def test_confidence_is_a_probability(self) -> None:
        clf = IntentClassifier(HashingEmbedder(dim=128), examples=self._examples())
        prediction = clf.classify_vector(np.ones(128, dtype=np.float32))
        assert 0.0 <= prediction.confidence <= 1.0

    @pytest.mark.parametrize("kwargs", [{"method": "svm"}, {"k": 0}])
    def test_bad_configuration(self, kwargs: dict[str, object]) -> None:
        with pytest.raises(ValueError):
            IntentClassifier(HashingEmbedder(), **kwargs)  # type: ignore[arg-type]
