"""Replicas on a Ray cluster: `trestle serve --backend ray [--ray-address ADDRESS]`, or a
deployment whose config.yaml says `runtime.backend: ray` (`trestle.deploy.per_deployment`).

The gateway is a Ray driver (`ray.init(address)`; without an address it starts a one-machine Ray
of its own). Each replica of a deployment is a `ReplicaActor` (`trestle.deploy.ray.actor`): Ray
places it on a node that has the resources the deployment asks for, the actor starts the worker
there on the node's address and a free port, and the gateway reaches the worker through an
`HTTP1Transport` over TCP, as it reaches a local one over its Unix socket. Ray is not on the request
path (its own HTTP proxy or a DeploymentHandle costs milliseconds a request; a direct call costs
what a local one does: bench/scaleout.py).

Everything else is the deployment's `ReplicaSet` (`trestle.deploy.replicas`), as for local
workers: balancing, waiting for a replica, restarts after a crash (a new actor, which Ray places
where there is room: on another node when the replica's node has left the cluster), autoscaling
from `scaling`, draining, scale to zero. The gateway also checks each worker's `/health` like the
local backend does and replaces one that stops answering (its worker killed, then its actor). A
replica whose worker ended has its last output copied into the deployment log and its actor killed
at once, so the resources it held are free for the replacement.

What a deployment's config.yaml asks of Ray:
- `resources` -> the actor's `num_cpus`, `memory`, `num_gpus` (`trestle.deploy.ray.placement`).
- `requirements` / `requirements_file` -> the actor's `runtime_env` `pip` list (Ray builds the
  environment on each node, once per list). `build_commands` cannot run on a cluster: such a push
  is refused with a message that says so.
- the pushed folder is shipped through Ray's object store to each replica.
A deployment's replicas are spread over the nodes: each new one is asked for (a soft node
affinity: Ray places it elsewhere when that node has no room now) on the node with the fewest of them, so
that one node leaving takes as few as possible with it; when that node leaves, Ray places the
replacements on those that remain.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import yarl

from trestle.deploy.logs import logfile
from trestle.deploy.backend import (POLL_INTERVAL_S, READY_TIMEOUT_S, DeploymentSpec, ReadinessError,
                                    deployment_log, log_tail, wait_ready)
from trestle.deploy.build.package import pack
from trestle.deploy.ray.placement import actor_options, nodes_with_room
from trestle.deploy.replica_sets import ReplicaSets, watch_health
from trestle.deploy.build.requirements import read_requirements
from trestle.deploy.http1 import HTTP1Transport
from trestle.deploy.transport import Replica
from trestle.errors import BadRequest
from trestle.metrics import Metrics

log = logging.getLogger("trestle.deploy")

NAMESPACE = "trestle"
OUTPUT_INTERVAL_S = 1.0  # how often each worker's output is fetched into the deployment log
STOP_TIMEOUT_S = 15.0
PLACEMENT_TIMEOUT_S = 600.0  # for Ray to place a replica and its actor to unpack the folder


class RayUnavailable(Exception):
    """Ray is not installed, or the cluster cannot be reached: the message says which."""


def connect(address: str | None) -> None:
    """`ray.init`: join the cluster at `address`, or start a local one (None). Blocking."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable("the ray backend needs Ray: pip install 'trestle[ray]'") from None
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, namespace=NAMESPACE, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address or 'a new local Ray'}: "
                             f"{exc}") from None


