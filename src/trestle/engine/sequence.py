"""One request inside the engine: its prompt, sampler, detokenizer, stop rules and output.

The scheduler calls `next_input()` to learn what to feed llama.cpp, and `on_logits(row)` with
the row after the sequence's last token; `on_logits` samples, updates the text and puts an
`Output` in `outbox`. After each step the scheduler hands every outbox to its event loop in one
`loop.call_soon_threadsafe` per loop, where `deliver` (supplied by the app) receives them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from trestle.engine.decoding.detokenizer import Detokenizer
from trestle.engine.decoding.grammar import Grammar
from trestle.engine.decoding.sampler import Sampled, Sampler, SamplingParams
from trestle.engine.decoding.stops import StopMatcher
from trestle.engine.model import EngineModel


@dataclass
class TokenOut:
    token: int
    text: bytes  # the token's own bytes (for logprobs)
    logprob: float | None
    top: list[tuple[int, float]] | None


@dataclass
class Output:
    """A step's worth of result for one request."""

    text: str = ""
    tokens: list[TokenOut] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" | "length" | "error" | "cancelled"
    error: str | None = None
    prompt_tokens: int = 0  # the sequence's counts when this output was emitted
    completion_tokens: int = 0


def merge(outputs: list[Output]) -> Output:
    """Several consecutive outputs of one sequence as one (when the reader fell behind)."""
    if len(outputs) == 1:
        return outputs[0]
    last = outputs[-1]
    return replace(
        last,
        text="".join(o.text for o in outputs),
        tokens=[t for o in outputs for t in o.tokens],
    )


@dataclass
class GenerationSpec:
    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams
    stop: list[str] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    bad: list[str] = field(default_factory=list)
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    grammar: Grammar | None = None  # the output must match it (structured outputs, tool calls)


