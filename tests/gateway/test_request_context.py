"""The gateway's request context counts a request before its client can have the whole answer,
so that a client reading /metrics right after its answer finds itself there."""

from __future__ import annotations

import asyncio

from trestle.gateway.middleware import RequestContext
from trestle.metrics import Metrics


def counted(metrics: Metrics) -> float:
    return sum(s.value for family in metrics.registry.collect() if family.name == "trestle_requests"
               for s in family.samples if s.name == "trestle_requests_total")


def test_a_content_length_answer_is_counted_with_its_last_byte_not_after_the_closing_message():
    """A relayed answer sends its bytes, then an empty closing message: the client has the whole
    body (its content-length) before that message is sent."""
    async def scenario():
        metrics = Metrics()
        last_byte_sent, release = asyncio.Event(), asyncio.Event()
        counted_at_last_byte: list[float] = []

        async def relay(scope, receive, send):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok", "more_body": True})
            last_byte_sent.set()
            await release.wait()
            await send({"type": "http.response.body", "body": b""})

        async def client_send(message):
            if message["type"] == "http.response.body" and message.get("body") == b"ok":
                counted_at_last_byte.append(counted(metrics))  # what /metrics says at that moment

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/model/m1/production/predict",
                 "headers": [], "query_string": b""}
        call = asyncio.ensure_future(RequestContext(relay, metrics)(scope, receive, client_send))
        await asyncio.wait_for(last_byte_sent.wait(), 60)
        assert counted(metrics) == 1
        release.set()
        await call
        assert counted(metrics) == 1  # once
        assert counted_at_last_byte == [1]  # counted before the last byte went out

    asyncio.run(scenario())
