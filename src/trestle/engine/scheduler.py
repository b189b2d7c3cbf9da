"""Continuous batching: one engine thread, one llama.cpp batch per step, many sequences.

Each step:
1. drop cancelled sequences and admit waiting ones into free slots (one llama.cpp `seq_id` per
   slot), reusing cached prompt prefixes (below);
2. build one batch: a token for every decoding sequence, then prompt chunks of prefilling
   sequences while the step has room (`n_batch` tokens) - prefill and decode share the step;
3. `llama_decode`, then each sequence that produced logits samples its next token; the step's
   outputs go to asyncio in one `loop.call_soon_threadsafe` per event loop. Sequences with a
   grammar (structured outputs, tool calls) get their token masks filled together just before
   `llama_decode` (llguidance's batch fill); sequences without one skip all of it;
4. finished sequences leave and free their slot.

Prefix cache: a free slot keeps the KV cache of the sequence that last used it. A new request
starts from the longest prefix it shares (at least `MIN_SHARED` tokens, at most its prompt
less one) with a free slot's cache (trimmed in place) or with an active sequence (copied into
the new slot; if that sequence is still prefilling, the new one waits until the shared part is
computed). Requests with a common system prompt prefill only what differs.

`submit` never blocks: a request takes a free slot at the next step, or waits in a queue of
`max_queue`; with every slot spoken for and the queue full it is refused with
`TooManyRequests` (429). Requests submitted but not yet placed count against the free slots
first, so `max_batch + max_queue` requests can be in at once.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from trestle.engine.model import EngineModel
from trestle.engine.sequence import Sequence
from trestle.errors import TooManyRequests

log = logging.getLogger(__name__)

# Most prompt tokens one step feeds per sequence: long prompts are chunked so that decoding
# sequences keep moving while a new one is prefilled.
PREFILL_CHUNK = 256
# Shorter shared prefixes are recomputed rather than copied.
MIN_SHARED = 8


def _deliver_all(items) -> None:
    for deliver, outputs in items:
        for out in outputs:
            deliver(out)


def flush(seqs) -> None:
    """Hand the sequences' pending outputs to their event loops, one wake-up per loop."""
    by_loop: dict = {}
    for seq in seqs:
        if seq.outbox:
            by_loop.setdefault(seq.loop, []).append((seq.deliver, seq.outbox))
            seq.outbox = []
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_deliver_all, items)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Scheduler:
    def __init__(self, model: EngineModel, *, max_batch: int, max_queue: int):
        self.model = model
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._cond = threading.Condition()
        self._waiting: deque[Sequence] = deque()
        self._active: list[Sequence] = []
        self._free_slots = list(range(max_batch - 1, -1, -1))
        self._slot_cache: dict[int, list[int]] = {}  # free slot -> tokens its KV cache holds
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="trestle-engine", daemon=True)
        self.steps = 0
        self.cancelled = 0  # sequences dropped because their client went away
        self.generated = 0  # tokens sampled (one per decode of a sequence that wanted one)
        self.reused_tokens = 0  # prompt tokens not recomputed thanks to the prefix cache
        self.shared_tokens = 0  # the part of those copied from a sequence that was running
        self._masks = None  # MaskBatch, made at the first constrained step

    # -- called from asyncio ---------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> bool:
        """Stop the engine thread; True once it has ended (then the model may be closed)."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)
        return not self._thread.is_alive()

    def submit(self, seq: Sequence) -> None:
        with self._cond:
            # waiting requests take the free slots at the next step; only the rest queue
            if len(self._waiting) >= len(self._free_slots) + self.max_queue:
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
                "generated_tokens": self.generated,
                "reused_prompt_tokens": self.reused_tokens,
                "shared_prompt_tokens": self.shared_tokens,
            }

    # -- the engine thread -----------------------------------------------------------------
    def _release(self, seq: Sequence, *, keep_cache: bool = True) -> None:
        self._active.remove(seq)
        if seq.slot is not None:
            if keep_cache and seq.cached:
                self._slot_cache[seq.slot] = seq.cached
            else:
                self.model.remove_sequence(seq.slot)
                self._slot_cache.pop(seq.slot, None)
            self._free_slots.append(seq.slot)
            seq.slot = None

    def _place(self, seq: Sequence) -> None:
        """Give `seq` a slot, starting from the longest cached prefix it can use."""
        limit = len(seq.prompt) - 1  # the last prompt token must run to give logits
        best_slot, best_n = None, 0
        for slot in self._free_slots:
            n = min(common_prefix(self._slot_cache.get(slot, []), seq.prompt), limit)
            if n > best_n:
                best_slot, best_n = slot, n
        source, source_n = None, 0
        for other in self._active:
            if other.slot is None or other.cancelled:
                continue
            n = min(common_prefix(other.known_tokens(), seq.prompt), limit)
            if n > source_n:
                source, source_n = other, n
        if best_slot is not None and best_n >= MIN_SHARED and best_n >= source_n:
            self._free_slots.remove(best_slot)
            seq.slot = best_slot
            self._slot_cache.pop(best_slot)
            self.model.keep_prefix(best_slot, best_n)
            seq.start_from(best_n)
            self.reused_tokens += best_n
        else:
            # prefer a slot whose cache is worth least (none, or the shortest)
            slot = min(self._free_slots, key=lambda s: len(self._slot_cache.get(s, [])))
            self._free_slots.remove(slot)
            seq.slot = slot
            if self._slot_cache.pop(slot, None) is not None:
                self.model.remove_sequence(slot)
            if source is not None and source_n >= MIN_SHARED:
                seq.share = (source, source_n)
        self._active.append(seq)

    def _resolve_shares(self) -> None:
        for seq in self._active:
            if seq.share is None:
                continue
            source, n = seq.share
            if source.slot is None or source.cancelled or source not in self._active:
                seq.share = None  # the source left before sharing: compute the prompt
            elif source.n_past >= n:
                self.model.copy_prefix(source.slot, seq.slot, n)
                seq.start_from(n)
                seq.share = None
                self.reused_tokens += n
                self.shared_tokens += n

    def _admit(self) -> list[Sequence]:
        with self._cond:
            while not self._stop and not self._active and not self._waiting:
                self._cond.wait()
            if self._stop:
                return []
            for seq in [s for s in self._active if s.cancelled]:
                self._release(seq)
            while self._waiting and self._free_slots:
                self._place(self._waiting.popleft())
            self._resolve_shares()
            return [s for s in self._active if s.share is None]

    def _fill_masks(self, items) -> None:
        """Fill the token masks of this step's constrained sequences, all together."""
        if self._masks is None:
            from trestle.engine.decoding.grammar import Grammars, MaskBatch

            self._masks = MaskBatch(Grammars.of(self.model), rows=self.max_batch)
        self._masks.fill(items)

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
                left = list(self._active) + list(self._waiting)
                for seq in left:
                    seq.finish("error", error="the engine is shutting down")
                flush(left)
                self._active.clear()
                self._waiting.clear()

    def _step(self, active: list[Sequence]) -> None:
        budget = self.model.n_batch
        work = []
        fed: list[tuple[Sequence, bool]] = []
        # Decoding sequences first: one token each, so they never starve behind a prefill.
        for seq in sorted(active, key=lambda s: s.prefilling):
            if budget <= 0:
                break
            tokens, pos, want = seq.next_input(min(budget, PREFILL_CHUNK))
            work.append((seq.slot, tokens, pos, want))
            fed.append((seq, want))
            budget -= len(tokens)
        constrained = [
            (seq.matcher, seq.slot) for seq, want in fed
            if want and seq.matcher is not None and not seq.cancelled
        ]
        try:
            if constrained:
                self._fill_masks(constrained)
            rows = self.model.decode(work)
        except Exception as exc:  # one place frees everything the step held
            log.exception("engine step failed")
            with self._cond:
                for seq, _ in fed:
                    seq.finish("error", error=f"engine step failed: {exc}")
                    self._release(seq, keep_cache=False)
            flush(seq for seq, _ in fed)
            return
        self.steps += 1
        done = []
        for seq, want in fed:
            seq.advance()
            if want and not seq.cancelled:
                allowed = self._masks.allowed(seq.slot) if seq.matcher is not None else None
                seq.on_logits(rows[seq.slot], allowed)
                self.generated += 1
            if seq.finished or seq.cancelled:
                done.append(seq)
        flush(seq for seq, _ in fed)
        if done:
            with self._cond:
                for seq in done:
                    self._release(seq)
