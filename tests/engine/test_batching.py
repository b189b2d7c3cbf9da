"""Continuous batching, disconnects and the bounded queue, against real worker processes."""

import concurrent.futures as cf
import uuid

import httpx
import openai
import pytest

from support import EXAMPLES, start_worker, wait_for

PROMPTS = ["Hi", "What is 2+2?", "Name a color.", "Translate to French: cat"]


def ask(client, slug, content, **kw):
    return client.chat.completions.create(
        model=slug, messages=[{"role": "user", "content": content}], temperature=0, max_tokens=20, **kw
    ).choices[0].message.content


def test_batched_sequences_equal_their_solo_outputs(client, slug, worker):
    solo = [ask(client, slug, p) for p in PROMPTS]
    reused = worker.stats()["reused_prompt_tokens"]
    with cf.ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda p: ask(client, slug, p), PROMPTS))
    assert together == solo
    # the default system prompt is shared: later requests start from cached KV
    assert worker.stats()["reused_prompt_tokens"] > reused


def test_a_prompt_found_in_the_cache_gives_what_computing_it_gave(client, slug, worker):
    """The same request twice: the first computes its prompt, the second finds all of it but
    the last token in the prefix cache. Same seed, so the same text and the same logprobs, to
    the last bit. (llama.cpp computes a batch of 64 tokens or more another way than a smaller
    one, with logits that differ by up to ~0.7: the part of the prompt never seen is longer.)"""
    content = f"{uuid.uuid4()}: " + "Please answer carefully. " * 20 + "Name a prime number."

    def once():
        return client.chat.completions.create(
            model=slug, messages=[{"role": "user", "content": content}], temperature=1, seed=11,
            max_tokens=12, logprobs=True, top_logprobs=3)

    computed = once()
    reused = worker.stats()["reused_prompt_tokens"]
    cached = once()
    assert worker.stats()["reused_prompt_tokens"] - reused == computed.usage.prompt_tokens - 1
    assert cached.choices[0].message.content == computed.choices[0].message.content
    assert cached.choices[0].logprobs.model_dump() == computed.choices[0].logprobs.model_dump()


def test_prefix_copied_from_a_running_sequence_gives_the_same_output(client, slug, worker):
    long_user = "Please answer carefully. " * 20 + "What is 2+2?"
    other = long_user.replace("2+2", "3+3")
    solo = ask(client, slug, long_user, extra_body={"ignore_eos": True})
    solo_other = ask(client, slug, other)
    # The first request runs until the context is full, so it is still decoding when the second
    # arrives: the second copies the shared prompt from it instead of computing it.
    first = client.chat.completions.create(
        model=slug, messages=[{"role": "user", "content": long_user}], temperature=0, max_tokens=300,
        stream=True, extra_body={"ignore_eos": True})
    try:
        chunks = iter(first)
        text = ""
        while not text:
            text += next(chunks).choices[0].delta.content or ""
        before = worker.stats()
        assert before["active_sequences"] == 1, before
        second = ask(client, slug, other)
        after = worker.stats()
        # the two overlapped: the first is still running after the second has finished
        assert after["active_sequences"] == 1, "the first request ended before the second ran"
        # the second started from the first's cache: at least the repeated sentence
        assert after["shared_prompt_tokens"] - before["shared_prompt_tokens"] >= 80, (before, after)
        while len(text) < len(solo):
            text += next(chunks).choices[0].delta.content or ""
    finally:
        first.close()
    assert second == solo_other
    assert text.startswith(solo)
    wait_for(lambda: worker.stats()["active_sequences"] == 0, "the closed stream to be freed")


def test_several_sequences_decode_at_once(client, slug, worker):
    streams = [client.chat.completions.create(
        model=slug, messages=[{"role": "user", "content": p}], max_tokens=200, stream=True,
        extra_body={"ignore_eos": True}) for p in PROMPTS[:3]]
    try:
        # all three are admitted together: none waits for another to finish
        wait_for(lambda: worker.stats()["active_sequences"] == 3, "three active sequences")
        assert worker.stats()["waiting_requests"] == 0
    finally:
        for s in streams:
            s.close()
    wait_for(lambda: worker.stats()["active_sequences"] == 0, "the closed streams to be freed")


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
    client = single.openai()
    stream = long_stream(client, slug)
    next(iter(stream))
    with pytest.raises(openai.RateLimitError) as e:
        ask(client, slug, "Hi")
    assert "queue" in e.value.body["message"] and e.value.body["type"] == "rate_limit_error"
    with pytest.raises(openai.RateLimitError):  # a stream is refused before it starts, too
        long_stream(client, slug)
    cancelled = single.stats()["cancelled_sequences"]
    stream.close()
    wait_for(lambda: single.stats()["active_sequences"] == 0, "the slot to be freed")
    assert single.stats()["cancelled_sequences"] == cancelled + 1
    assert ask(client, slug, "Hi")  # the slot is usable again


def test_a_client_that_gives_up_on_a_non_streaming_request_frees_its_slot(single, slug):
    body = {"model": slug, "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": 240, "ignore_eos": True}
    cancelled = single.stats()["cancelled_sequences"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{single.url}/v1/chat/completions", json=body, timeout=httpx.Timeout(30, read=0.5))
    # the counter moves when the client leaves; the slot is freed at the engine's next step
    stats = wait_for(lambda: (s := single.stats())["cancelled_sequences"] > cancelled
                     and s["active_sequences"] == 0 and s, "the request to be cancelled and freed")
    assert stats["cancelled_sequences"] == cancelled + 1


def test_a_model_that_fails_to_load_says_so(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.yaml").write_text(
        "engine:\n  weights: missing.gguf\n  slug: test/broken\n  context_length: 128\n  max_batch: 1\n")
    worker = start_worker(folder, tmp_path / "log", wait="settled")
    try:
        r = worker.health()
        assert r.status_code == 503 and r.json()["status"] == "failed" and "missing.gguf" in r.json()["error"]
        with worker.client() as http:
            models = http.get("/v1/models")
        assert models.status_code == 503
        assert "failed to load" in models.json()["error"]["message"]
    finally:
        worker.stop()