class Sequence:
    def __init__(
        self,
        spec: GenerationSpec,
        model: EngineModel,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[Output], None],
    ):
        self.spec = spec
        self.model = model
        self.loop = loop  # the asyncio loop of the waiting request
        self.deliver = deliver  # called in that loop with each Output
        self.outbox: list[Output] = []
        self.prompt = spec.prompt
        self.slot: int | None = None
        self.n_past = 0  # tokens already in the KV cache
        self.cached: list[int] = []  # those tokens
        self._feeding: list[int] = []
        # (source sequence, n): start from the source's first n cached tokens once it has them
        self.share: tuple["Sequence", int] | None = None
        self.last_token: int | None = None
        self.generated = 0
        self.cancelled = False
        self.finished = False
        info = model.info
        self.sampler = Sampler(spec.sampling, info.n_vocab, model.eog_ids, spec.prompt)
        self.detok = Detokenizer(
            lambda t, special: model.piece(t, special=special),
            model.is_control,
            skip_special_tokens=spec.skip_special_tokens,
            spaces_between_special_tokens=spec.spaces_between_special_tokens,
        )
        # Unconstrained sequences have no matcher and pay nothing for the feature.
        self.matcher = spec.grammar.matcher() if spec.grammar is not None else None
        self.stops = StopMatcher(spec.stop, include_stop_str_in_output=spec.include_stop_str_in_output)
        self._eog = frozenset(int(t) for t in model.eog_ids)
        self._stop_ids = frozenset(spec.sampling.stop_token_ids)
        self._bad = [b.encode("utf-8") for b in spec.bad if b]
        self._bad_tail = max((len(b) for b in self._bad), default=1) - 1
        self._tail = b""

    # -- what to feed ----------------------------------------------------------------------
    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.prompt)

    def next_input(self, budget: int) -> tuple[list[int], int, bool]:
        """(tokens, first position, wants logits) for this step, at most `budget` tokens.

        The prompt's last token is fed in a step of its own. llama.cpp computes a batch of 64
        tokens or more another way than a smaller one (logits differ by up to ~0.7 on SmolLM2),
        and a request whose prompt is in the prefix cache computes only that token: fed alone
        always, it gives the same logits whether the prompt was computed now or found in the
        cache, so a request sent again (streamed or not) gives the same text at temperature 0
        or with the same seed. It costs a cold prompt one more step (1.01-1.06x its time to
        first token on SmolLM2)."""
        if self.prefilling:
            last = len(self.prompt) - 1
            if self.n_past < last:
                chunk = self.prompt[self.n_past : min(self.n_past + budget, last)]
                self._feeding = chunk
                return chunk, self.n_past, False
            self._feeding = self.prompt[last:]
            return self._feeding, last, True
        self._feeding = [self.last_token]
        return self._feeding, self.n_past, True

    def advance(self) -> None:
        """The tokens handed out by `next_input` are now in the KV cache."""
        self.n_past += len(self._feeding)
        self.cached.extend(self._feeding)
        self._feeding = []

    def start_from(self, n: int) -> None:
        """The first `n` prompt tokens are already in this sequence's KV cache."""
        self.n_past = n
        self.cached = list(self.prompt[:n])

    def known_tokens(self) -> list[int]:
        """Tokens this sequence's cache holds or will hold soon (its prompt, then its output)."""
        return self.cached if len(self.cached) >= len(self.prompt) else self.prompt

    # -- after a step ----------------------------------------------------------------------
    def _accept(self, tok: int) -> bool:
        """False when `tok` would complete a bad phrase."""
        if not self._bad or self.model.is_control(tok):
            return True
        window = self._tail + self.model.piece(tok, special=False)
        return not any(b in window for b in self._bad)

    def on_logits(self, row: np.ndarray, allowed: np.ndarray | None = None) -> None:
        """Sample from `row`; `allowed` is this step's grammar mask when the sequence has one."""
        try:
            s: Sampled = self.sampler.sample(row, self._accept if self._bad else None, allowed)
        except ValueError as exc:
            self.finish("error", error=str(exc))
            return
        tok = s.token
        if self.matcher is not None and not self.matcher.consume(tok):
            self.finish("error", error=f"the grammar refused token {tok}: {self.matcher.error}")
            return
        self.sampler.observe(tok)
        self.generated += 1
        self.last_token = tok
        out = Output()
        if s.logprob is not None:
            out.tokens.append(
                TokenOut(tok, self.model.piece(tok, special=True), s.logprob, s.top)
            )
        reason = None
        if (tok in self._eog and not self.spec.sampling.ignore_eos) or tok in self._stop_ids:
            reason = "stop"
        else:
            if self._bad:  # keep just enough text to see a bad phrase completed by the next token
                tail = self._tail + self.model.piece(tok, special=False)
                self._tail = tail[max(0, len(tail) - self._bad_tail) :]
            out.text = self.stops.feed(self.detok.feed(tok))
            if self.stops.stopped is not None:
                reason = "stop"
            elif self.matcher is not None and self.matcher.stopped:
                reason = "stop"  # the grammar is complete: the output matches it
        if reason is None and (
            self.generated >= self.spec.max_tokens or self.n_past + 1 >= self.model.info.n_ctx_seq
        ):
            reason = "length"
        if reason is not None:
            if self.stops.stopped is None:
                out.text += self.stops.feed(self.detok.flush()) + self.stops.flush()
            self._finish_into(out, reason)
        self.emit(out)

    def emit(self, out: Output) -> None:
        out.prompt_tokens = len(self.prompt)  # the counts so far, on every output
        out.completion_tokens = self.generated
        self.outbox.append(out)

    def _finish_into(self, out: Output, reason: str, error: str | None = None) -> None:
        self.finished = True
        out.finish_reason = reason
        out.error = error
        out.prompt_tokens = len(self.prompt)
        out.completion_tokens = self.generated

    def finish(self, reason: str, error: str | None = None) -> None:
        """End the sequence from outside a step (error, shutdown)."""
        if self.finished:
            return
        out = Output()
        self._finish_into(out, reason, error)
        self.emit(out)
