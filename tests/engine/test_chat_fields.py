"""Every seed-004 field on `/v1/chat/completions`, through the official openai client, against a
real engine worker running SmolLM2. Each test would fail if its field were ignored."""

import hashlib

import openai
import pytest

Q = [{"role": "user", "content": "What is the capital of France?"}]


def chat(client, slug, messages=Q, **kw):
    kw.setdefault("max_tokens", 16)
    extra = {k: kw.pop(k) for k in list(kw) if k in EXTRA}
    return client.chat.completions.create(model=slug, messages=messages, extra_body=extra or None, **kw)


EXTRA = {
    "top_k", "min_p", "top_p_min", "repetition_penalty", "length_penalty", "early_stopping", "bad",
    "bad_token_ids", "stop_token_ids", "include_stop_str_in_output", "ignore_eos", "min_tokens",
    "skip_special_tokens", "spaces_between_special_tokens", "truncate_prompt_tokens", "echo",
    "add_generation_prompt", "add_special_tokens", "documents", "chat_template",
    "chat_template_args", "disaggregated_params",
}


def text(resp) -> str:
    return resp.choices[0].message.content


@pytest.fixture(scope="module")
def greedy(client, slug):
    return chat(client, slug, temperature=0, max_tokens=24, logprobs=True)


def token_ids(vocab, resp) -> list[int]:
    """The ids of the generated tokens, from their bytes in the logprobs."""
    table = {vocab.piece(t, special=True): t for t in range(vocab.info.n_vocab)}
    return [table[bytes(c.bytes)] for c in resp.choices[0].logprobs.content]


def test_basic_shape_and_usage(greedy):
    assert greedy.id.startswith("chatcmpl-") and greedy.object == "chat.completion"
    assert greedy.choices[0].message.role == "assistant" and text(greedy)
    assert greedy.choices[0].finish_reason == "length"
    assert greedy.usage.prompt_tokens == 37  # SmolLM2's default system prompt + the question
    assert greedy.usage.completion_tokens == 24
    assert greedy.usage.total_tokens == 61


