"""Generators are streamed as produced; a disconnect closes them; the slot frees at exhaustion."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from support import EXAMPLES, wait_for

from .conftest import assert_truss_error


def test_sync_generator_streams_text(workers):
    worker = workers.start(EXAMPLES / "streaming")
    with worker.client() as c, c.stream("POST", "/predict", json={"text": "to be or not", "repeat": 2}) as res:
        assert res.status_code == 200
        assert res.headers["content-type"] == "text/plain; charset=utf-8"
        assert "content-length" not in res.headers
        assert res.read() == b"to be or not to be or not "


GATED_STREAM = """
    import os, time

    class Model:
        def predict(self, model_input):
            yield "first\\n"
            # Only continues once the test has *received* the first chunk.
            while not os.path.exists(os.environ["STREAM_GATE"]):
                time.sleep(0.02)
            yield "second\\n"
"""


def test_chunks_reach_the_client_before_the_generator_ends(workers, model_folder, tmp_path):
    gate = tmp_path / "stream-gate"
    worker = workers.start(model_folder(GATED_STREAM), env={"STREAM_GATE": str(gate)})
    with worker.client() as c, c.stream("POST", "/predict", json={}) as res:
        chunks = res.iter_raw()
        assert next(chunks) == b"first\n"
        gate.touch()
        assert b"".join(chunks) == b"second\n"


MIXED_CHUNKS = """
    from pydantic import BaseModel

    class Token(BaseModel):
        text: str
        index: int

    class Model:
        async def predict(self, model_input):
            if model_input.get("kind") == "bytes":
                yield b"\\x00\\x01"
                yield b"\\x02"
                return
            yield {"text": "a", "index": 0}
            yield Token(text="b", index=1)
"""


def test_json_chunks_are_json_lines_and_bytes_pass_through(workers, model_folder):
    worker = workers.start(model_folder(MIXED_CHUNKS))
    with worker.client() as c:
        lines = c.post("/predict", json={})
        raw = c.post("/predict", json={"kind": "bytes"})
    assert lines.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in lines.text.splitlines()] == [
        {"text": "a", "index": 0},
        {"text": "b", "index": 1},
    ]
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.content == b"\x00\x01\x02"


FAILING_STREAMS = """
    from fastapi import HTTPException

    class Model:
        def predict(self, model_input):
            when = model_input["fail"]
            if when == "teapot":
                raise HTTPException(418, "short and stout")
            if when == "first":
                raise KeyError("secret internal detail")
            yield "one\\n"
            raise RuntimeError("broke mid-stream")
"""


@pytest.fixture(scope="module")
def failing(workers, model_folder):
    return workers.start(model_folder(FAILING_STREAMS))


def test_generator_error_before_first_chunk_is_a_500(failing):
    with failing.client() as c:
        res = c.post("/predict", json={"fail": "first"})
    message = assert_truss_error(res, 500, "600")
    assert "secret internal detail" not in message
    assert "KeyError: 'secret internal detail'" in failing.log()


def test_generator_http_exception_before_first_chunk_keeps_status(failing):
    with failing.client() as c:
        res = c.post("/predict", json={"fail": "teapot"})
    assert assert_truss_error(res, 418, "700") == "short and stout"


def test_generator_error_mid_stream_breaks_the_stream(failing):
    with failing.client() as c, c.stream("POST", "/predict", json={"fail": "later"}) as res:
        assert res.status_code == 200
        chunks = res.iter_raw()
        assert next(chunks) == b"one\n"
        with pytest.raises(httpx.RemoteProtocolError):
            b"".join(chunks)
    assert "RuntimeError: broke mid-stream" in failing.log()


def test_slow_reader_does_not_hold_the_slot(workers):
    # predict_concurrency is 1. The first stream is ~32 MB, far more than the socket buffers hold,
    # so its generator can only finish (and free the slot) if the runtime buffers it for the
    # slow client. The second request must then be served while the first is still unread.
    worker = workers.start(EXAMPLES / "streaming")
    big = {"text": "x" * 256_000, "repeat": 128}
    with worker.client() as slow, slow.stream("POST", "/predict", json=big) as res:
        chunks = res.iter_raw()
        first = next(chunks)
        with worker.client() as other:
            second = other.post("/predict", json={"text": "still served"})
        assert second.text == "still served "
        assert len(first) + sum(len(c) for c in chunks) == 256_001 * 128


def record_lines(path):
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def request_aware(workers, tmp_path_factory):
    log = tmp_path_factory.mktemp("aware") / "events.log"
    worker = workers.start(EXAMPLES / "request_aware", env={"REQUEST_AWARE_LOG": str(log)})
    return worker, log


def test_disconnect_closes_an_async_generator(request_aware):
    worker, log = request_aware
    log.unlink(missing_ok=True)
    with worker.client() as c, c.stream("POST", "/predict", json={"stream": True, "steps": 2000}) as res:
        chunks = res.iter_lines()
        assert next(chunks) == "tick 0"
        assert next(chunks) == "tick 1"
    # The client is gone: trestle closed the generator, so its finally ran long before 2000 ticks.
    closed = wait_for(lambda: [l for l in record_lines(log) if l.startswith("stream closed")], "the generator to close")
    assert int(closed[0].split()[3]) < 2000


def test_model_sees_is_disconnected(request_aware):
    worker, log = request_aware
    log.unlink(missing_ok=True)

    async def call_then_leave():
        transport = httpx.AsyncHTTPTransport()
        async with httpx.AsyncClient(base_url=worker.url, transport=transport, timeout=30) as c:
            task = asyncio.create_task(c.post("/predict", json={"steps": 2000}))
            while "started" not in record_lines(log):
                await asyncio.sleep(0.02)
            task.cancel()  # closes the connection mid-request
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(call_then_leave())
    seen = wait_for(lambda: [l for l in record_lines(log) if l.startswith("disconnected")], "the model to notice")
    assert int(seen[0].split()[2]) < 2000


SYNC_STREAM_WITH_FINALLY = """
    import os, time

    class Model:
        def predict(self, model_input):
            sent = 0
            try:
                while sent < 2000:
                    yield f"chunk {sent}\\n"
                    sent += 1
                    time.sleep(0.02)
            finally:
                with open(os.environ["FINALLY_LOG"], "w") as f:
                    f.write(f"closed after {sent}")
"""


def test_disconnect_closes_a_sync_generator(workers, model_folder, tmp_path):
    done = tmp_path / "finally.log"
    worker = workers.start(model_folder(SYNC_STREAM_WITH_FINALLY), env={"FINALLY_LOG": str(done)})
    with worker.client() as c, c.stream("POST", "/predict", json={}) as res:
        assert next(res.iter_lines()) == "chunk 0"
    text = wait_for(lambda: done.exists() and done.read_text(), "the sync generator's finally")
    assert int(text.split()[-1]) < 2000
    with worker.client() as c:  # the slot was freed: the next stream is served
        with c.stream("POST", "/predict", json={}) as res:
            assert next(res.iter_lines()) == "chunk 0"
