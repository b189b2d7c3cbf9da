"""What a call costs: tokens × the model's price, prices being per 1M tokens.

    costs = Costs.of(price, model, prompt_tokens=23, completion_tokens=16)
    costs.prompt, costs.completion      # 23 * price.prompt / 1e6, 16 * price.completion / 1e6
    costs.note                          # None, or why both are 0 (no price is set for the model)

Prices are set per model name as the endpoint names it (`trestle prices set MODEL`).
"""

from __future__ import annotations

from dataclasses import dataclass

from trestle.store.records import Price

PER_TOKENS = 1_000_000


@dataclass(frozen=True)
class Costs:
    prompt: float
    completion: float
    note: str | None = None

    @classmethod
    def of(cls, price: Price | None, model: str, *, prompt_tokens: int,
           completion_tokens: int) -> "Costs":
        if price is None:
            return cls(0.0, 0.0, f"no price is set for model {model!r}: costs are 0 "
                                 f"(set one with `trestle prices set {model} --prompt X --completion Y`)")
        return cls(prompt_tokens * price.prompt / PER_TOKENS,
                   completion_tokens * price.completion / PER_TOKENS)
