"""Client libraries' structured-output helpers, unchanged, against the real engine worker: the
openai client's `parse` with a pydantic model and `pydantic_function_tool`, instructor in
JSON-schema mode, and LangChain's `with_structured_output`."""

from typing import Literal

import openai
import pydantic
import pytest


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


def test_instructor_json_schema_mode(client, slug):
    instructor = pytest.importorskip("instructor")
    ic = instructor.from_openai(client, mode=instructor.Mode.JSON_SCHEMA)
    city = ic.chat.completions.create(model=slug, messages=ASK, response_model=City, temperature=0,
                                      max_tokens=80, max_retries=0)
    assert isinstance(city, City)


def test_langchain_with_structured_output(worker, slug):
    chat_openai = pytest.importorskip("langchain_openai")
    llm = chat_openai.ChatOpenAI(model=slug, base_url=f"{worker.url}/v1", api_key="unused",
                                 temperature=0, max_tokens=80, max_retries=0)
    city = llm.with_structured_output(City, method="json_schema").invoke("Tell me about Paris.")
    assert isinstance(city, City)
    tool_city = llm.with_structured_output(GetWeather, method="function_calling").invoke(
        "What is the weather in Rome?")
    assert isinstance(tool_city, GetWeather)
