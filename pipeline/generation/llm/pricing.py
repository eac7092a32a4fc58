"""USD cost of a completion from its token counts.

Prices drift: the table below is list prices at the time of writing, and no setting
overrides it (a price change is a code change, reviewed like one). A model missing from
the table costs 0 and is *flagged* (``Quote.known`` is False) rather than guessed, so the
record shows "unpriced" instead of a wrong number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """USD per one million tokens."""

    input_per_1m: float
    output_per_1m: float


@dataclass(frozen=True)
class Quote:
    usd: float
    known: bool


#: list prices (USD / 1M tokens) at the time of writing.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-3-5-sonnet": Price(3.00, 15.00),
    "claude-3-haiku": Price(0.25, 1.25),
    # local / test models run on our own hardware: no per-token bill.
    "fake": Price(0.0, 0.0),
    "local": Price(0.0, 0.0),
    "extractive": Price(0.0, 0.0),
}


class PriceTable:
    """Looks a model up exactly, then by its longest priced prefix.

    Prefix matching covers dated snapshots (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``)
    and routed names (``openai/gpt-4o``); the prefix must end at a ``-``, ``/``, ``:``
    or ``@`` so that ``gpt-4o`` never prices ``gpt-4o-mini``'s unknown cousins wrongly.
    """

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices: dict[str, Price] = {k.lower(): v for k, v in (prices or DEFAULT_PRICES).items()}

    def price(self, model: str) -> Price | None:
        name = model.lower()
        candidates = (name, name.rsplit("/", 1)[-1])
        for candidate in candidates:
            if candidate in self._prices:
                return self._prices[candidate]
        best: str | None = None
        for key in self._prices:
            for candidate in candidates:
                if (
                    candidate.startswith(key)
                    and len(candidate) > len(key)
                    and candidate[len(key)] in "-/:@"
                    and (best is None or len(key) > len(best))
                ):
                    best = key
        return self._prices[best] if best is not None else None

    def known(self, model: str) -> bool:
        return self.price(model) is not None

    def quote(self, model: str, prompt_tokens: int, completion_tokens: int) -> Quote:
        price = self.price(model)
        if price is None:
            return Quote(0.0, False)
        usd = (prompt_tokens * price.input_per_1m + completion_tokens * price.output_per_1m) / 1_000_000
        return Quote(usd, True)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one call; 0.0 for an unpriced model (see ``known``/``quote`` for the flag)."""
        return self.quote(model, prompt_tokens, completion_tokens).usd


def cost(model: str, prompt_tokens: int, completion_tokens: int, table: PriceTable | None = None) -> float:
    """USD for one call using ``table`` or the defaults."""
    return (table or PriceTable()).cost(model, prompt_tokens, completion_tokens)
