"""The built-in Model API driven by client libraries nobody here wrote, against a real `trestle serve`.

Each test is a call a user of that library makes as the library's docs show it: LangChain's
`ChatOpenAI(max_tokens=N)` (which sends `max_completion_tokens`), LiteLLM pointed at the
gateway as an OpenAI-compatible base, and the openai client sending a reply back into the
conversation as `message.model_dump()`.
"""

from __future__ import annotations

import os

import openai
import pytest

from support import SLUG


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)


def test_langchain_chat_openai_invoke_and_stream(server):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model=SLUG, base_url=f"{server.url}/v1", api_key=server.api_key, max_tokens=8,
        temperature=0, max_retries=0,
    )
    reply = llm.invoke("What is the capital of France?")
    assert reply.content
    assert reply.usage_metadata["output_tokens"] <= 8
    assert reply.response_metadata["system_fingerprint"].startswith("fp_")

    chunks = list(llm.stream("What is the capital of France?"))
    assert "".join(c.content for c in chunks) == reply.content  # greedy: the same answer


def test_litellm_completion_against_the_gateway(server):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
    litellm = pytest.importorskip("litellm", reason="litellm is installed by hand (see pyproject.toml)")

    kwargs = dict(
        model=f"openai/{SLUG}", api_base=f"{server.url}/v1", api_key=server.api_key,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0, max_retries=0,
    )
    reply = litellm.completion(max_tokens=8, **kwargs)
    text = reply.choices[0].message.content
    assert text and reply.usage.completion_tokens <= 8
    # LiteLLM users pass OpenAI's newer name too; it reaches trestle as such and means the same.
    again = litellm.completion(max_completion_tokens=8, **kwargs)
    assert again.choices[0].message.content == text
    streamed = litellm.completion(max_tokens=8, stream=True, **kwargs)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == text


def test_an_assistant_reply_sent_back_as_model_dump_continues_the_conversation(client):
    messages = [{"role": "user", "content": "Say hello."}]
    first = client.chat.completions.create(model=SLUG, messages=messages, max_tokens=8, temperature=0)
    dumped = first.choices[0].message.model_dump()
    assert {"refusal", "annotations", "audio", "function_call", "tool_calls"} <= set(dumped)
    messages += [dumped, {"role": "user", "content": "Again, please."}]
    second = client.chat.completions.create(model=SLUG, messages=messages, max_tokens=8, temperature=0)
    assert second.choices[0].message.content
    assert second.usage.prompt_tokens > first.usage.prompt_tokens  # the reply is in the prompt


def test_explicit_nulls_from_the_sdk_mean_the_defaults(client):
    base = dict(model=SLUG, messages=[{"role": "user", "content": "Name a colour."}], temperature=0)
    plain = client.chat.completions.create(max_tokens=6, **base)
    nulls = client.chat.completions.create(
        max_completion_tokens=6, max_tokens=None, top_p=None, n=None, stream=None, logprobs=None,
        top_logprobs=None, frequency_penalty=None, presence_penalty=None, parallel_tool_calls=None,
        extra_body={"top_k": None, "min_p": None, "repetition_penalty": None, "echo": None}, **base,
    )
    assert nulls.choices[0].message.content == plain.choices[0].message.content
    assert nulls.usage.completion_tokens == plain.usage.completion_tokens


def test_developer_role_is_the_system_role(client):
    def ask(role: str):
        return client.chat.completions.create(
            model=SLUG, max_tokens=8, temperature=0,
            messages=[{"role": role, "content": "Answer in French."}, {"role": "user", "content": "Hi"}],
        )

    dev, system = ask("developer"), ask("system")
    assert dev.usage.prompt_tokens == system.usage.prompt_tokens
    assert dev.choices[0].message.content == system.choices[0].message.content


def test_models_retrieve_with_a_slug_that_has_a_slash(client):
    assert "/" in SLUG
    card = client.models.retrieve(SLUG)
    assert (card.id, card.object) == (SLUG, "model")
    assert card.owned_by and card.created > 0
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("nobody/no-such-model")
    assert info.value.body["param"] == "model"
    assert "no-such-model" in info.value.body["message"]


def test_system_fingerprint_on_responses_and_every_chunk(client):
    kwargs = dict(model=SLUG, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0)
    whole = client.chat.completions.create(**kwargs)
    fp = whole.system_fingerprint
    assert fp and fp.startswith("fp_")
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert len(chunks) >= 3 and {c.system_fingerprint for c in chunks} == {fp}
    done = client.completions.create(model=SLUG, prompt="One, two,", max_tokens=2, temperature=0)
    assert done.system_fingerprint == fp  # one engine, one build, one weights file
