"""External upstreams: a deployment that fronts an OpenAI-compatible server elsewhere.

    # config.yaml (no model code)
    upstream:
      base_url: http://10.0.0.5:8000/v1     # where /chat/completions and /completions live
      api_key_secret: VLLM_KEY              # a trestle secret, sent as `Authorization: Bearer`
      model: meta-llama/Llama-3.1-8B        # replaces `model` in every request (optional)
      timeout: 300                          # seconds to the first byte, then between chunks

Such a deployment runs no worker: its one replica is a `Replica` whose transport is an
`UpstreamTransport`, an `HTTPTransport` over TCP to `base_url`. The routing table, the bridge and
the data plane reach it like any other replica. `UpstreamBackend` wraps the backend that runs
workers and serves the deployments with `upstream:` itself; starting one checks nothing (the
deployment is active at once: an upstream that is down answers each request with a 502).

What the transport does to a request: a worker route `/v1/X` goes to `{base_url}/X` (any other
route, `/predict` included, is a 404 that says what the deployment serves); `model` in a JSON body
is replaced by `upstream.model` when one is set; the client's headers are not passed on (they hold
the client's trestle key) but for `content-type`, `accept` and the request id, and the secret's
key is sent as `Authorization: Bearer`. What comes back is the upstream's status and body as is.
Failures, mapped in `HTTPTransport`: no connection (refused, unknown host) -> 502; no byte for
`timeout` seconds -> 504; a body cut mid-way -> `UpstreamError` while streaming (the relay ends a
server-sent-events stream with an error event).
"""

from __future__ import annotations

import json

import aiohttp

from trestle import requestid
from trestle.deploy.backend import DeploymentSpec, ReadinessError, ReplicaBackend
from trestle.deploy.config import UpstreamConfig
from trestle.deploy.transport import Headers, HTTPTransport, Replica, Upstream
from trestle.errors import NotFound, TrestleError, UpstreamError

ROUTE_PREFIX = "/v1/"
PASSED_HEADERS = frozenset({b"content-type", b"accept", requestid.HEADER.encode()})


class UpstreamTransport(HTTPTransport):
    """HTTP to an external OpenAI-compatible server at `config.base_url`."""

    timeout_setting = "upstream.timeout"

    def __init__(self, config: UpstreamConfig, api_key: str | None, name: str):
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        super().__init__(connector, config.base_url, name, config.timeout)
        self.model = config.model
        self._auth = [(b"authorization", f"Bearer {api_key}".encode())] if api_key else []

    async def send(self, method: str, path: str, headers: Headers, body: bytes) -> Upstream:
        route, sep, query = path.partition("?")
        if not route.startswith(ROUTE_PREFIX):
            raise NotFound(f"{self.name} fronts an OpenAI-compatible server: it serves the /v1 "
                           f"routes (/v1/chat/completions, /v1/completions), not {route}")
        target = "/" + route[len(ROUTE_PREFIX):] + sep + query
        sent = [(k, v) for k, v in headers if k.lower() in PASSED_HEADERS] + self._auth
        return await super().send(method, target, sent, self._renamed(body))

    def _renamed(self, body: bytes) -> bytes:
        """The body with `model` set to the name the upstream serves (when one is configured)."""
        if self.model is None or not body:
            return body
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return body  # the upstream says what is wrong with it
        if not isinstance(payload, dict):
            return body
        payload["model"] = self.model
        return json.dumps(payload).encode()

    def refused(self) -> TrestleError:
        # Not "retry shortly": the server elsewhere is down or the address is wrong.
        return UpstreamError(f"{self.name}: its upstream server cannot be reached "
                             "(connection refused or unknown host)")


class UpstreamBackend:
    """A `ReplicaBackend` that serves deployments with `upstream:` itself and hands every other
    deployment to `inner` (the backend that runs workers)."""

    def __init__(self, inner: ReplicaBackend):
        self.inner = inner
        self._replicas: dict[str, Replica] = {}

    async def prepare(self, spec: DeploymentSpec) -> None:
        if spec.upstream is None:
            await self.inner.prepare(spec)

    async def start(self, spec: DeploymentSpec) -> None:
        if spec.upstream is None:
            await self.inner.start(spec)
            return
        await self.stop(spec.deployment_id)
        key = None
        if spec.upstream.api_key_secret is not None:
            key = spec.secrets.get(spec.upstream.api_key_secret)
            if key is None:
                raise ReadinessError(f"the secret {spec.upstream.api_key_secret} (upstream."
                                     "api_key_secret) is not set: set it with `trestle secrets set "
                                     f"{spec.upstream.api_key_secret}`, then push again")
        transport = UpstreamTransport(spec.upstream, key, f"deployment {spec.deployment_id}")
        self._replicas[spec.deployment_id] = Replica(spec.deployment_id, 0, transport)

    async def stop(self, deployment_id: str) -> None:
        replica = self._replicas.pop(deployment_id, None)
        if replica is not None:
            await replica.close()
        else:
            await self.inner.stop(deployment_id)

    def replica(self, deployment_id: str) -> Replica | None:
        return self._replicas.get(deployment_id) or self.inner.replica(deployment_id)

    async def close(self) -> None:
        for deployment_id in list(self._replicas):
            await self.stop(deployment_id)
        await self.inner.close()
