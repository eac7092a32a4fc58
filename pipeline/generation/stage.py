"""Stage 3: the completion. A ``Generator`` is either the offline extractive one or an LLM."""

from __future__ import annotations

from typing import Protocol

from schemas import Completion, GenerationResult, RetrievalResult


class Generator(Protocol):
    def generate(self, msg: RetrievalResult) -> Completion: ...


class GenerateStage:
    """Ask the generator for a completion of the retrieved context."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator

    def warm_up(self) -> None:
        warm = getattr(self.generator, "warm_up", None)
        if callable(warm):
            warm()

    def __call__(self, msg: RetrievalResult) -> GenerationResult:
        return msg.carry(GenerationResult, completion=self.generator.generate(msg))
