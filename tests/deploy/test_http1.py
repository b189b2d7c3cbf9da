"""The HTTP/1.1 transport to workers, against a scripted socket server where a fault must be
produced on demand (a worker that stalls, hangs up mid-answer or floods), and against a real
worker for the rest (tests/deploy/test_local.py, and every gateway test)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from trestle.deploy import http1
from trestle.deploy.http1 import HTTP1Transport
from trestle.errors import UpstreamError, UpstreamTimeout

DEADLINE_S = 60.0


class Scripted:
    """A Unix-socket server whose answer to each request is `answer(reader, writer)`; it counts
    the connections it was given and the requests it read."""

    def __init__(self, path: Path, answer):
        self.path, self.answer = path, answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.hung_up = asyncio.Event()  # a client closed a connection

    async def __aenter__(self) -> "Scripted":
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                self.requests.append(head + await reader.readexactly(length))
                await self.answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.hung_up.set()
        finally:
            writer.close()


def ok(body: bytes = b"hello"):
    async def answer(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
    return answer


async def until(condition) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_one_connection_carries_request_after_request(tmp_path):
    async def scenario():
        async with Scripted(tmp_path / "w.sock", ok()) as server:
            transport = HTTP1Transport.unix(str(server.path), "deployment d1")
            for _ in range(3):
                upstream = await transport.send("POST", "/predict", [(b"x-a", b"1")], b'{"n": 1}')
                assert (upstream.status, await upstream.read()) == (200, b"hello")
            assert server.connections == 1
            assert server.requests[0] == (b"POST /predict HTTP/1.1\r\nhost: worker\r\n"
                                          b"content-length: 8\r\nx-a: 1\r\n\r\n{\"n\": 1}")
            await transport.close()

    asyncio.run(scenario())


def test_an_answer_left_unread_closes_its_connection(tmp_path):
    """The worker sees the client leave (its connection closes); the next request has a new one."""
    async def answer(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()  # ... and the rest never comes

    async def scenario():
        async with Scripted(tmp_path / "w.sock", answer) as server:
            transport = HTTP1Transport.unix(str(server.path), "deployment d1")
            async with await transport.send("GET", "/stream", [], b"") as upstream:
                assert await upstream.chunks.__anext__() == b"first"
            await asyncio.wait_for(server.hung_up.wait(), DEADLINE_S)
            server.answer = ok()
            assert await (await transport.send("GET", "/", [], b"")).read() == b"hello"
            assert server.connections == 2
            await transport.close()

    asyncio.run(scenario())


def test_a_chunked_answer_is_relayed_decoded(tmp_path):
    async def answer(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        await writer.drain()

    async def scenario():
        async with Scripted(tmp_path / "w.sock", answer) as server:
            transport = HTTP1Transport.unix(str(server.path), "deployment d1")
            assert await (await transport.send("GET", "/", [], b"")).read() == b"abcde"
            assert await (await transport.send("GET", "/", [], b"")).read() == b"abcde"
            assert server.connections == 1
            await transport.close()

    asyncio.run(scenario())


def test_a_worker_silent_past_the_read_timeout_is_a_504(tmp_path):
    async def answer(reader, writer):
        await asyncio.Event().wait()

    async def scenario():
        async with Scripted(tmp_path / "w.sock", answer) as server:
            transport = HTTP1Transport.unix(str(server.path), "deployment d1", read_timeout=0.2)
            with pytest.raises(UpstreamTimeout, match="runtime.request_timeout") as info:
                await transport.send("POST", "/predict", [], b"{}")
            assert info.value.status_code == 504
            await transport.close()

    asyncio.run(scenario())


def test_a_stream_that_stops_past_the_read_timeout_is_a_504(tmp_path):
    async def answer(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.Event().wait()

    async def scenario():
        async with Scripted(tmp_path / "w.sock", answer) as server:
            transport = HTTP1Transport.unix(str(server.path), "deployment d1", read_timeout=0.2)
            async with await transport.send("GET", "/", [], b"") as upstream:
                assert await upstream.chunks.__anext__() == b"first"
                with pytest.raises(UpstreamTimeout):
                    await upstream.chunks.__anext__()
            await transport.close()

    asyncio.run(scenario())


def test_a_worker_that_hangs_up_mid_answer_is_an_upstream_error(tmp_path):
    async def answer(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    async def scenario():
        async with Scripted(tmp_path / "w.sock", answer) as server:
            transport = HTTP1Transport.unix(str(server.path), "deployment d1")
            with pytest.raises(UpstreamError, match="deployment d1 did not answer"):
                await (await transport.send("GET", "/", [], b"")).read()
            await transport.close()

    asyncio.run(scenario())


def test_a_line_break_in_a_header_is_not_sent(tmp_path):
    """A value with CR or LF would end the header early and forge another: refused, unsent."""
    async def scenario():
        async with Scripted(tmp_path / "w.sock", ok()) as server:
            transport = HTTP1Transport.unix(str(server.path), "deployment d1")
            for header in [(b"x-a", b"1\r\nx-admin: yes"), (b"x-a", b"1\nx-b: 2"), (b"x-a", b"1\r")]:
                with pytest.raises(UpstreamError, match="line break"):
                    await transport.send("GET", "/", [header], b"")
            with pytest.raises(UpstreamError, match="line break"):
                await transport.send("GET", "/ HTTP/1.1\r\nx: y", [], b"")
            assert server.requests == []
            await transport.close()

    asyncio.run(scenario())


def test_a_large_answer_is_read_with_back_pressure(tmp_path, monkeypatch):
    """The socket is not read while more than HIGH_WATER bytes wait for the consumer."""
    monkeypatch.setattr(http1, "HIGH_WATER", 64 * 1024)
    size = 8 * 1024 * 1024

    async def answer(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"x" * size)
        await writer.drain()

    async def scenario():
        async with Scripted(tmp_path / "w.sock", answer) as server:
            transport = HTTP1Transport.unix(str(server.path), "deployment d1")
            upstream = await transport.send("GET", "/", [], b"")
            (conn,) = transport._open
            await until(lambda: not conn.transport.is_reading())
            assert len(await upstream.read()) == size
            await transport.close()

    asyncio.run(scenario())


def test_a_head_request_ends_at_the_headers(tmp_path):
    async def answer(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        await writer.drain()

    async def scenario():
        async with Scripted(tmp_path / "w.sock", answer) as server:
            transport = HTTP1Transport.unix(str(server.path), "deployment d1")
            upstream = await asyncio.wait_for(transport.send("HEAD", "/", [], b""), DEADLINE_S)
            assert (upstream.status, await asyncio.wait_for(upstream.read(), DEADLINE_S)) == (200, b"")
            await transport.close()

    asyncio.run(scenario())
