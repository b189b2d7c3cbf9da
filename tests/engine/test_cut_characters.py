"""A completion cut by `max_tokens` inside a multi-byte character ends before that character.

SmolLM2 writes emoji as several byte tokens, so a small `max_tokens` can stop between the bytes
of one character: the answer must end with the last whole character (never U+FFFD), streamed
or not, while `usage` still counts every generated token.
"""

from __future__ import annotations

import pytest

CHAT = [{"role": "user", "content": "Say hello with an emoji."}]  # greedy: a row of 🌟
PROMPT = "🙂🚀🙂🚀"  # greedy: a row of 🚀


def whole_characters(data: bytes) -> str:
    """`data` without the bytes of an unfinished last character."""
    for cut in range(4):
        try:
            return data[: len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    raise AssertionError(f"not UTF-8: {data!r}")


def ends_mid_character(data: bytes) -> bool:
    return whole_characters(data).encode("utf-8") != data


def chat(client, slug, n: int, **kw):
    return client.chat.completions.create(model=slug, messages=CHAT, max_tokens=n, temperature=0, **kw)


def test_chat_cut_inside_a_character_drops_its_bytes(client, slug):
    tokens = chat(client, slug, 8, logprobs=True).choices[0].logprobs.content
    data = [b"".join(bytes(t.bytes) for t in tokens[:n]) for n in range(len(tokens) + 1)]
    cuts = [n for n in range(1, len(tokens) + 1) if ends_mid_character(data[n])]
    assert cuts, "the prompt no longer makes the model stop inside a character"
    for n in cuts[:3]:
        r = chat(client, slug, n)
        assert r.choices[0].finish_reason == "length"
        assert r.choices[0].message.content == whole_characters(data[n])
        assert r.usage.completion_tokens == n
        stream = chat(client, slug, n, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == whole_characters(data[n])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_completion_cut_inside_a_character_drops_its_bytes(client, slug, stream):
    def complete(n: int) -> str:
        r = client.completions.create(model=slug, prompt=PROMPT, max_tokens=n, temperature=0, stream=stream)
        if stream:
            return "".join(c.choices[0].text for c in r if c.choices)
        assert r.usage.completion_tokens == n
        return r.choices[0].text

    full = complete(12)
    texts = [complete(n) for n in range(1, 8)]
    assert all("\ufffd" not in t for t in [full, *texts]), texts
    assert all(full.startswith(t) for t in texts)
    # some of the cuts fell inside a character: a token that completed nothing added no text
    assert len(set(texts)) < len(texts), texts