@dataclass(eq=False)
class _RayReplica:
    """One replica: its actor and the worker it runs (a `Launched` of trestle.deploy.replicas)."""

    spec: DeploymentSpec
    index: int
    actor: object
    replica: Replica | None = None
    pid: int | None = None
    node: str | None = None
    stopping: bool = False
    out_of_rotation: bool = False
    restart_reason: str | None = None
    liveness: asyncio.Task | None = None
    pump: asyncio.Task | None = None
    metrics: Metrics | None = None
    on_gone: Callable[[], None] = lambda: None  # it no longer counts for placement

    log: logfile.RotatingLog | None = None  # the deployment log, where its output goes
    offset: int = 0  # how much of its worker's output is in the log

    async def exited(self) -> str:
        """Wait until the worker ends; then copy its last output into the log and kill the
        actor at once (it would otherwise hold its resources until Ray collects its handle)."""
        import ray

        try:
            how = await self.actor.exited.remote()
        except ray.exceptions.RayActorError as exc:
            how = _actor_gone(exc)
        else:
            if self.pump is not None and self.pump is not asyncio.current_task():
                self.pump.cancel()  # it writes what it fetched before awaiting again: no loss
                await asyncio.gather(self.pump, return_exceptions=True)
            try:  # its last words, still kept by the actor; then its folder removed (its
                # worker has ended: `stop` has nothing else to wait for)
                await asyncio.wait_for(self.copy_output(), STOP_TIMEOUT_S)
                await asyncio.wait_for(self.actor.stop.remote(), STOP_TIMEOUT_S)
            except (ray.exceptions.RayError, asyncio.TimeoutError):
                pass  # the actor went meanwhile (its node left)
        _kill(self.actor)
        if self.metrics is not None and not self.stopping:
            self.metrics.replica_restart(self.spec.model_id, self.spec.deployment_id,
                                         self.restart_reason or "crashed")
        self._cancel_tasks()
        self.on_gone()
        return how

    async def copy_output(self) -> bool:
        """Copy the worker's output that the log lacks from its actor; whether there was any.
        Raises `RayError` when the actor is gone."""
        data, offset = await self.actor.output.remote(self.offset)
        if data and self.log is not None:
            self.log.write(data)
        self.offset = offset
        return bool(data)

    def _cancel_tasks(self) -> None:
        for task in (self.liveness, self.pump):
            if task is not None and task is not asyncio.current_task():
                task.cancel()

    async def stop(self) -> None:
        import ray

        self.stopping = True
        if self.replica is not None:
            await self.replica.close()
        try:
            await asyncio.wait_for(self.actor.stop.remote(), STOP_TIMEOUT_S)
        except (ray.exceptions.RayError, asyncio.TimeoutError):
            pass
        if self.pump is not None and self.pump is not asyncio.current_task():
            try:  # its last lines into the log
                await asyncio.wait_for(asyncio.shield(self.pump), 2.0)
            except (asyncio.TimeoutError, Exception):
                pass
        self._cancel_tasks()
        self.on_gone()
        _kill(self.actor)


def _actor_gone(exc: Exception) -> str:
    text = str(exc)
    if "node" in text.lower() and ("died" in text.lower() or "dead" in text.lower()):
        return "its Ray node left the cluster"
    return "its Ray actor died"


