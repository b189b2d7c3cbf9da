"""Continuous batching: one engine thread, one llama.cpp batch per step, many sequences.

Each step:
1. drop cancelled sequences (their KV cache is removed at once) and admit waiting ones into
   free slots (one llama.cpp `seq_id` per slot);
2. build one batch: a token for every decoding sequence, then prompt chunks of prefilling
   sequences while the step has room (`n_batch` tokens) - prefill and decode share the step;
3. `llama_decode`, then each sequence that produced logits samples its next token and sends
   its output to asyncio (the sequence's `emit` uses `loop.call_soon_threadsafe`);
4. finished sequences leave and free their slot.

`submit` never blocks: with every slot busy a request waits in a queue of `max_queue`; past
that it is refused with `TooManyRequests` (429).
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from trestle.engine.sequence import Sequence
from trestle.errors import TooManyRequests

log = logging.getLogger(__name__)

# Most prompt tokens one step feeds per sequence: long prompts are chunked so that decoding
# sequences keep moving while a new one is prefilled.
PREFILL_CHUNK = 256


class Scheduler:
    def __init__(self, model, *, max_batch: int, max_queue: int):
        self.model = model
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._cond = threading.Condition()
        self._waiting: deque[Sequence] = deque()
        self._active: list[Sequence] = []
        self._free_slots = list(range(max_batch - 1, -1, -1))
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="trestle-engine", daemon=True)
        self.steps = 0
        self.cancelled = 0  # sequences dropped because their client went away

    # -- called from asyncio ---------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def submit(self, seq: Sequence) -> None:
        with self._cond:
            busy = len(self._active) + len(self._waiting)
            if busy >= self.max_batch and len(self._waiting) >= self.max_queue:
                raise TooManyRequests(
                    f"the engine is busy: all {self.max_batch} sequences are decoding and the "
                    f"queue of {self.max_queue} waiting requests is full; retry later",
                    code="queue_full",
                )
            self._waiting.append(seq)
            self._cond.notify()

    def cancel(self, seq: Sequence) -> None:
        """The client went away: free the sequence at the next step."""
        with self._cond:
            if seq.finished or seq.cancelled:
                return
            seq.cancelled = True
            self.cancelled += 1
            if seq in self._waiting:
                self._waiting.remove(seq)
                seq.finished = True
            self._cond.notify()

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "active_sequences": len(self._active),
                "waiting_requests": len(self._waiting),
                "max_batch": self.max_batch,
                "max_queue": self.max_queue,
                "cancelled_sequences": self.cancelled,
            }

    # -- the engine thread -----------------------------------------------------------------
    def _release(self, seq: Sequence) -> None:
        self._active.remove(seq)
        if seq.slot is not None:
            self.model.remove_sequence(seq.slot)
            self._free_slots.append(seq.slot)
            seq.slot = None

    def _admit(self) -> list[Sequence]:
        with self._cond:
            while not self._stop and not self._active and not self._waiting:
                self._cond.wait()
            if self._stop:
                return []
            for seq in [s for s in self._active if s.cancelled]:
                self._release(seq)
            while self._waiting and self._free_slots:
                seq = self._waiting.popleft()
                seq.slot = self._free_slots.pop()
                self._active.append(seq)
            return list(self._active)

    def _run(self) -> None:
        try:
            while True:
                active = self._admit()
                if self._stop:
                    break
                if active:
                    self._step(active)
        finally:
            with self._cond:
                for seq in list(self._active) + list(self._waiting):
                    seq.finish("error", error="the engine is shutting down")
                self._active.clear()
                self._waiting.clear()

    def _step(self, active: list[Sequence]) -> None:
        budget = self.model.n_batch
        work = []
        fed: list[tuple[Sequence, int, bool]] = []
        # Decoding sequences first: one token each, so they never starve behind a prefill.
        for seq in sorted(active, key=lambda s: s.prefilling):
            if budget <= 0:
                break
            tokens, pos, want = seq.next_input(min(budget, PREFILL_CHUNK))
            work.append((seq.slot, tokens, pos, want))
            fed.append((seq, len(tokens), want))
            budget -= len(tokens)
        try:
            rows = self.model.decode(work)
        except Exception as exc:  # one place frees everything the step held
            log.exception("engine step failed")
            with self._cond:
                for seq, _, _ in fed:
                    seq.finish("error", error=f"engine step failed: {exc}")
                    self._release(seq)
            return
        self.steps += 1
        done = []
        for seq, n, want in fed:
            seq.advance(n)
            if want and not seq.cancelled:
                seq.on_logits(rows[seq.slot])
            if seq.finished or seq.cancelled:
                done.append(seq)
        if done:
            with self._cond:
                for seq in done:
                    self._release(seq)
