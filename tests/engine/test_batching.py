"""Continuous batching, disconnects and the bounded queue, against real worker processes."""

import concurrent.futures as cf
import subprocess
import time

import httpx
import openai
import pytest

from tests.engine.conftest import EXAMPLES, free_port, start_worker, worker_command

PROMPTS = ["Hi", "What is 2+2?", "Name a color.", "Translate to French: cat"]


def ask(client, slug, content, **kw):
    return client.chat.completions.create(
        model=slug, messages=[{"role": "user", "content": content}], temperature=0, max_tokens=20, **kw
    ).choices[0].message.content


def wait_for(predicate, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_batched_sequences_equal_their_solo_outputs(client, slug, worker):
    solo = [ask(client, slug, p) for p in PROMPTS]
    reused = worker.health()["reused_prompt_tokens"]
    with cf.ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda p: ask(client, slug, p), PROMPTS))
    assert together == solo
    # the default system prompt is shared: later requests start from cached KV
    assert worker.health()["reused_prompt_tokens"] > reused


def test_prefix_copied_from_a_running_sequence_gives_the_same_output(client, slug, worker):
    long_user = "Please answer carefully. " * 20 + "What is 2+2?"
    solo = ask(client, slug, long_user)
    other = long_user.replace("2+2", "3+3")
    solo_other = ask(client, slug, other)
    with cf.ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda p: ask(client, slug, p), [long_user, other])
    assert (a, b) == (solo, solo_other)


def test_several_sequences_decode_at_once(client, slug, worker):
    streams = [client.chat.completions.create(
        model=slug, messages=[{"role": "user", "content": p}], max_tokens=200, stream=True,
        extra_body={"ignore_eos": True}) for p in PROMPTS[:3]]
    try:
        # all three are admitted together: none waits for another to finish
        wait_for(lambda: worker.health()["active_sequences"] == 3, "three active sequences")
        assert worker.health()["waiting_requests"] == 0
    finally:
        for s in streams:
            s.close()
    wait_for(lambda: worker.health()["active_sequences"] == 0, "the closed streams to be freed")


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """A worker with one sequence slot and no queue."""
    w = start_worker(EXAMPLES / "smollm2-single", tmp_path_factory.mktemp("single") / "worker.log")
    yield w
    w.stop()


def long_stream(client, slug):
    return client.chat.completions.create(
        model=slug, messages=[{"role": "user", "content": "Tell me a long story."}], max_tokens=240,
        stream=True, extra_body={"ignore_eos": True})


def test_full_queue_is_429_and_a_closed_stream_frees_the_slot(single, slug):
    client = single.client()
    stream = long_stream(client, slug)
    next(iter(stream))
    with pytest.raises(openai.RateLimitError) as e:
        ask(client, slug, "Hi")
    assert "queue" in e.value.body["message"] and e.value.body["type"] == "rate_limit_error"
    with pytest.raises(openai.RateLimitError):  # a stream is refused before it starts, too
        long_stream(client, slug)
    cancelled = single.health()["cancelled_sequences"]
    stream.close()
    wait_for(lambda: single.health()["active_sequences"] == 0, "the slot to be freed")
    assert single.health()["cancelled_sequences"] == cancelled + 1
    assert ask(client, slug, "Hi")  # the slot is usable again


def test_a_client_that_gives_up_on_a_non_streaming_request_frees_its_slot(single, slug):
    body = {"model": slug, "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": 240, "ignore_eos": True}
    cancelled = single.health()["cancelled_sequences"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{single.url}/v1/chat/completions", json=body, timeout=httpx.Timeout(30, read=0.5))
    wait_for(lambda: single.health()["cancelled_sequences"] == cancelled + 1, "the request to be cancelled")
    assert single.health()["active_sequences"] == 0


def test_a_model_that_fails_to_load_says_so(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.yaml").write_text(
        "engine:\n  weights: missing.gguf\n  slug: test/broken\n  context_length: 128\n  max_batch: 1\n")
    port = free_port()
    log = open(tmp_path / "log", "wb")
    proc = subprocess.Popen(worker_command(folder, port), stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"

        def health():
            try:
                r = httpx.get(f"{url}/health", timeout=2)
            except httpx.TransportError:
                return None
            return r if r.json().get("status") == "failed" else None

        r = wait_for(health, "the worker to report the failure")
        assert r.status_code == 503 and "missing.gguf" in r.json()["error"]
        models = httpx.get(f"{url}/v1/models", timeout=5)
        assert models.status_code == 503
        assert "failed to load" in models.json()["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(30)