class RayBackend(ReplicaSets):
    """A `ReplicaBackend` whose replicas are Ray actors (see the module docstring)."""

    def __init__(self, address: str | None = None, *,
                 log_max_bytes: int = logfile.DEFAULT_MAX_BYTES,
                 log_backups: int = logfile.DEFAULT_BACKUPS):
        super().__init__(log_max_bytes=log_max_bytes, log_backups=log_backups)
        self.address = address
        self._connected = False
        self._connecting = asyncio.Lock()  # deployments brought up together connect once
        self._folders: dict[str, object] = {}  # deployment id -> ObjectRef of its packed folder
        self._envs: dict[str, dict] = {}  # deployment id -> its runtime_env (requirements)
        self._placed: dict[str, set[_RayReplica]] = {}  # deployment id -> its live replicas

    async def _connect(self) -> None:
        async with self._connecting:
            if not self._connected:
                try:
                    await asyncio.to_thread(connect, self.address)
                except RayUnavailable as exc:
                    raise ReadinessError(str(exc)) from None
                self._connected = True

    # -- ReplicaBackend ------------------------------------------------------------------------
    async def prepare(self, spec: DeploymentSpec) -> None:
        if spec.build_commands:
            raise ReadinessError("build_commands cannot run on the ray backend (each node would "
                                 "need them): bake what they do into the nodes' image, or list "
                                 "Python packages under requirements")
        try:  # the list, and the file with what it includes (pip runs on the nodes, not here)
            reqs = read_requirements(spec.source_dir, list(spec.requirements),
                                     spec.requirements_file)
            lines = reqs.flat(spec.source_dir)
        except BadRequest as exc:
            raise ReadinessError(exc.message) from None
        if not reqs.shareable:
            raise ReadinessError("requirements name a local path, which the Ray nodes do not "
                                 "have: publish the package to an index, or install it on the "
                                 "nodes")
        if lines:
            self._envs[spec.deployment_id] = {"pip": lines}

    async def start(self, spec: DeploymentSpec,
                    on_failed: Callable[[str], object] | None = None) -> None:
        import ray

        await self.stop(spec.deployment_id)
        await self._connect()
        options = actor_options(spec.source_dir)
        archive = await asyncio.to_thread(pack, spec.source_dir)
        self._folders[spec.deployment_id] = await asyncio.to_thread(ray.put, archive)
        await self.start_set(spec, functools.partial(self._launch, spec, options), on_failed)

    def forget(self, deployment_id: str) -> None:
        self._folders.pop(deployment_id, None)

    def describe_slot(self, slot) -> dict:
        return slot.describe() | {"node": slot.launched.node if slot.launched is not None else None}

    async def close(self) -> None:
        await self.close_sets()
        if self._connected:
            import ray

            await asyncio.to_thread(ray.shutdown)
            self._connected = False

    # -- actors --------------------------------------------------------------------------------
    async def _launch(self, spec: DeploymentSpec, options: dict, index: int) -> _RayReplica:
        """Start replica `index` of the deployment on the cluster; return it once it is ready."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        env = self._envs.get(spec.deployment_id)
        nodes = await asyncio.to_thread(nodes_with_room, options)
        # from here to its registration in `_placed`, nothing awaits: a launch beside this one
        # sees where this replica goes
        node = self._least_used(spec.deployment_id, nodes)
        # soft, and spilled elsewhere when that node is busy: never wait for one node while
        # another has room
        strategy = (NodeAffinitySchedulingStrategy(node, soft=True, _spill_on_unavailable=True)
                    if node is not None else "SPREAD")
        actor_cls = _actor_class().options(
            **options, max_restarts=0, scheduling_strategy=strategy,
            **({"runtime_env": env} if env else {}))
        launched = time.monotonic()
        actor = actor_cls.remote(spec.deployment_id, index)
        r = _RayReplica(spec, index, actor, metrics=self.metrics, node=node)
        self._placed.setdefault(spec.deployment_id, set()).add(r)
        r.on_gone = lambda: self._placed.get(spec.deployment_id, set()).discard(r)
        log_file = deployment_log(spec.home)
        name = f"deployment {spec.deployment_id}"
        try:
            where = await asyncio.wait_for(
                actor.start.remote(self._folders[spec.deployment_id], dict(spec.secrets),
                                   spec.environment), PLACEMENT_TIMEOUT_S)
        except asyncio.TimeoutError:
            r.on_gone()
            _kill(actor)
            raise ReadinessError(f"replica {index}: no node of the Ray cluster had room for it "
                                 f"within {PLACEMENT_TIMEOUT_S:.0f}s (it asks for {options})") from None
        except ray.exceptions.RayError as exc:
            r.on_gone()
            _kill(actor)
            raise ReadinessError(f"replica {index} could not start on the Ray cluster: "
                                 f"{_first_line(exc)}") from None
        except BaseException:
            r.on_gone()
            _kill(actor)
            raise
        r.pid, r.node = where["pid"], where["node_id"]
        log.info("deployment %s replica %d: started pid %d on Ray node %s (%s)", spec.deployment_id,
                 index, r.pid, where["node_ip"], where["node_id"][:12])
        url = yarl.URL(where["url"])
        r.replica = Replica(spec.deployment_id, index,
                            HTTP1Transport.tcp(url.host, url.port, name, spec.request_timeout))
        r.log = self.log_for(log_file)
        r.pump = asyncio.create_task(self._pump(r))
        ended = asyncio.ensure_future(actor.exited.remote())

        def gone() -> str | None:
            if not ended.done():
                return None
            how = ended.exception() and _actor_gone(ended.exception()) or ended.result()
            return (f"worker ended ({how}) before it was ready; last log lines:\n"
                    f"{log_tail(log_file)}")

        try:
            await _wait_listening(where["url"], gone)
            await wait_ready(r.replica, gone)
        except BaseException:
            await r.stop()
            raise
        finally:
            ended.cancel()
        if self.metrics is not None:
            self.metrics.cold_start(spec.model_id, spec.deployment_id, time.monotonic() - launched)
        r.liveness = asyncio.create_task(self._check_liveness(r))
        return r

    def _least_used(self, deployment_id: str, nodes: list[str]) -> str | None:
        """Of `nodes`, the one with the fewest of the deployment's replicas (then the fewest
        replicas in all): a deployment's replicas spread over the nodes. None: no node listed
        (Ray's SPREAD decides)."""
        if not nodes:
            return None
        mine = Counter(r.node for r in self._placed.get(deployment_id, ()))
        everyone = Counter(r.node for placed in self._placed.values() for r in placed)
        return min(nodes, key=lambda n: (mine[n], everyone[n]))

    async def _pump(self, r: _RayReplica) -> None:
        """Copy the worker's output (kept by its actor) into the deployment log now and then."""
        import ray

        while True:
            try:
                fetched = await r.copy_output()
            except ray.exceptions.RayError:
                return
            if r.stopping and not fetched:
                return
            await asyncio.sleep(OUTPUT_INTERVAL_S)

    async def _check_liveness(self, r: _RayReplica) -> None:
        """Replace a replica that has not answered `/health` for `liveness_timeout` seconds
        (its worker killed), or that says it is unhealthy (its worker stopped gracefully: its
        requests in flight finish): out of the rotation at once; once its worker has ended,
        `exited` kills the actor and its replica set starts another."""
        import ray

        async def replace(reason: str, why: str | None) -> bool:
            log.error("deployment %s replica %d is %s (%s); replacing it", r.spec.deployment_id,
                      r.index, reason, why)
            r.restart_reason = reason
            r.out_of_rotation = True
            replicas = self._deployments.get(r.spec.deployment_id)
            if replicas is not None:
                replicas.take_out(r)
            end = r.actor.stop if reason == "unhealthy" else r.actor.kill
            try:
                await asyncio.wait_for(end.remote(), STOP_TIMEOUT_S)
            except (ray.exceptions.RayError, asyncio.TimeoutError):
                _kill(r.actor)  # the actor itself does not answer: it goes, its worker with it
            return True

        await watch_health(r.spec, lambda: r.replica, lambda: r.stopping, replace)


async def _wait_listening(url: str, gone: Callable[[], str | None]) -> None:
    """Until the worker at `url` accepts connections (it binds its port once its app is built),
    or `gone()` says why it never will. `wait_ready` then asks its `/health`."""
    parts = yarl.URL(url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    while loop.time() < deadline:
        reason = gone()
        if reason is not None:
            raise ReadinessError(reason)
        try:
            _, writer = await asyncio.open_connection(parts.host, parts.port)
        except OSError:
            await asyncio.sleep(POLL_INTERVAL_S)
            continue
        writer.close()
        return
    raise ReadinessError(f"the worker was not listening after {READY_TIMEOUT_S:.0f}s")


@functools.cache
def _actor_class():
    import ray

    from trestle.deploy.ray.actor import ReplicaActor

    return ray.remote(ReplicaActor)


def _kill(actor) -> None:
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except (ray.exceptions.RayError, ValueError):
        pass  # already gone


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
