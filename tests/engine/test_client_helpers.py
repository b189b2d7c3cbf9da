"""Client libraries' structured-output helpers, unchanged, against the real engine worker: the
openai client's `parse` with a pydantic model and `pydantic_function_tool`, LangChain's
`with_structured_output` (JSON schema and function calling), and `instructor` in JSON-schema
mode."""

from typing import Literal

import langchain_openai
import openai
import pydantic
import pytest


# Each test makes one or two generations of up to ~100 tokens with a ~300-token prompt: seconds
# on an idle machine, minutes on a loaded one.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def client(worker):
    """A patient client: constrained answers are long, and the machine may be loaded."""
    return openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0, timeout=900)


class City(pydantic.BaseModel):
    name: Literal["Paris", "Rome", "London"]
    country: str = pydantic.Field(max_length=20)
    population_millions: int = pydantic.Field(ge=0, le=50)


class GetWeather(pydantic.BaseModel):
    """Weather in a city."""

    city: Literal["Paris", "Rome", "London"]
    unit: Literal["celsius", "fahrenheit"]


ASK = [{"role": "user", "content": "Tell me about Paris."}]


def test_openai_parse_returns_the_pydantic_object(client, slug):
    r = client.chat.completions.parse(model=slug, messages=ASK, response_format=City,
                                      temperature=0, max_tokens=80)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, City) and r.choices[0].finish_reason == "stop"


def test_openai_pydantic_function_tool_with_parse(client, slug):
    tool = openai.pydantic_function_tool(GetWeather)
    assert tool["function"]["strict"] is True
    r = client.chat.completions.parse(model=slug, messages=ASK, tools=[tool], tool_choice="required",
                                      temperature=0, max_tokens=80)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "GetWeather"
    assert isinstance(call.function.parsed_arguments, GetWeather)
    assert r.choices[0].finish_reason == "tool_calls"


@pytest.fixture(scope="module")
def llm(worker, slug):
    # no max_tokens: ChatOpenAI sends it as `max_completion_tokens`, which seed 004 does not have
    return langchain_openai.ChatOpenAI(model=slug, base_url=f"{worker.url}/v1", api_key="unused",
                                       temperature=0, max_retries=0, timeout=900)


def test_langchain_with_structured_output_json_schema(llm):
    city = llm.with_structured_output(City, method="json_schema").invoke("Tell me about Paris.")
    assert isinstance(city, City)


def test_langchain_with_structured_output_function_calling(llm):
    # LangChain names the tool in tool_choice and reads the first call back; its parameters
    # schema says nothing of other keys, so they are closed (trestle.engine.decoding.grammar.closed_schema).
    weather = llm.with_structured_output(GetWeather, method="function_calling").invoke(
        "What is the weather in Rome?")
    assert isinstance(weather, GetWeather)


def test_instructor_json_schema_mode(client, slug):
    instructor = pytest.importorskip(
        "instructor", reason="instructor is installed by scripts/install (tests/requirements-instructor.txt)")
    patched = instructor.from_openai(client, mode=instructor.Mode.JSON_SCHEMA)
    city = patched.chat.completions.create(model=slug, messages=ASK, response_model=City, temperature=0,
                                           max_tokens=80, max_retries=0)
    assert isinstance(city, City)
