"""Choosing the next token from one logits row, in numpy, per sequence.

Order of operations on a copy of the row (the vLLM order):
1. masks: `logit_bias` (added), `bad_token_ids`, end tokens while `ignore_eos` or before
   `min_tokens` (also `stop_token_ids` then), tokens the sequence's grammar does not allow
   (`allowed`, from trestle.engine.decoding.grammar) and any token rejected by the caller's `accept`
   check (bad phrases) -> -inf;
2. penalties: `repetition_penalty` (multiplicative over prompt + output tokens: a positive
   logit is divided, a negative one multiplied), then `frequency_penalty` x count and
   `presence_penalty` (OpenAI, additive over output tokens);
3. `temperature == 0` -> argmax; else divide by temperature, keep `top_k` (argpartition),
   softmax over the candidates only, `min_p` (relative to the best), nucleus `top_p`, draw one
   with the request's own `numpy.random.Generator` (seeded by `seed`).

Dynamic top_p (`top_p_min`, the TensorRT-LLM idea): when `top_p_min > 0` the nucleus shrinks
by a factor of `TOP_P_DECAY` per generated token, `p_t = max(top_p_min, top_p * 0.9**t)`, so a
generation starts diverse and becomes more focused, never below `top_p_min`.

Log probabilities are those of the model (log-softmax of the raw row), as OpenAI and vLLM
report them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

TOP_P_DECAY = 0.9
# Without top_k, a nucleus is looked for among this many best tokens before sorting them all.
NUCLEUS_PREFILTER = 1024
_NEG_INF = np.float32(-np.inf)


def _most_likely_first(probs: np.ndarray, mass: float) -> np.ndarray:
    """Indices of `probs`, most likely first: all of them, or a prefix that holds `mass`."""
    if probs.size > 2 * NUCLEUS_PREFILTER:
        part = np.argpartition(probs, -NUCLEUS_PREFILTER)[-NUCLEUS_PREFILTER:]
        if probs[part].sum(dtype=np.float64) >= mass:
            return part[np.argsort(-probs[part], kind="stable")]
    return np.argsort(-probs, kind="stable")


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50  # -1 or 0: off
    min_p: float = 0.0
    top_p_min: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    bad_token_ids: list[int] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    min_tokens: int = 0
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass
class Sampled:
    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None  # (token, logprob), best first


class Sampler:
    def __init__(self, params: SamplingParams, n_vocab: int, eog_ids: np.ndarray, prompt: list[int]):
        self.p = params
        self.n_vocab = n_vocab
        # numpy wants a non-negative seed; the API allows any int64, so map it onto 0..2**64-1
        self.rng = np.random.default_rng(None if params.seed is None else params.seed % 2**64)
        # Fixed per-request changes, kept sparse: token -> bias (-inf masks win).
        static: dict[int, float] = {}
        for tok, bias in params.logit_bias.items():
            static[int(tok)] = static.get(int(tok), 0.0) + bias
        masked = list(params.bad_token_ids) + (list(eog_ids) if params.ignore_eos else [])
        for tok in masked:
            static[int(tok)] = -np.inf
        self._static_idx = np.fromiter(static.keys(), dtype=np.int64, count=len(static))
        self._static_val = np.fromiter(static.values(), dtype=np.float32, count=len(static))
        ends = [int(t) for t in eog_ids] + list(params.stop_token_ids)
        self._ends = np.asarray(ends, dtype=np.int64)
        # Tokens the penalties look at, as index arrays (rebuilt only when a new token appears).
        self._counts: dict[int, int] | None = (
            {} if params.frequency_penalty or params.presence_penalty else None
        )
        self._count_idx = np.zeros(0, dtype=np.int64)
        self._count_val = np.zeros(0, dtype=np.float32)
        self._seen: set[int] | None = None
        if params.repetition_penalty != 1.0:
            self._seen = set(int(t) for t in prompt)
            self._seen_idx = np.fromiter(self._seen, dtype=np.int64, count=len(self._seen))
        self.generated = 0

    def observe(self, token: int) -> None:
        """Record a token that was emitted (feeds the penalties)."""
        self.generated += 1
        if self._counts is not None:
            self._counts[token] = self._counts.get(token, 0) + 1
            self._count_idx = np.fromiter(self._counts.keys(), dtype=np.int64, count=len(self._counts))
            self._count_val = np.fromiter(self._counts.values(), dtype=np.float32, count=len(self._counts))
        if self._seen is not None and token not in self._seen:
            self._seen.add(token)
            self._seen_idx = np.append(self._seen_idx, token)

    def _process(self, x: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """Apply masks and penalties to `x` in place (the caller's own copy of the row)."""
        p = self.p
        if self._static_idx.size:
            x[self._static_idx] += self._static_val
        if allowed is not None:
            np.putmask(x, allowed == 0, _NEG_INF)
        if self.generated < p.min_tokens and self._ends.size:
            x[self._ends] = _NEG_INF
        if self._seen is not None and self._seen_idx.size:
            i = self._seen_idx
            v = x[i]
            x[i] = np.where(v > 0, v / p.repetition_penalty, v * p.repetition_penalty)
        if self._counts is not None and self._count_idx.size:
            x[self._count_idx] -= self._count_val * p.frequency_penalty + np.float32(p.presence_penalty)
        return x

    def _top_p_now(self) -> float:
        p = self.p
        if p.top_p_min > 0:
            return min(p.top_p, max(p.top_p_min, p.top_p * TOP_P_DECAY**self.generated))
        return p.top_p

    def _draw(self, x: np.ndarray) -> int:
        p = self.p
        if p.temperature == 0:
            return int(np.argmax(x))
        k = p.top_k
        idx = np.argpartition(x, -k)[-k:] if 0 < k < x.size else None
        cand = x if idx is None else x[idx]
        # unnormalised probabilities over the candidates only; the best one is exactly 1
        probs = np.exp((cand - cand.max()) / np.float32(p.temperature))  # float32: sums in float64
        if p.min_p > 0:
            probs[probs < p.min_p] = 0.0
        top_p = self._top_p_now()
        if top_p < 1.0:
            mass = top_p * probs.sum(dtype=np.float64)
            order = _most_likely_first(probs, mass)
            idx = order if idx is None else idx[order]
            probs = probs[order]
            csum = np.cumsum(probs, dtype=np.float64)
            cut = int(np.searchsorted(csum, mass)) + 1  # the smallest set reaching top_p
            probs = probs[:cut]
        csum = np.cumsum(probs, dtype=np.float64)
        j = int(np.searchsorted(csum, self.rng.random() * csum[-1], side="right"))
        j = min(j, probs.size - 1)
        while j > 0 and probs[j] == 0:  # never land on a filtered-out candidate
            j -= 1
        return int(j if idx is None else idx[j])

    def sample(
        self,
        row: np.ndarray,
        accept: Callable[[int], bool] | None = None,
        allowed: np.ndarray | None = None,
    ) -> Sampled:
        """The next token. `row` (float32) may be changed in place: pass a copy you own.
        `allowed` (0/1 per token) is a grammar's mask; logprobs stay those of the raw row."""
        raw = row.copy() if self.p.logprobs else None
        x = self._process(row, allowed)
        while True:
            if not np.isfinite(x.max()):  # everything is masked: nothing left to draw from
                raise ValueError("every token is excluded by the request's constraints")
            tok = self._draw(x)
            if accept is None or accept(tok):
                break
            x[tok] = _NEG_INF
        out = Sampled(tok)
        if raw is not None:
            r = raw.astype(np.float64)
            m = r.max()
            lse = m + np.log(np.exp(r - m).sum())
            out.logprob = float(r[tok] - lse)
            n = self.p.top_logprobs
            if n:
                best = np.argpartition(r, -n)[-n:]
                best = best[np.argsort(-r[best], kind="stable")]
                out.top = [(int(t), float(r[t] - lse)) for t in best]
        return out
