"""The gateway's Prometheus metrics, all defined here, in one registry per gateway (`/metrics`).

Label values are bounded: model, deployment and replica ids, environment names, a route's name
(`route_name`: never the raw path), an HTTP status. Every metric is prefixed `trestle_`:

    requests_total{kind,route,model,deployment,environment,status}    counter
    request_duration_seconds{kind,route,model,deployment,environment} histogram, to the last byte
    time_to_first_byte_seconds{...same}                               histogram, streamed answers
    requests_in_flight{kind}                                          gauge
    deployment_requests_in_flight{model,deployment}                   gauge
    queue_wait_seconds{model,deployment}                              histogram (a request waiting
                                                                      for a replica)
    replicas{model,deployment,state}                                  gauge (read from the backend)
    deployments{status}                                               gauge
    cold_starts_total{model,deployment}, cold_start_duration_seconds  counter, histogram
    replica_restarts_total{model,deployment,reason}                   counter (crashed,
                                                                      unhealthy, unresponsive)
    engine_*{model,deployment,replica}                                the engine workers' counters,
                                                                      read from their /health when
                                                                      /metrics is scraped

The request path calls `RequestMetrics` (from `trestle.gateway.middleware.RequestContext`) and
`Metrics.route_to` (where a request is routed); backends call the hooks `cold_start`,
`queue_wait` and `replica_restart` (`LocalProcessBackend.metrics`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("trestle.gateway")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STARTUP_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
REQUEST_LABELS = ("kind", "route", "model", "deployment", "environment")
TARGET_KEY = "metrics_target"  # in scope["state"]: (model, deployment, environment)
ENGINE_SCRAPE_TIMEOUT_S = 1.0

# /v1 and /api routes by name; everything under /model/ is `predict` or `sync`
_V1 = {
    "/v1/chat/completions": "chat_completions", "/v1/completions": "completions",
    "/v1/direct/chat/completions": "direct_chat_completions",
    "/v1/direct/completions": "direct_completions", "/v1/embeddings": "embeddings",
    "/v1/messages": "messages", "/v1/models": "models", "/v1/responses": "responses",
}
_EXACT = {"/health": "health", "/metrics": "metrics", "/openapi.json": "openapi"}


def route_kind(path: str) -> str:
    if path.startswith("/model/"):
        return "model"
    if path.startswith("/v1/"):
        return "model_api"
    if path.startswith("/api/"):
        return "management"
    return "other"


def route_name(path: str) -> str:
    """A bounded name for the route a path reaches (never the path itself)."""
    if path.startswith("/model/"):
        if "/sync/" in path or path.endswith("/sync"):
            return "sync"
        return "predict" if path.endswith("/predict") else "other"
    if path.startswith("/v1/"):
        if path.startswith("/v1/models"):
            return "models"
        return _V1.get(path, "other")
    if path.startswith("/api/"):
        if path.startswith("/api/v1/"):
            return "management"
        if path.startswith("/api/endpoints/"):
            return "endpoints"
        if path.startswith("/api/datasets"):
            return "datasets"
        return "other"
    return _EXACT.get(path, "other")


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=r)
        self.requests = Counter("trestle_requests_total", "Requests handled by the gateway",
                                [*REQUEST_LABELS, "status"], registry=r)
        self.latency = Histogram("trestle_request_duration_seconds",
                                 "Time from the request to the last byte of its answer",
                                 REQUEST_LABELS, registry=r, buckets=LATENCY_BUCKETS)
        self.ttfb = Histogram("trestle_time_to_first_byte_seconds",
                              "Time from the request to the first byte of a streamed answer's body",
                              REQUEST_LABELS, registry=r, buckets=LATENCY_BUCKETS)
        self.in_flight = Gauge("trestle_requests_in_flight", "Requests being answered, by kind",
                               ["kind"], registry=r)
        self.deployment_in_flight = Gauge("trestle_deployment_requests_in_flight",
                                          "Requests routed to a deployment and not yet answered",
                                          ["model", "deployment"], registry=r)
        self.queue_waits = Histogram("trestle_queue_wait_seconds",
                                     "Time a request waited for a ready replica",
                                     ["model", "deployment"], registry=r, buckets=STARTUP_BUCKETS)
        self.cold_starts = Counter("trestle_cold_starts_total", "Replicas started (cold starts)",
                                   ["model", "deployment"], registry=r)
        self.cold_start_seconds = Histogram("trestle_cold_start_duration_seconds",
                                            "Time from starting a replica to its first ready health check",
                                            ["model", "deployment"], registry=r, buckets=STARTUP_BUCKETS)
        self.restarts = Counter("trestle_replica_restarts_total", "Replicas restarted, by reason",
                                ["model", "deployment", "reason"], registry=r)
        self.engines = EngineCollector()
        r.register(self.engines)
        self._target_gauges: dict[tuple[str, str], Any] = {}

    # -- the request path ----------------------------------------------------------------------
    def route_to(self, scope: dict, model_id: str, deployment_id: str, environment: str = "") -> None:
        """Record where a request goes (its labels), and count it in flight on the deployment
        until `RequestMetrics.done` (called by the gateway's RequestContext)."""
        state = scope["state"]
        if TARGET_KEY in state:  # routed once already (e.g. the bridge, then the relay)
            return
        state[TARGET_KEY] = (model_id, deployment_id, environment)
        gauge = self._target_gauges.get((model_id, deployment_id))
        if gauge is None:
            gauge = self._target_gauges[(model_id, deployment_id)] = \
                self.deployment_in_flight.labels(model_id, deployment_id)
        gauge.inc()

    # -- hooks for replica backends ------------------------------------------------------------
    def cold_start(self, model_id: str, deployment_id: str, seconds: float) -> None:
        self.cold_starts.labels(model_id, deployment_id).inc()
        self.cold_start_seconds.labels(model_id, deployment_id).observe(seconds)

    def queue_wait(self, model_id: str, deployment_id: str, seconds: float) -> None:
        self.queue_waits.labels(model_id, deployment_id).observe(seconds)

    def replica_restart(self, model_id: str, deployment_id: str, reason: str) -> None:
        """`reason`: crashed, unhealthy (is_healthy kept failing), unresponsive (no health answer)."""
        self.restarts.labels(model_id, deployment_id, reason).inc()


class RequestMetrics:
    """The per-request part, kept cheap: label children are looked up once per label set."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self._in_flight = {kind: metrics.in_flight.labels(kind)
                           for kind in ("model", "model_api", "management", "other")}
        self._timers: dict[tuple[str, ...], tuple[Any, Any]] = {}
        self._counts: dict[tuple[str, ...], Any] = {}

    def start(self, kind: str) -> None:
        self._in_flight[kind].inc()

    def done(self, scope: dict, kind: str, route: str, status: int, elapsed: float,
             first_byte: float | None) -> None:
        self._in_flight[kind].dec()
        target = scope.get("state", {}).get(TARGET_KEY)
        if target is not None:
            gauge = self.metrics._target_gauges.get(target[:2])
            if gauge is not None:
                gauge.dec()
            labels = (kind, route, *target)
        else:
            labels = (kind, route, "", "", "")
        timers = self._timers.get(labels)
        if timers is None:
            timers = self._timers[labels] = (self.metrics.latency.labels(*labels),
                                             self.metrics.ttfb.labels(*labels))
        timers[0].observe(elapsed)
        if first_byte is not None:
            timers[1].observe(first_byte)
        key = (*labels, str(status))
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = self.metrics.requests.labels(*key)
        count.inc()


class EngineCollector(Collector):
    """The engine workers' scheduler counters, as last read from their `/health`."""

    GAUGES = {
        "active_sequences": "Sequences being decoded",
        "waiting_requests": "Requests waiting for a free sequence slot",
    }
    COUNTERS = {
        "generated_tokens": "Tokens generated",
        "reused_prompt_tokens": "Prompt tokens served from the prefix cache",
        "cancelled_sequences": "Sequences cancelled (client went away)",
    }

    def __init__(self) -> None:
        self.snapshot: dict[tuple[str, str, str], dict[str, Any]] = {}

    def collect(self):
        labels = ["model", "deployment", "replica"]
        for name, doc in self.GAUGES.items():
            family = GaugeMetricFamily(f"trestle_engine_{name}", doc, labels=labels)
            for key, stats in self.snapshot.items():
                if isinstance(stats.get(name), (int, float)):
                    family.add_metric(list(key), stats[name])
            yield family
        for name, doc in self.COUNTERS.items():
            family = CounterMetricFamily(f"trestle_engine_{name}", doc, labels=labels)
            for key, stats in self.snapshot.items():
                if isinstance(stats.get(name), (int, float)):
                    family.add_metric(list(key), stats[name])
            yield family

    async def refresh(self, targets: list[tuple[str, str, str, Any]]) -> None:
        """Read `/health` of each (model, deployment, replica index, Replica) in parallel."""
        async def read(replica) -> dict | None:
            try:
                async with asyncio.timeout(ENGINE_SCRAPE_TIMEOUT_S):
                    body = json.loads(await (await replica.send("GET", "/health", [], b"")).read())
            except Exception:  # a replica that does not answer now simply has no sample
                return None
            return body if isinstance(body, dict) else None

        results = await asyncio.gather(*(read(t[3]) for t in targets))
        self.snapshot = {t[:3]: r for t, r in zip(targets, results) if r is not None}


class StateCollector(Collector):
    """Deployments by status and replicas by state, read at scrape time (no I/O)."""

    def __init__(self, routing, backend) -> None:
        self.routing = routing
        self.backend = backend

    def collect(self):
        deployments = GaugeMetricFamily("trestle_deployments", "Deployments by status", labels=["status"])
        counts: dict[str, int] = {}
        for dep in self.routing.deployments.values():
            counts[dep.status.value] = counts.get(dep.status.value, 0) + 1
        for status, n in sorted(counts.items()):
            deployments.add_metric([status], n)
        yield deployments
        replicas = GaugeMetricFamily("trestle_replicas", "Replicas by state", labels=["model", "deployment", "state"])
        states = getattr(self.backend, "replica_states", None)
        if states is not None:
            for deployment_id, by_state in states().items():
                dep = self.routing.deployments.get(deployment_id)
                model_id = dep.model_id if dep is not None else ""
                for state, n in sorted(by_state.items()):
                    replicas.add_metric([model_id, deployment_id, state], n)
        yield replicas
