"""A deployment's replicas: balancing, restarts and autoscaling, whatever runs them.

    replicas = ReplicaSet(spec, launch, on_failed=...)
    await replicas.start()                       # min_replicas (at least one) ready, or ReadinessError
    upstream = await replicas.send(method, path, headers, body)   # as `Replica.send`
    replicas.rescale(scaling)                    # new min/max/target/delay, applied at once
    replicas.describe()                          # each replica's state, for the management API
    await replicas.close()

A backend gives `launch(index)`, which starts one replica and returns once it is ready (a
`Launched`: its `Replica`, `exited()` that returns why it ended, `stop()`); everything else is
here, so that every backend inherits it:

- **Balancing.** `send` picks the ready replica with the fewest requests in flight (a scan of the
  ready list: O(replicas), no lock) and counts the request until its answer is closed.
- **Waiting.** With no ready replica (scaled to zero, every replica restarting, the first one
  still starting), a request waits for one up to `scaling.cold_start_timeout`, then gets a 503
  that says why; it never hangs and is never a 404. The time it waited is observed in the
  gateway's `trestle_queue_wait_seconds` (when the backend gives its `Metrics`).
- **Restarts.** A replica that dies leaves the rotation at once; its in-flight requests fail at
  once (their connection breaks: 502) while the other replicas keep serving. It is restarted
  after a backoff that doubles at each crash (`RESTART_BACKOFF_S` up to `MAX_BACKOFF_S`).
  `CRASH_LIMIT` crashes within `CRASH_WINDOW_S` mark the deployment failed (`on_failed`, with
  the last lines of its log) and stop it instead of restarting forever.
- **Autoscaling.** More replicas start when the requests in flight (and waiting) exceed
  `target_concurrency` per replica, up to `max_replicas`; replicas above what the load needs are
  stopped after `scale_down_delay` seconds of lower load, down to `min_replicas` (0: none until
  the next request). A replica leaving is drained: out of the rotation first, stopped once its
  in-flight requests and streams have finished, or after `drain_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from trestle.deploy.backend import DeploymentSpec, ReadinessError
from trestle.deploy.config import ScalingConfig
from trestle.deploy.transport import Headers, Replica, Upstream
from trestle.errors import Unavailable
from trestle.metrics import Metrics

log = logging.getLogger("trestle.deploy")

RESTART_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
CRASH_LIMIT = 5
CRASH_WINDOW_S = 300.0
AUTOSCALE_INTERVAL_S = 1.0


class Launched(Protocol):
    """One replica, started and ready."""

    replica: Replica
    pid: int | None

    async def exited(self) -> str:
        """Wait until the replica ends on its own; say how (e.g. `exit code -9`)."""

    async def stop(self) -> None:
        """Stop it (idempotent)."""


Launch = Callable[[int], Awaitable[Launched]]


class State(str, enum.Enum):
    STARTING = "starting"  # launching (first start, scale-up, or restart after a crash)
    READY = "ready"  # in the rotation
    BACKOFF = "backoff"  # crashed; waiting before its restart
    DRAINING = "draining"  # out of the rotation, finishing its in-flight requests
    STOPPED = "stopped"


@dataclass(eq=False)
class Slot:
    """A place for one replica: the replica itself comes and goes (crashes, restarts)."""

    index: int
    state: State = State.STARTING
    inflight: int = 0
    launched: Launched | None = None
    restarts: int = 0
    last_exit: str | None = None
    ready_since: float | None = None
    task: asyncio.Task | None = None  # its supervisor (`ReplicaSet._supervise`)
    drain_task: asyncio.Task | None = None
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def describe(self) -> dict:
        return {"index": self.index, "state": self.state.value, "in_flight": self.inflight,
                "pid": self.launched.pid if self.launched is not None else None,
                "restarts": self.restarts, "last_exit": self.last_exit}


class ReplicaSet:
    def __init__(self, spec: DeploymentSpec, launch: Launch, *,
                 on_failed: Callable[[str], object] | None = None,
                 log_tail: Callable[[], str] = lambda: "",
                 metrics: Metrics | None = None):
        self.deployment_id = spec.deployment_id
        self.model_id = spec.model_id
        self._metrics = metrics
        self.home = spec.home
        self.scaling: ScalingConfig = spec.scaling
        self._launch = launch
        self._on_failed = on_failed
        self._log_tail = log_tail
        self._name = f"deployment {spec.deployment_id}"
        self.slots: list[Slot] = []
        self.ready: list[Slot] = []  # the rotation (the hot path scans it)
        self.inflight = 0
        self.waiting = 0
        self.failed: str | None = None
        self._indexes = itertools.count()
        self._crashes: deque[float] = deque()
        self._has_ready = asyncio.Event()
        self._wake = asyncio.Event()  # the autoscaler looks now rather than at its next tick
        self._settle = False  # scale down to the minimum as soon as idle (no delay), once
        self._autoscaler: asyncio.Task | None = None
        self._failing: asyncio.Task | None = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start `min_replicas` replicas (at least one: a push proves its model loads) and return
        once they are ready; raise `ReadinessError` if one cannot be, stopping the others."""
        slots = [self._new_slot() for _ in range(max(self.scaling.min_replicas, 1))]
        results = await asyncio.gather(*(self._launch(s.index) for s in slots), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await asyncio.gather(*(r.stop() for r in results if not isinstance(r, BaseException)))
            self.slots.clear()
            raise errors[0]
        for slot, launched in zip(slots, results):
            self._in_rotation(slot, launched)
            slot.task = asyncio.create_task(self._supervise(slot, launched))
        self._autoscaler = asyncio.create_task(self._autoscale())

    async def close(self) -> None:
        self._closed = True
        if self._autoscaler is not None:
            self._autoscaler.cancel()
        await asyncio.gather(*(self._stop_slot(s) for s in list(self.slots)))
        self._has_ready.set()  # waiters see `_closed`

    def rescale(self, scaling: ScalingConfig) -> None:
        self.scaling = scaling
        self._wake.set()

    def settle(self) -> None:
        """Scale down to the minimum once idle, without waiting for `scale_down_delay` (the
        deployment lost its environments: nothing new should come)."""
        self._settle = True
        self._wake.set()

    # -- the hot path --------------------------------------------------------------------------
    async def send(self, method: str, path: str, headers: Headers, body: bytes) -> Upstream:
        ready = self.ready
        if len(ready) == 1:
            slot = ready[0]
        elif ready:
            slot = ready[0]
            for other in ready:
                if other.inflight < slot.inflight:
                    slot = other
        else:
            slot = await self._wait_for_replica()
        slot.inflight += 1
        self.inflight += 1
        if slot.inflight > self.scaling.target_concurrency:  # the least busy is over: scale up
            self._wake.set()
        try:
            upstream = await slot.launched.replica.send(method, path, headers, body)
        except Unavailable:
            # Nothing was sent (the replica has just died, or is being stopped): another ready
            # replica can take it.
            self._done(slot)
            others = [s for s in self.ready if s is not slot]
            if not others:
                raise
            slot = min(others, key=lambda s: s.inflight)
            slot.inflight += 1
            self.inflight += 1
            try:
                upstream = await slot.launched.replica.send(method, path, headers, body)
            except BaseException:
                self._done(slot)
                raise
        except BaseException:
            self._done(slot)
            raise
        release = upstream.release
        counted = [slot]

        def done() -> None:
            if counted:
                self._done(counted.pop())
            release()

        upstream.release = done
        return upstream

    def _done(self, slot: Slot) -> None:
        slot.inflight -= 1
        self.inflight -= 1
        if slot.inflight == 0 and slot.state is State.DRAINING:
            slot.drained.set()

    async def _wait_for_replica(self) -> Slot:
        timeout = self.scaling.cold_start_timeout
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout
        self.waiting += 1
        self._wake.set()  # scale from zero if need be
        try:
            while True:
                if self.failed is not None:
                    raise Unavailable(f"{self._name} failed: {self.failed}", code="failed")
                if self._closed:
                    raise Unavailable(f"{self._name} is stopped", code="no_replica")
                if self.ready:
                    return min(self.ready, key=lambda s: s.inflight)
                self._has_ready.clear()
                try:
                    async with asyncio.timeout(deadline - loop.time()):
                        await self._has_ready.wait()
                except TimeoutError:
                    raise Unavailable(
                        f"{self._name} had no ready replica within {timeout:g}s (its "
                        "scaling.cold_start_timeout): it is starting or restarting; retry shortly",
                        code="no_replica") from None
        finally:
            self.waiting -= 1
            if self._metrics is not None:
                self._metrics.queue_wait(self.model_id, self.deployment_id, loop.time() - started)

    # -- replicas ------------------------------------------------------------------------------
    def _new_slot(self) -> Slot:
        slot = Slot(next(self._indexes))
        self.slots.append(slot)
        return slot

    def _in_rotation(self, slot: Slot, launched: Launched) -> None:
        slot.launched = launched
        slot.state = State.READY
        slot.ready_since = time.monotonic()
        self.ready = [*self.ready, slot]  # a new list: a scan in progress keeps its own
        self._has_ready.set()

    def take_out(self, launched: Launched) -> None:
        """No new requests to this replica (it failed its health checks and is being restarted:
        it comes back through the supervisor when it has ended)."""
        for slot in self.ready:
            if slot.launched is launched:
                self._out_of_rotation(slot)

    def _out_of_rotation(self, slot: Slot) -> None:
        if slot in self.ready:
            self.ready = [s for s in self.ready if s is not slot]

    async def _supervise(self, slot: Slot, launched: Launched | None) -> None:
        """Keep the slot's replica running: wait for it to end, restart it after a backoff."""
        backoff = RESTART_BACKOFF_S
        while True:
            if launched is None:
                slot.state = State.STARTING
                try:
                    launched = await self._launch(slot.index)
                except Exception as exc:  # a start that failed; anything but ReadinessError is ours
                    if not isinstance(exc, ReadinessError):
                        log.exception("%s replica %d: starting it failed", self._name, slot.index)
                    slot.last_exit = (str(exc).splitlines() or [type(exc).__name__])[0]
                    if self._crashed(slot, str(exc)):
                        return
                    slot.state = State.BACKOFF
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
                if slot.state is State.DRAINING:  # scaled down while it was starting
                    await launched.stop()
                    slot.drained.set()
                    return
                self._in_rotation(slot, launched)
            how = await launched.exited()
            self._out_of_rotation(slot)
            slot.launched = None
            await launched.replica.close()
            if slot.state in (State.DRAINING, State.STOPPED):
                slot.drained.set()
                return
            launched = None
            slot.last_exit = how
            slot.restarts += 1
            up = time.monotonic() - (slot.ready_since or 0)
            log.error("%s replica %d ended (%s) after %.0fs; restarting it", self._name, slot.index, how, up)
            if self._crashed(slot, how):
                return
            if up > CRASH_WINDOW_S:
                backoff = RESTART_BACKOFF_S  # it had been fine for a while: not a crash loop
            slot.state = State.BACKOFF
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _crashed(self, slot: Slot, how: str) -> bool:
        """Count a crash; past the limit, fail the deployment. True when it failed."""
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > CRASH_WINDOW_S:
            self._crashes.popleft()
        if len(self._crashes) < CRASH_LIMIT:
            return False
        first_line = how.splitlines()[0] if how else "it ended"
        self.failed = (f"its replicas crashed {len(self._crashes)} times within "
                       f"{CRASH_WINDOW_S:.0f}s (last: {first_line}); last log lines:\n{self._log_tail()}")
        log.error("%s failed: %s", self._name, self.failed)
        slot.state = State.STOPPED
        self._has_ready.set()  # waiters see `failed`
        self._failing = asyncio.create_task(self._fail())
        return True

    async def _fail(self) -> None:
        await self.close()
        if self._on_failed is not None:
            self._on_failed(self.failed)

    async def _stop_slot(self, slot: Slot) -> None:
        """Stop a replica now (closing: its in-flight requests end with it)."""
        slot.state = State.STOPPED
        self._out_of_rotation(slot)
        if slot.task is not None and slot.task is not asyncio.current_task():
            slot.task.cancel()
            await asyncio.gather(slot.task, return_exceptions=True)
        launched, slot.launched = slot.launched, None
        if launched is not None:
            await launched.replica.close()
            await launched.stop()
        if slot in self.slots:
            self.slots.remove(slot)

    async def _drain(self, slot: Slot) -> None:
        """Take a replica out of the rotation, let its in-flight requests finish (for up to
        `scaling.drain_timeout` seconds), stop it."""
        slot.state = State.DRAINING
        self._out_of_rotation(slot)
        if slot.inflight == 0:
            slot.drained.set()
        timeout = self.scaling.drain_timeout
        try:
            async with asyncio.timeout(timeout):
                await slot.drained.wait()
        except TimeoutError:
            log.warning("%s replica %d still had %d request(s) in flight after its drain timeout "
                        "(%gs, scaling.drain_timeout); stopping it anyway", self._name, slot.index,
                        slot.inflight, timeout)
        else:
            log.info("%s replica %d drained; stopping it", self._name, slot.index)
        await self._stop_slot(slot)

    # -- autoscaling ---------------------------------------------------------------------------
    def wanted(self) -> int:
        """Replicas the load needs now, within the scaling bounds."""
        s = self.scaling
        need = math.ceil((self.inflight + self.waiting) / s.target_concurrency)
        return max(s.min_replicas, min(s.max_replicas, need))

    async def _autoscale(self) -> None:
        try:
            await self._autoscale_loop()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug of ours: say so rather than silently stop scaling
            log.exception("%s: the autoscaler stopped", self._name)

    async def _autoscale_loop(self) -> None:
        loop = asyncio.get_running_loop()
        low_since: float | None = None
        while not self._closed and self.failed is None:
            try:
                async with asyncio.timeout(AUTOSCALE_INTERVAL_S):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self._closed or self.failed is not None:
                return
            serving = [s for s in self.slots if s.state in (State.STARTING, State.READY, State.BACKOFF)]
            want = self.wanted()
            if want > len(serving):
                low_since = None
                self._settle = False
                log.info("%s: scaling up to %d replica(s) (%d in flight, %d waiting)",
                         self._name, want, self.inflight, self.waiting)
                for _ in range(want - len(serving)):
                    slot = self._new_slot()
                    slot.task = asyncio.create_task(self._supervise(slot, None))
            elif want < len(serving):
                now = loop.time()
                low_since = now if low_since is None else low_since
                over_max = len(serving) > self.scaling.max_replicas  # lowered by `rescale`
                if self._settle or over_max or now - low_since >= self.scaling.scale_down_delay:
                    # the least busy go first; those not serving yet before those that are
                    serving.sort(key=lambda s: (s.state is State.READY, s.inflight))
                    log.info("%s: scaling down to %d replica(s)", self._name, want)
                    for slot in serving[:len(serving) - want]:
                        slot.drain_task = asyncio.create_task(self._drain(slot))
                    low_since = None
                    self._settle = False
            else:
                low_since = None
                if want == self.scaling.min_replicas:
                    self._settle = False
