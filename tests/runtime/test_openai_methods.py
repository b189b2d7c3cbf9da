"""chat_completions / completions on the Model, called with the official openai client."""

from __future__ import annotations

import httpx
import openai
import pytest

from support import EXAMPLES


@pytest.fixture(scope="module")
def worker(workers):
    return workers.start(EXAMPLES / "openai_methods")


@pytest.fixture(scope="module")
def client(worker):
    with openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_chat_completion(client):
    res = client.chat.completions.create(
        model="echo", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    )
    assert res.choices[0].message.content == "You said: hi there"
    assert res.choices[0].finish_reason == "stop"
    assert res.usage.completion_tokens == 4


def test_chat_completion_stream(client):
    stream = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "stream me please"}], stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "You said: stream me please"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_completion_and_stream(client):
    res = client.completions.create(model="echo", prompt="once upon a time", max_tokens=4)
    assert res.choices[0].text == "You said: once upon"
    stream = client.completions.create(model="echo", prompt="once upon", stream=True)
    assert "".join(c.choices[0].text for c in stream) == "You said: once upon"


def test_stream_is_server_sent_events_ending_with_done(worker):
    with httpx.Client(base_url=worker.url) as c:
        res = c.post("/v1/completions", json={"prompt": "a b", "stream": True})
    assert res.headers["content-type"].startswith("text/event-stream")
    events = res.text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events[:-1])