def test_greedy_stream_equals_non_stream_and_reports_usage(client, slug, greedy):
    chunks = list(chat(client, slug, temperature=0, max_tokens=24, stream=True,
                       stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == text(greedy)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24
    assert chunks[-1].usage.prompt_tokens == greedy.usage.prompt_tokens
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")


def test_seed_reproducible_and_different_seeds_differ(client, slug):
    kw = dict(temperature=1.0, top_k=-1, max_tokens=16)
    a = text(chat(client, slug, seed=7, **kw))
    assert text(chat(client, slug, seed=7, **kw)) == a
    assert text(chat(client, slug, seed=8, **kw)) != a
    stream = chat(client, slug, seed=7, stream=True, **kw)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == a


@pytest.mark.parametrize("field", [{"top_k": 1}, {"top_p": 1e-6}, {"min_p": 1.0}])
def test_filters_that_keep_only_the_best_token_give_greedy(client, slug, greedy, field):
    free = text(chat(client, slug, temperature=1.5, top_k=-1, seed=3, max_tokens=24))
    assert free != text(greedy)  # unfiltered sampling wanders off
    kw = {"top_k": -1, **field}
    assert text(chat(client, slug, temperature=1.5, seed=3, max_tokens=24, **kw)) == text(greedy)


def test_top_p_min_changes_sampling(client, slug):
    kw = dict(temperature=1.0, top_k=-1, seed=11, max_tokens=24)
    assert text(chat(client, slug, top_p_min=0.01, **kw)) != text(chat(client, slug, **kw))


@pytest.mark.parametrize("field", [{"frequency_penalty": 2.0}, {"presence_penalty": 2.0},
                                   {"repetition_penalty": 1.8}])
def test_penalties_change_the_greedy_output(client, slug, greedy, field):
    out = text(chat(client, slug, temperature=0, max_tokens=24, **field))
    assert out and out != text(greedy)


def test_logit_bias_forces_a_token(client, slug, vocab):
    (tok,) = vocab.tokenize(" banana", add_special=False, parse_special=False)
    out = chat(client, slug, temperature=0, max_tokens=4, logit_bias={str(tok): 100})
    assert text(out) == " banana" * 4


def test_bad_phrase_never_appears(client, slug, greedy):
    phrase = "Marseillaise"
    assert phrase in text(greedy)
    out = text(chat(client, slug, temperature=0, max_tokens=24, bad=[phrase]))
    assert phrase not in out and out != text(greedy)


def test_bad_token_ids_are_avoided(client, slug, vocab, greedy):
    first = token_ids(vocab, greedy)[0]
    out = chat(client, slug, temperature=0, max_tokens=6, logprobs=True, bad_token_ids=[first])
    assert first not in token_ids(vocab, out)


def test_stop_string_is_cut_and_optionally_included(client, slug, greedy):
    full = text(greedy)
    stop = "Marseillaise"
    before = full[: full.index(stop)]
    cut = chat(client, slug, temperature=0, max_tokens=24, stop=[stop])
    assert text(cut) == before and cut.choices[0].finish_reason == "stop"
    kept = chat(client, slug, temperature=0, max_tokens=24, stop=stop, include_stop_str_in_output=True)
    assert text(kept) == before + stop
    chunks = [c.choices[0].delta.content or "" for c in
              chat(client, slug, temperature=0, max_tokens=24, stop=[stop], stream=True) if c.choices]
    assert "".join(chunks) == before  # no piece of the stop string leaked into the stream


def test_stop_token_ids_end_generation(client, slug, vocab, greedy):
    ids = token_ids(vocab, greedy)
    out = chat(client, slug, temperature=0, max_tokens=24, stop_token_ids=[ids[2]], logprobs=True)
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.completion_tokens == 3
    assert text(out) == text(greedy)[: len(text(out))]


SHORT = [{"role": "user", "content": "Hi"}]  # greedy: "Hello! How can I assist you today?" then <|im_end|>


def test_min_tokens_and_ignore_eos(client, slug):
    natural = chat(client, slug, SHORT, temperature=0, max_tokens=40)
    assert natural.choices[0].finish_reason == "stop"
    n = natural.usage.completion_tokens
    longer = chat(client, slug, SHORT, temperature=0, max_tokens=40, min_tokens=n + 5)
    assert longer.usage.completion_tokens >= n + 5
    forced = chat(client, slug, SHORT, temperature=0, max_tokens=n + 8, ignore_eos=True)
    assert forced.usage.completion_tokens == n + 8 and forced.choices[0].finish_reason == "length"


def test_logprobs_and_top_logprobs_shape(client, slug):
    out = chat(client, slug, temperature=0, max_tokens=5, logprobs=True, top_logprobs=3)
    content = out.choices[0].logprobs.content
    assert len(content) == 5
    for entry in content:
        assert entry.logprob <= 0 and bytes(entry.bytes).decode() == entry.token
        assert len(entry.top_logprobs) == 3
        lps = [t.logprob for t in entry.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        assert entry.top_logprobs[0].token == entry.token  # greedy picks the most likely
    assert "".join(e.token for e in content) == text(out)
    plain = chat(client, slug, temperature=0, max_tokens=5)
    assert plain.choices[0].logprobs is None


def test_special_tokens_skipped_or_shown(client, slug):
    force = {"logit_bias": {"1": 100}, "temperature": 0, "max_tokens": 3}  # 1 = <|im_start|>
    assert text(chat(client, slug, **force)) == ""
    assert text(chat(client, slug, skip_special_tokens=False, **force)) == "<|im_start|> <|im_start|> <|im_start|>"
    assert text(chat(client, slug, skip_special_tokens=False, spaces_between_special_tokens=False,
                     **force)) == "<|im_start|>" * 3


def test_echo_and_add_generation_prompt(client, slug, vocab):
    msgs = [*Q, {"role": "assistant", "content": "The capital of France is"}]
    cont = chat(client, slug, msgs, temperature=0, max_tokens=4, add_generation_prompt=False)
    echoed = chat(client, slug, msgs, temperature=0, max_tokens=4, add_generation_prompt=False, echo=True)
    assert text(echoed) == "The capital of France is" + text(cont)
    with_prompt = chat(client, slug, msgs, temperature=0, max_tokens=1)
    gen_prompt = vocab.tokenize("<|im_start|>assistant\n", add_special=False, parse_special=True)
    assert with_prompt.usage.prompt_tokens - cont.usage.prompt_tokens == len(gen_prompt)


def test_add_special_tokens_adds_bos_when_the_template_did_not(client, slug, greedy):
    plain = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    without = chat(client, slug, temperature=0, max_tokens=1, chat_template=plain)
    added = chat(client, slug, temperature=0, max_tokens=1, chat_template=plain, add_special_tokens=True)
    assert added.usage.prompt_tokens == without.usage.prompt_tokens + 1
    # SmolLM2's own template starts with its BOS (<|im_start|>): nothing is added twice
    again = chat(client, slug, temperature=0, max_tokens=1, add_special_tokens=True)
    assert again.usage.prompt_tokens == greedy.usage.prompt_tokens


def test_custom_chat_template_args_and_documents(client, slug, vocab):
    def count(s):
        return len(vocab.tokenize(s, add_special=False, parse_special=True))

    tmpl = "{{ greeting }}{% for d in documents or [] %}[{{ d['text'] }}]{% endfor %}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    base = dict(temperature=0, max_tokens=1, chat_template=tmpl)
    out = chat(client, slug, chat_template_args={"greeting": "Hi! "}, **base)
    assert out.usage.prompt_tokens == count("Hi! What is the capital of France?")
    docs = chat(client, slug, chat_template_args={"greeting": ""},
                documents=[{"text": "Paris is the capital."}], **base)
    assert docs.usage.prompt_tokens == count("[Paris is the capital.]What is the capital of France?")


def test_chat_template_sandbox_escape_is_a_400(client, slug):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, slug, chat_template="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    assert e.value.body["param"] == "chat_template"


def test_unknown_field_is_a_400_naming_it(client, slug):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=slug, messages=Q, max_tokens=2, extra_body={"no_such_field": 1})
    assert e.value.body["param"] == "no_such_field"


def test_out_of_range_token_ids_are_400(client, slug):
    for field, value in [("logit_bias", {"999999": 5}), ("bad_token_ids", [999999]),
                         ("stop_token_ids", [999999])]:
        with pytest.raises(openai.BadRequestError) as e:
            chat(client, slug, **{field: value})
        assert e.value.body["param"] == field


def test_text_response_format_is_accepted(client, slug, greedy):
    out = chat(client, slug, temperature=0, max_tokens=24, response_format={"type": "text"})
    assert text(out) == text(greedy)


def test_context_overflow_and_truncation(client, slug):
    long = [{"role": "user", "content": "word " * 600}]
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, slug, long)
    body = e.value.body
    assert body["param"] == "messages" and "512" in body["message"]
    prompt_len = int(body["message"].split("prompt is ")[1].split()[0])
    assert prompt_len > 512
    out = chat(client, slug, long, truncate_prompt_tokens=100, max_tokens=2)
    assert out.usage.prompt_tokens == 100


def test_max_tokens_shrinks_to_fit_the_context(client, slug):
    out = chat(client, slug, [{"role": "user", "content": "word " * 600}], truncate_prompt_tokens=505,
               max_tokens=300, ignore_eos=True, temperature=0)
    assert out.usage.prompt_tokens == 505
    assert out.usage.completion_tokens == 512 - 505
    assert out.choices[0].finish_reason == "length"


def test_no_effect_fields_are_accepted_and_user_is_not_logged(client, slug, greedy, worker):
    out = chat(client, slug, temperature=0, max_tokens=24, user="alice@example.com", length_penalty=2.0,
               early_stopping=True, disaggregated_params={"request_type": "context_and_generation"})
    assert text(out) == text(greedy)
    log = worker.log()
    assert "alice@example.com" not in log
    assert hashlib.sha256(b"alice@example.com").hexdigest()[:12] in log  # recorded as a hash
    assert "accepted without effect: length_penalty/early_stopping" in log


def test_wrong_model_is_404_and_models_lists_the_slug(client, slug):
    assert [m.id for m in client.models.list().data] == [slug]
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no/such-model", messages=Q, max_tokens=2)
    assert e.value.body["param"] == "model"


def test_n_above_one_is_refused(client, slug):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, slug, n=2)
    assert e.value.body["param"] == "n"


def test_unknown_routes_and_methods_answer_the_envelope(worker):
    import httpx

    r = httpx.get(f"{worker.url}/v1/nothing-here", timeout=5)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.get(f"{worker.url}/v1/chat/completions", timeout=5)
    assert r.status_code == 405 and "error" in r.json()
    r = httpx.post(f"{worker.url}/v1/chat/completions", content=b"{not json", timeout=5)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_streamed_echo_and_logprobs_match_the_whole_response(client, slug):
    msgs = [*Q, {"role": "assistant", "content": "The capital of France is"}]
    kw = dict(temperature=0, max_tokens=6, add_generation_prompt=False, echo=True, logprobs=True, top_logprobs=2)
    whole = chat(client, slug, msgs, **kw)
    chunks = [c for c in chat(client, slug, msgs, stream=True, **kw) if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text(whole)
    streamed = [e for c in chunks if c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in whole.choices[0].logprobs.content]
    assert all(len(e.top_logprobs) == 2 for e in streamed)
