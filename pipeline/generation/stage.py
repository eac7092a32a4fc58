"""Stage 3: the completion. A ``Generator`` is either the offline extractive one or an LLM."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from schemas import Completion, GenerationResult, RetrievalResult

if TYPE_CHECKING:
    from pipeline.resources import Resources


class Generator(Protocol):
    def generate(self, msg: RetrievalResult) -> Completion: ...


def build_generator(res: Resources) -> Generator:
    """An LLM when ``CONVEYOR_LLM_BASE_URL`` is set, else the honest extractive default."""
    if res.settings.llm_base_url:
        from pipeline.generation.llm_generator import build_llm_generator

        return build_llm_generator(res)
    from pipeline.generation.extractive import ExtractiveGenerator

    return ExtractiveGenerator(res.embedder)


def run_generate(msg: RetrievalResult, res: Resources) -> GenerationResult:
    completion = res.generator.generate(msg)
    return GenerationResult(**dict(msg), completion=completion)
