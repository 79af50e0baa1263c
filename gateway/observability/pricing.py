"""What answers cost: a price table (US dollars per million tokens) applied to usage.

Prices are looked up by the model the upstream was asked for (a deployment's model,
``gpt-4o-2024-08-06``), then by the public model that answered. A model without a
price has no cost — ``None``, not zero — so that an unpriced model is never mistaken
for a free one.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from ..core.outcome import Outcome


class Price(msgspec.Struct, frozen=True):
    """US dollars per million tokens. Cached input tokens (read from a provider's prompt
    cache) and cache writes cost ``input`` unless priced on their own."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


class Prices:
    def __init__(self, table: Mapping[str, Price] | None = None) -> None:
        self.table = dict(table or {})

    def __bool__(self) -> bool:
        return bool(self.table)

    def price_of(self, outcome: Outcome) -> Price | None:
        table = self.table
        for name in (outcome.upstream_model, outcome.fallback, outcome.model):
            if name is not None and (price := table.get(name)) is not None:
                return price
        return None

    def cost(self, outcome: Outcome) -> float | None:
        """The cost of the outcome's usage, or ``None`` when there is no usage or price."""
        usage = outcome.usage
        if usage is None:
            return None
        price = self.price_of(outcome)
        if price is None:
            return None
        cached, written = usage.cached_tokens, usage.cache_write_tokens
        plain = max(0, usage.prompt_tokens - cached - written)
        dollars = (
            plain * price.input
            + cached * (price.input if price.cached_input is None else price.cached_input)
            + written * (price.input if price.cache_write is None else price.cache_write)
            + usage.completion_tokens * price.output
        )
        return dollars / 1_000_000
