"""`/v1/completions` with the official openai client: prompt forms, echo, logprobs, stops, streaming."""

import openai
import pytest

PROMPT = "The capital of France is"


def complete(client, slug, prompt=PROMPT, **kw):
    kw.setdefault("max_tokens", 12)
    kw.setdefault("temperature", 0)
    extra = {k: kw.pop(k) for k in list(kw) if k in ("ignore_eos", "min_tokens", "truncate_prompt_tokens",
                                                     "top_k", "bad", "add_special_tokens")}
    return client.completions.create(model=slug, prompt=prompt, extra_body=extra or None, **kw)


@pytest.fixture(scope="module")
def greedy(client, slug):
    return complete(client, slug)


def test_shape_and_usage(greedy, vocab):
    assert greedy.id.startswith("cmpl-") and greedy.object == "text_completion"
    assert greedy.choices[0].text.startswith(" Paris")
    assert greedy.choices[0].finish_reason == "length"
    n_prompt = len(vocab.tokenize(PROMPT, add_special=True, parse_special=True))
    assert (greedy.usage.prompt_tokens, greedy.usage.completion_tokens) == (n_prompt, 12)


def test_token_id_prompt_equals_text_prompt(client, slug, greedy, vocab):
    ids = vocab.tokenize(PROMPT, add_special=True, parse_special=True)
    assert complete(client, slug, prompt=ids).choices[0].text == greedy.choices[0].text


def test_echo_prepends_the_prompt(client, slug, greedy):
    assert complete(client, slug, echo=True).choices[0].text == PROMPT + greedy.choices[0].text


def test_stream_equals_non_stream_with_usage(client, slug, greedy):
    chunks = list(complete(client, slug, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == greedy.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_logprobs_completions_shape(client, slug, greedy):
    out = complete(client, slug, logprobs=2, max_tokens=5)
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert "".join(lp.tokens) == out.choices[0].text
    assert all(len(top) == 2 and max(top.values()) == pytest.approx(v) for top, v in
               zip(lp.top_logprobs, lp.token_logprobs))
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0


def test_stop_on_completions(client, slug, greedy):
    full = greedy.choices[0].text
    out = complete(client, slug, stop=[" is"]) if " is" in full else complete(client, slug, stop=["."])
    stop = " is" if " is" in full else "."
    assert out.choices[0].text == full[: full.index(stop)] and out.choices[0].finish_reason == "stop"


def test_multibyte_text_streams_without_broken_characters(client, slug):
    prompt = "Emoji party: 🎉🎉🎉 🙂🙂🙂 🚀🚀"
    # greedy: rockets, three byte-tokens each; 15 tokens end on a character boundary
    chunks = [c.choices[0].text for c in complete(client, slug, prompt=prompt, max_tokens=15, stream=True,
                                                  ignore_eos=True)]
    whole = complete(client, slug, prompt=prompt, max_tokens=15, ignore_eos=True).choices[0].text
    assert "".join(chunks) == whole == "🚀" * 5
    assert all("\ufffd" not in c for c in chunks)


def test_prompt_over_the_context_is_a_400_naming_prompt(client, slug):
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, slug, prompt="word " * 700)
    assert e.value.body["param"] == "prompt" and "512" in e.value.body["message"]


def test_out_of_vocabulary_prompt_ids_are_a_400(client, slug):
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, slug, prompt=[1, 2, 10_000_000])
    assert e.value.body["param"] == "prompt"
