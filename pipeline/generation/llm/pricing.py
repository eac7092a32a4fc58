"""USD cost of a completion from its token counts.

Prices come from **genai-prices** (pydantic/genai-prices), a maintained table of list prices that
ships inside the package: the version pinned in constraints.txt is the table in force, and a price
change is a dependency bump. Only the bundled data is read (``genai_prices.data``); the package's
``UpdatePrices`` (an opt-in background download) is never started, and lookups go to our own
snapshot of the bundled data, so even another library starting it in the same process does not
change our prices. Nothing is fetched at run time.

On top of the table, **overrides** (USD per 1M input / output tokens): our own models, which run
on our own hardware or are not a model at all (``fake``, ``local``, ``extractive``: 0), and
``CONVEYOR_LLM_PRICES`` (a negotiated price, a model the table lacks). A model is looked up as:

1. an override named exactly like it (or like it without a routing prefix, ``openai/gpt-4o`` ->
   ``gpt-4o``);
2. the genai-prices table: for the provider the endpoint URL names (``api.groq.com`` -> groq),
   else the provider its name implies (``gpt-4o-mini`` -> openai; ``openai/gpt-4.1`` -> openai).
   The table knows dated snapshots (``gpt-4o-mini-2024-07-18``, and ``gpt-4o-2024-05-13`` at its
   own, higher price); a dated name it does not know yet is priced as its undated model. If an
   override names the model the table resolved to (``gpt-4o`` for ``gpt-4o-2024-08-06``), the
   override wins;
3. the longest override that is a prefix of the name ending at ``-``, ``/``, ``:`` or ``@``
   (``fake-model`` -> ``fake``, ``local/llama-3`` -> ``local``); only for names the table does not
   know, so an override of ``gpt-4o`` never prices ``gpt-4o-mini``.

A model none of these knows has **no** price: ``Quote.usd`` is None (``cost_usd: null`` on the
record, the model named in ``unpriced_models``) and a warning is logged once per model per
process. Never 0: an unknown price must not look like a free call.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Price:
    """USD per one million tokens."""

    input_per_1m: float
    output_per_1m: float


@dataclass(frozen=True)
class Quote:
    """The cost of one call; ``usd`` is None when the model has no known price."""

    usd: float | None
    #: where the price came from: ``override:KEY`` or ``genai-prices:PROVIDER/MODEL``; "" if unknown.
    source: str = ""

    @property
    def known(self) -> bool:
        return self.usd is not None


#: our own models: no per-token bill. Overrides, because genai-prices lists real providers only.
OWN_PRICES: dict[str, Price] = {
    "fake": Price(0.0, 0.0),
    "local": Price(0.0, 0.0),
    "extractive": Price(0.0, 0.0),
}
#: the overrides every table starts from (the name older code imports).
DEFAULT_PRICES = OWN_PRICES

_PREFIX_ENDS = "-/:@"
#: a dated snapshot suffix: -2024-07-18, -20241022, @20241022
_DATE_SUFFIX = re.compile(r"[-@](?:\d{4}-\d{2}-\d{2}|\d{8})$")
#: lookups and warnings are remembered per model name; names come from requests, so both are bounded.
_MEMO_LIMIT = 4096

_warned: set[str] = set()
_warned_lock = threading.Lock()


@functools.cache
def catalogue() -> DataSnapshot:
    """The genai-prices table bundled with the installed package (loaded once, ~0.5 s, ~20 MB)."""
    from genai_prices.data import providers
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=providers, from_auto_update=False)


def catalogue_version() -> str:
    from importlib.metadata import version

    return version("genai-prices")


def _warn_unpriced(model: str) -> None:
    with _warned_lock:
        if model in _warned:
            return
        if len(_warned) >= _MEMO_LIMIT:
            _warned.clear()
        _warned.add(model)
    log.warning(
        "no known price for model %r (genai-prices %s, CONVEYOR_LLM_PRICES): its cost is recorded as null; "
        "set CONVEYOR_LLM_PRICES to price it",
        model,
        catalogue_version(),
    )


@dataclass(frozen=True)
class _Resolved:
    source: str
    price: Price | None = None  # an override
    entry: tuple[Any, Any] | None = None  # (genai_prices Provider, ModelInfo)


class PriceTable:
    """Overrides over the genai-prices table; see the module docstring for the lookup order.

    ``api_url`` is the endpoint's base URL: when it names a provider genai-prices knows, that
    provider's prices are used (the same open model costs differently at different hosts).
    ``use_catalogue=False`` prices from the overrides alone.
    """

    def __init__(
        self,
        overrides: Mapping[str, Price] | None = None,
        *,
        api_url: str | None = None,
        use_catalogue: bool = True,
    ) -> None:
        merged = {**OWN_PRICES, **(overrides or {})}
        self._overrides: dict[str, Price] = {k.strip().lower(): v for k, v in merged.items()}
        self.api_url = api_url
        self.use_catalogue = use_catalogue
        self._memo: dict[str, _Resolved | None] = {}
        self._api_provider: Any = None
        self._api_provider_known = False

    def warm_up(self) -> None:
        """Load the genai-prices table now rather than on the first call."""
        if self.use_catalogue:
            catalogue()

    # --- lookup ---------------------------------------------------------------------------
    def _provider_for_url(self) -> Any:
        if not self._api_provider_known:
            provider = None
            if self.api_url:
                try:
                    provider = catalogue().find_provider(None, None, self.api_url)
                except LookupError:
                    provider = None
            self._api_provider, self._api_provider_known = provider, True
        return self._api_provider

    def _from_catalogue(self, name: str) -> tuple[Any, Any] | None:
        snapshot = catalogue()
        provider = self._provider_for_url()
        refs = [name]
        if _DATE_SUFFIX.search(name):
            refs.append(_DATE_SUFFIX.sub("", name))
        for ref in refs:
            if provider is not None:
                model = provider.find_model(ref, all_providers=snapshot.providers)
                if model is not None:
                    return provider, model
                continue  # the endpoint names its provider: no other provider's price is a guess worth making
            attempts: list[tuple[str | None, str]] = [(None, ref)]
            if "/" in ref:
                head, tail = ref.split("/", 1)
                attempts += [(head, tail), (None, ref.rsplit("/", 1)[-1])]
            for provider_id, model_ref in attempts:
                try:
                    return snapshot.find_provider_model(model_ref, None, provider_id, None)
                except LookupError:
                    continue
        return None

    def _resolve(self, model: str) -> _Resolved | None:
        name = model.strip().lower()
        bare = name.rsplit("/", 1)[-1]
        for candidate in (name, bare):
            if candidate in self._overrides:
                return _Resolved(f"override:{candidate}", price=self._overrides[candidate])
        if self.use_catalogue and name:
            found = self._from_catalogue(name)
            if found is not None:
                provider, info = found
                canonical = str(info.id).lower()
                if canonical in self._overrides:
                    return _Resolved(f"override:{canonical}", price=self._overrides[canonical])
                return _Resolved(f"genai-prices:{provider.id}/{info.id}", entry=found)
        best: str | None = None
        for key in self._overrides:
            for candidate in (name, bare):
                if (
                    candidate.startswith(key)
                    and len(candidate) > len(key)
                    and candidate[len(key)] in _PREFIX_ENDS
                    and (best is None or len(key) > len(best))
                ):
                    best = key
        return _Resolved(f"override:{best}", price=self._overrides[best]) if best is not None else None

    def resolve(self, model: str) -> _Resolved | None:
        if model in self._memo:
            return self._memo[model]
        found = self._resolve(model)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[model] = found
        return found

    # --- answers --------------------------------------------------------------------------
    def known(self, model: str) -> bool:
        return self.resolve(model) is not None

    def source(self, model: str) -> str | None:
        """Where ``model``'s price comes from, or None if it has none."""
        found = self.resolve(model)
        return found.source if found is not None else None

    def quote(self, model: str, prompt_tokens: int, completion_tokens: int) -> Quote:
        found = self.resolve(model)
        if found is None:
            _warn_unpriced(model)
            return Quote(None)
        if found.price is not None:
            usd = (prompt_tokens * found.price.input_per_1m + completion_tokens * found.price.output_per_1m) / 1e6
            return Quote(usd, found.source)
        from genai_prices import Usage

        assert found.entry is not None
        provider, info = found.entry
        calc = info.calc_price(Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens), provider)
        return Quote(float(calc.total_price), found.source)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for one call; None for a model with no known price."""
        return self.quote(model, prompt_tokens, completion_tokens).usd


def cost(model: str, prompt_tokens: int, completion_tokens: int, table: PriceTable | None = None) -> float | None:
    """USD for one call using ``table`` or the defaults; None for a model with no known price."""
    return (table or PriceTable()).cost(model, prompt_tokens, completion_tokens)


# --- adding costs up ----------------------------------------------------------------------
def add_cost(total: float | None, more: float | None) -> float | None:
    """Sum of two costs; unknown (None) if either is: an unpriced call makes the total unknown."""
    return None if total is None or more is None else total + more


def merge_models(*groups: object) -> list[str]:
    """The model names of ``groups`` (lists/tuples of str; anything else ignored), once each, in order."""
    seen: list[str] = []
    for group in groups:
        if isinstance(group, list | tuple):
            seen += [m for m in group if isinstance(m, str) and m not in seen]
    return seen
