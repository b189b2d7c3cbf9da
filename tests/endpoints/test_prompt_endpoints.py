"""Prompt endpoints through a real `trestle serve` and the built-in SmolLM2 engine: endpoint files
with the CLI, `POST /api/endpoints/{id}/completions` whole and streamed, prices, usage records.

The server is the session's (`server` in tests/conftest.py): auth on, the admin key of its home.
Answers are kept short (`max_tokens` of a few tokens): the CPU is shared.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from endpoints.conftest import DATA, MINILM_SLUG
from endpoints.nextjs import StreamErrored, nextjs_text
from support import SLUG, wait_for

PROMPT_PRICE, COMPLETION_PRICE = 0.5, 1.5  # per 1M tokens


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def write(tmp_path: Path, spec: dict, fmt: str = "yaml") -> Path:
    path = tmp_path / f"{spec['name']}.{fmt}"
    path.write_text(yaml.safe_dump(spec) if fmt == "yaml" else json.dumps(spec))
    return path


def chat_spec(**extra) -> dict:
    return {
        "name": unique("blurb"),
        "model": SLUG,
        "messages": [
            {"role": "system", "content": "You write one short sentence."},
            {"role": "user", "content": "Describe {{ product }} for a {{ audience }}."},
        ],
        "defaults": {"max_tokens": 6, "temperature": 0},
        **extra,
    }


def create(server, tmp_path, spec: dict) -> dict:
    return server.cli_json("endpoints", "create", str(write(tmp_path, spec)))


def call(server, endpoint_id: str, body: dict, key: str | None = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or server.api_key}"}
    with httpx.Client(base_url=server.url, timeout=300) as http:
        return http.post(f"/api/endpoints/{endpoint_id}/completions", json=body, headers=headers, **kw)


@pytest.fixture(scope="module")
def priced(server):
    server.cli("prices", "set", SLUG, "--prompt", str(PROMPT_PRICE), "--completion", str(COMPLETION_PRICE))
    return SLUG


@pytest.fixture(scope="module")
def blurb(server, priced, tmp_path_factory):
    return create(server, tmp_path_factory.mktemp("ep"), chat_spec())


# -- the endpoint file and its CLI -------------------------------------------------------------

def test_create_list_show_update_delete_with_the_cli(server, tmp_path):
    spec = chat_spec()
    created = create(server, tmp_path, spec)
    assert created["id"].startswith("e") and created["version"] == 1
    assert created["variables"] == ["audience", "product"]
    assert created["name"] == spec["name"] and created["defaults"] == spec["defaults"]
    listed = server.cli_json("endpoints", "list")["endpoints"]
    assert created["id"] in [e["id"] for e in listed]

    text = server.cli("endpoints", "create", str(write(tmp_path, {**spec, "name": unique("text")}, "json")))
    assert "version 1" in text.stdout and "/api/endpoints/" in text.stdout

    changed = {**spec, "messages": [{"role": "user", "content": "Name {{ product }}."}]}
    updated = server.cli_json("endpoints", "update", created["id"], str(write(tmp_path, changed)))
    assert updated["id"] == created["id"] and updated["version"] == 2
    assert updated["variables"] == ["product"]
    assert server.cli_json("endpoints", "show", created["id"])["version"] == 2
    old = server.cli_json("endpoints", "show", created["id"], "--version", "1")
    assert old["version"] == 1 and old["variables"] == ["audience", "product"]
    assert server.cli_json("endpoints", "show", spec["name"])["id"] == created["id"]  # by name

    server.cli("endpoints", "delete", created["id"], "--yes")
    gone = server.cli("endpoints", "show", created["id"], check=False)
    assert gone.returncode != 0 and "404" in gone.stderr and "no endpoint" in gone.stderr


@pytest.mark.parametrize("change, param, words", [
    ({"messages": [{"role": "user", "content": "Hi {{ name"}]}, "messages.0.content", "does not compile"),
    ({"prompt": "{% for x in y %}", "messages": None}, "prompt", "does not compile"),
    ({"prompt": "x"}, None, "not both"),
    ({"messages": None}, None, "either `messages`"),
    ({"defaults": {"temperatur": 1}}, "defaults.temperatur", "not a sampling field"),
    ({"defaults": {"max_tokens": 0}}, "defaults.max_tokens", "greater than or equal to 1"),
    ({"model": "no/such-model"}, "model", "not a Model API served here"),
    ({"model": "baseten/mnosuchone"}, "model", "no model with id mnosuchone"),
    ({"search": [{"dataset": "d", "variable": "ctx", "query": "q", "filter": {"a b": 1}}]},
     "search.0.filter", "filter key 'a b'"),
    ({"search": [{"dataset": "d", "variable": "ctx", "query": "{{ ctx }}"}]}, "search.0.query", "search binding fills"),
    ({"search": [{"dataset": "d", "variable": "9x", "query": "q"}]}, "search.0.variable", "pattern"),
    ({"messages": [{"role": "user", "content": "x" * 70_000}]}, "messages.0.content", "at most 64000"),
    ({"colour": "red"}, "colour", "Unrecognized"),
])
def test_a_bad_definition_is_a_400_naming_what_is_wrong(server, change, param, words):
    spec = {k: v for k, v in {**chat_spec(), **change}.items() if v is not None}
    with server.client() as http:
        res = http.post("/api/v1/endpoints", json=spec)
    assert res.status_code == 400, res.text
    error = res.json()["error"]
    assert error["param"] == param and words in error["message"], error


# -- a call, whole -----------------------------------------------------------------------------

SEED_EXAMPLE_TYPES = {  # every field of the seed's example response, with its type
    "id": str, "object": str, "created": int, "model": str, "choices": list, "usage": dict,
    "search_results": list, "prompt_cost": float, "completion_cost": float,
    "baseplate_model_name": str,
}
SEED_CHOICE_TYPES = {"text": str, "index": int, "logprobs": type(None), "finish_reason": str, "usage_id": str}


def test_a_call_answers_every_field_of_the_seed_from_the_real_engine(server, blurb):
    values = {"product": "a red rain jacket", "audience": "hiker"}
    res = call(server, blurb["id"], {"values": values, "user": "alice"})
    assert res.status_code == 200, res.text
    body = res.json()
    for field, kind in SEED_EXAMPLE_TYPES.items():
        assert isinstance(body[field], kind), (field, body[field])
    choice = body["choices"][0]
    for field, kind in SEED_CHOICE_TYPES.items():
        assert isinstance(choice[field], kind), (field, choice)
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert body["model_name"] == body["baseplate_model_name"] == body["model"] == SLUG
    assert choice["finish_reason"] == "length" and choice["index"] == 0
    assert body["search_results"] == [] and body["cost_note"] is None

    # the same conversation sent to the Model API itself gives the same tokens (temperature 0)
    messages = [{"role": "system", "content": "You write one short sentence."},
                {"role": "user", "content": "Describe a red rain jacket for a hiker."}]
    with server.client() as http:
        direct = http.post("/v1/chat/completions", json={
            "model": SLUG, "messages": messages, "max_tokens": 6, "temperature": 0}).json()
    assert choice["text"] == direct["choices"][0]["message"]["content"]
    assert body["usage"] == direct["usage"]
    usage = body["usage"]
    assert usage["completion_tokens"] == 6 and usage["total_tokens"] == usage["prompt_tokens"] + 6

    assert body["prompt_cost"] == pytest.approx(usage["prompt_tokens"] * PROMPT_PRICE / 1e6)
    assert body["completion_cost"] == pytest.approx(usage["completion_tokens"] * COMPLETION_PRICE / 1e6)

    records = server.cli_json("usage", "--endpoint", blurb["id"])["records"]
    record = next(r for r in records if r["id"] == choice["usage_id"])
    key_id = next(k["id"] for k in server.cli_json("keys", "list")["keys"]
                  if server.api_key.split("_")[1] == k["prefix"])
    assert record["endpoint_version"] == 1 and record["key_id"] == key_id and record["user"] == "alice"
    assert record["status"] == "ok" and record["stream"] is False and record["model"] == SLUG
    assert (record["prompt_tokens"], record["completion_tokens"]) == (usage["prompt_tokens"], 6)
    assert record["prompt_cost"] == pytest.approx(body["prompt_cost"])
    assert record["completion_cost"] == pytest.approx(body["completion_cost"])
    assert record["latency_ms"] > 0
    assert server.api_key not in json.dumps(records)


def test_messages_and_sampling_fields_of_the_call_follow_the_template(server, blurb):
    values = {"product": "boots", "audience": "child"}
    body = call(server, blurb["id"], {"values": values, "max_tokens": 3,
                                      "messages": [{"role": "user", "content": "Shorter."}]}).json()
    assert body["usage"]["completion_tokens"] == 3
    messages = [{"role": "system", "content": "You write one short sentence."},
                {"role": "user", "content": "Describe boots for a child."},
                {"role": "user", "content": "Shorter."}]
    with server.client() as http:
        direct = http.post("/v1/chat/completions", json={
            "model": SLUG, "messages": messages, "max_tokens": 3, "temperature": 0}).json()
    assert body["choices"][0]["text"] == direct["choices"][0]["message"]["content"]
    assert body["usage"]["prompt_tokens"] == direct["usage"]["prompt_tokens"]


def test_a_prompt_endpoint_calls_the_completions_route(server, tmp_path, priced):
    spec = {"name": unique("story"), "model": SLUG, "prompt": "Once upon a time, {{ hero }}",
            "defaults": {"max_tokens": 5, "temperature": 0}}
    endpoint = create(server, tmp_path, spec)
    body = call(server, endpoint["id"], {"values": {"hero": "a fox"}, "prompt": " met"}).json()
    with server.client() as http:
        direct = http.post("/v1/completions", json={
            "model": SLUG, "prompt": "Once upon a time, a fox met", "max_tokens": 5, "temperature": 0}).json()
    assert body["choices"][0]["text"] == direct["choices"][0]["text"]
    assert body["usage"] == direct["usage"]


def test_costs_are_zero_and_say_why_without_a_price(server, tmp_path):
    with server.client() as http:
        models = http.get("/api/v1/models").json()["models"]
    model_id = next(m["id"] for m in models if m["name"] == "SmolLM2-135M-Instruct")
    spec = {**chat_spec(), "model": f"baseten/{model_id}"}  # no price for this name
    endpoint = create(server, tmp_path, spec)
    body = call(server, endpoint["id"], {"values": {"product": "a hat", "audience": "cat"}}).json()
    assert body["usage"]["completion_tokens"] == 6  # through the bridge, to the same engine
    assert body["prompt_cost"] == 0 and body["completion_cost"] == 0
    assert "no price is set" in body["cost_note"] and f"baseten/{model_id}" in body["cost_note"]
    assert body["model_name"] == f"baseten/{model_id}"


# -- 400 and 401 -------------------------------------------------------------------------------

@pytest.mark.parametrize("body, param, words", [
    ({"values": {"product": "x"}}, "values.audience", "missing the variable 'audience'"),
    ({"values": {"product": "x", "audience": "y", "colour": "z"}}, "values.colour", "unknown variable 'colour'"),
    ({"values": {"product": "x", "audience": "y"}, "temperature": 9}, "temperature", "less than or equal to 4"),
    ({"values": {"product": "x", "audience": "y"}, "colour": 1}, "colour", "not a sampling field"),
    ({"values": {"product": "x", "audience": "y"}, "prompt": "a", "messages": []}, None, "not both"),
    ({"values": "x"}, "values", "should be an object"),
])
def test_a_bad_call_is_a_400_naming_it_with_the_message_on_top(server, blurb, body, param, words):
    res = call(server, blurb["id"], body)
    assert res.status_code == 400, res.text
    data = res.json()
    assert words in data["message"] and data["error"]["param"] == param, data
    assert data["message"] == data["error"]["message"]


def test_a_call_without_a_valid_key_is_a_401_with_a_message(server, blurb):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        path = f"/api/endpoints/{blurb['id']}/completions"
        for headers in ({}, {"Authorization": "Bearer tr_nope_wrong"}, {"Authorization": "Basic abc"}):
            res = http.post(path, json={"values": {}}, headers=headers)
            assert res.status_code == 401 and res.json()["message"], res.text


def test_an_unknown_endpoint_is_a_404(server):
    res = call(server, "enosuchone", {"values": {}})
    assert res.status_code == 404 and "no endpoint" in res.json()["message"]


def test_a_key_limited_to_an_endpoint_calls_it_and_nothing_else(server, blurb, tmp_path):
    other = create(server, tmp_path, chat_spec())
    key = server.cli_json("keys", "create", unique("app"), "--scope", "invoke", "--endpoint", blurb["id"])["key"]
    ok = call(server, blurb["id"], {"values": {"product": "a cup", "audience": "dog"}}, key=key)
    assert ok.status_code == 200, ok.text
    refused = call(server, other["id"], {"values": {"product": "a cup", "audience": "dog"}}, key=key)
    assert refused.status_code == 403 and other["id"] in refused.json()["message"]


# -- streaming ---------------------------------------------------------------------------------

def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of each event of a whole SSE body."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        out.append((name, "\n".join(data)))
    return out


def test_a_streamed_call_sends_text_chunks_done_and_the_results_around_them(server, blurb):
    values = {"product": "a red rain jacket", "audience": "hiker"}
    whole = call(server, blurb["id"], {"values": values}).json()
    chunks: list[bytes] = []
    headers = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.url, timeout=300) as http:
        with http.stream("POST", f"/api/endpoints/{blurb['id']}/completions", headers=headers,
                         json={"values": values, "stream": True}) as res:
            assert res.status_code == 200
            assert res.headers["content-type"].startswith("text/event-stream")
            chunks = list(res.iter_raw())
    events = sse_events(b"".join(chunks))

    # first: the named search_results event; then the text; [DONE]; the results once more
    assert events[0][0] == "search_results"
    first = json.loads(events[0][1])
    assert first["search_results"] == [] and first["choices"][0]["text"] == ""
    done = [i for i, (_, data) in enumerate(events) if data == "[DONE]"]
    assert len(done) == 1 and done[0] == len(events) - 2
    after = json.loads(events[-1][1])
    assert events[-1][0] is None and after["search_results"] == first["search_results"]

    texts = [json.loads(data) for name, data in events[1:done[0]]]
    assert all(c["object"] == "text_completion" and c["id"] == first["id"] for c in texts)
    assert all(c["choices"][0]["usage_id"] == first["choices"][0]["usage_id"] for c in texts)
    joined = "".join(c["choices"][0]["text"] for c in texts)
    assert joined == whole["choices"][0]["text"]  # temperature 0: the same answer

    last = texts[-1]
    assert last["choices"][0]["finish_reason"] == "length"
    assert last["usage"] == whole["usage"]
    assert last["prompt_cost"] == pytest.approx(whole["prompt_cost"])
    assert last["completion_cost"] == pytest.approx(whole["completion_cost"])
    assert last["baseplate_model_name"] == SLUG

    # the seed's Next.js example, ported line for line, reassembles the same text
    assert nextjs_text(chunks) == joined
    assert nextjs_text([bytes([b]) for b in b"".join(chunks)]) == joined  # fragmented anyhow

    record = next(r for r in server.cli_json("usage", "--endpoint", blurb["id"])["records"]
                  if r["id"] == first["choices"][0]["usage_id"])
    assert record["stream"] is True and record["status"] == "ok"
    assert record["completion_tokens"] == whole["usage"]["completion_tokens"]


def test_the_nextjs_port_fails_where_the_example_would():
    bad = b'data: {"id": "x"}\n\ndata: [DONE]\n\n'  # no choices: the example errors its stream
    with pytest.raises(StreamErrored):
        nextjs_text([bad])
    good = b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\ndata: {"choices": [{"text": "!"}]}\n\n'
    assert nextjs_text([good + b"data: [DONE]\n\n" + b'data: {"search_results": []}\n\n']) == "Hi!"


def test_a_client_that_leaves_mid_stream_is_recorded_with_the_tokens_generated(server, blurb):
    values = {"product": "an umbrella", "audience": "poet"}
    headers = {"Authorization": f"Bearer {server.api_key}"}
    usage_id = None
    with httpx.Client(base_url=server.url, timeout=300) as http:
        with http.stream("POST", f"/api/endpoints/{blurb['id']}/completions", headers=headers,
                         json={"values": values, "stream": True, "max_tokens": 400,
                               "ignore_eos": True, "temperature": 1}) as res:
            for line in res.iter_lines():
                if line.startswith("data: ") and '"text": ""' not in line:
                    usage_id = json.loads(line[6:])["choices"][0]["usage_id"]
                    break  # the first text: leave
    assert usage_id is not None

    def recorded():
        records = server.cli_json("usage", "--endpoint", blurb["id"])["records"]
        return next((r for r in records if r["id"] == usage_id), None)

    record = wait_for(recorded, "the call's usage record")
    assert record["status"] == "client_closed" and record["stream"] is True
    assert 1 <= record["completion_tokens"] < 400 and record["prompt_tokens"] > 0
    assert record["completion_cost"] == pytest.approx(record["completion_tokens"] * COMPLETION_PRICE / 1e6)


def test_usage_lists_and_sums_with_filters(server, blurb):
    assert call(server, blurb["id"], {"values": {}}).status_code == 400
    values = {"product": "a pen", "audience": "clerk"}
    assert call(server, blurb["id"], {"values": values, "max_tokens": 1}).status_code == 200
    report = server.cli_json("usage", "--endpoint", blurb["name"], "--since", "1h")
    records, totals = report["records"], report["totals"]
    assert records and all(r["endpoint_id"] == blurb["id"] for r in records)
    assert totals["calls"] == len(records)
    assert totals["prompt_tokens"] == sum(r["prompt_tokens"] for r in records)
    assert totals["completion_tokens"] == sum(r["completion_tokens"] for r in records)
    assert totals["cost"] == pytest.approx(sum(r["prompt_cost"] + r["completion_cost"] for r in records))
    assert {"ok", "error"} <= {r["status"] for r in records}  # a 400 is recorded too
    future = server.cli_json("usage", "--endpoint", blurb["id"], "--since", "2999-01-01T00:00:00")
    assert future["records"] == [] and future["totals"]["calls"] == 0
    text = server.cli("usage", "--endpoint", blurb["id"]).stdout
    assert f"{totals['calls']} calls" in text
    bad = server.cli("usage", "--since", "yesterday", check=False)
    assert bad.returncode != 0 and "since must be" in bad.stderr


def test_prices_list_shows_what_was_set(server, priced):
    prices = {p["model"]: p for p in server.cli_json("prices", "list")["prices"]}
    assert prices[SLUG]["prompt"] == PROMPT_PRICE and prices[SLUG]["completion"] == COMPLETION_PRICE


# -- search bindings ---------------------------------------------------------------------------

QUESTION = "Which day does the robotics club meet and in which room?"


@pytest.fixture(scope="module")
def handbook(server):
    """A dataset of tests/data's documents uploaded with `trestle datasets upload`, as a user
    would (robotics-club.md on its own, with a `url`), embedded by the server's built-in
    embeddings deployment."""
    with server.client() as http:
        wait_for(lambda: any(m["id"] == MINILM_SLUG for m in http.get("/v1/models").json()["data"]),
                 "the built-in embeddings model", deadline_s=900)
    name = unique("handbook")
    assert server.cli_json("datasets", "create", name)["name"] == name
    chunking = ("--chunk-size", "300", "--chunk-overlap", "60")
    others = [str(p) for p in sorted(DATA.iterdir()) if p.name != "robotics-club.md"]
    docs = server.cli_json("datasets", "upload", name, *others, *chunking)["documents"]
    docs += server.cli_json("datasets", "upload", name, str(DATA / "robotics-club.md"), *chunking,
                            "--metadata", json.dumps({"url": "/docs/robotics-club.md"}))["documents"]
    return name, {d["name"]: d for d in docs}


@pytest.fixture(scope="module")
def rag(server, handbook, priced, tmp_path_factory):
    spec = {
        "name": unique("rag"), "model": SLUG,
        "messages": [{"role": "system", "content": "Answer from these notes.\n{{ context }}"},
                     {"role": "user", "content": "{{ question }}"}],
        "defaults": {"max_tokens": 4, "temperature": 0},
        "search": [{"dataset": handbook[0], "variable": "context", "query": "{{ question }}",
                    "top_k": 2, "alpha": 0.5}],
    }
    return create(server, tmp_path_factory.mktemp("rag"), spec)


SEED_RESULT_TYPES = {"data": dict, "embedding": str, "image_paths": type(None), "confidence": float,
                     "metadata": dict, "variable": str, "last_accessed": str, "query": str}


def test_search_results_are_the_documents_with_the_facts_and_feed_the_template(server, rag, handbook):
    body = call(server, rag["id"], {"values": {"question": QUESTION}}).json()
    results = body["search_results"]
    assert rag["variables"] == ["question"] and 1 <= len(results) <= 2
    for result in results:
        for field, kind in SEED_RESULT_TYPES.items():
            assert isinstance(result[field], kind), (field, result)
        assert isinstance(result["metadata"]["rowId"], int) and isinstance(result["metadata"]["documentId"], str)
        assert 0 < result["confidence"] <= 1 and result["variable"] == "context" and result["query"] == QUESTION
        assert isinstance(result["data"]["text"], str)
    top = results[0]
    robotics = handbook[1]["robotics-club.md"]
    assert top["metadata"]["documentId"] == robotics["id"] and top["metadata"]["url"] == "/docs/robotics-club.md"
    assert "B12" in top["data"]["text"]

    # the template received the results' texts: the same conversation, sent directly, matches
    context = "\n\n".join(r["data"]["text"] for r in results)
    messages = [{"role": "system", "content": f"Answer from these notes.\n{context}"},
                {"role": "user", "content": QUESTION}]
    with server.client() as http:
        direct = http.post("/v1/chat/completions", json={
            "model": SLUG, "messages": messages, "max_tokens": 4, "temperature": 0}).json()
    assert body["usage"] == direct["usage"]
    assert body["choices"][0]["text"] == direct["choices"][0]["message"]["content"]
    assert body["prompt_cost"] == pytest.approx(body["usage"]["prompt_tokens"] * PROMPT_PRICE / 1e6)


def test_a_streamed_search_sends_the_results_before_the_text_and_after_done(server, rag, handbook):
    headers = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.url, timeout=300) as http:
        with http.stream("POST", f"/api/endpoints/{rag['id']}/completions", headers=headers,
                         json={"values": {"question": QUESTION}, "stream": True}) as res:
            chunks = list(res.iter_raw())
    events = sse_events(b"".join(chunks))
    assert events[0][0] == "search_results" and events[-2][1] == "[DONE]"
    before, after = json.loads(events[0][1]), json.loads(events[-1][1])
    assert before["search_results"] and before["search_results"] == after["search_results"]
    ids = [r["metadata"]["documentId"] for r in before["search_results"]]
    assert ids[0] == handbook[1]["robotics-club.md"]["id"]
    text = "".join(json.loads(d)["choices"][0]["text"] for _, d in events[1:-2])
    assert text and nextjs_text(chunks) == text


def test_an_endpoint_on_an_unknown_dataset_is_refused(server):
    spec = {**chat_spec(), "search": [{"dataset": "no-such-dataset", "variable": "ctx", "query": "q"}]}
    with server.client() as http:
        res = http.post("/api/v1/endpoints", json=spec)
    assert res.status_code == 400 and res.json()["error"]["param"] == "search.0.dataset"
