"""Wire types of prompt endpoints: the endpoint file, the completion call and its answer, prices
and usage records.

    EndpointSpec          an endpoint file (YAML or JSON): name, model, messages | prompt,
                          defaults, search bindings
    EndpointOut           an endpoint as the management API shows it (with its version and the
                          variables its templates use)
    CompletionCall        the body of `POST /api/endpoints/{id}/completions`
    EndpointCompletion    its answer (seed 002: `text_completion`, `usage`, `search_results`,
                          `prompt_cost`, `completion_cost`, `model_name` / `baseplate_model_name`)
    PriceSet, PriceOut    a model's prices, per 1M tokens
    UsageRecordOut        one recorded call; `UsageReport` lists them with their totals

Templates are only size-checked here; compiling them (and finding their variables) is
`trestle.endpoints.templates`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from trestle.errors import BadRequest
from trestle.protocol.openai.requests import SamplingRequest
from trestle.protocol.validation import to_bad_request

MAX_TEMPLATE_CHARS = 64_000
MAX_MESSAGES = 64
MAX_SEARCHES = 8
MAX_VALUES = 100
MAX_VALUE_CHARS = 200_000
MAX_NAME = 255

# The sampling fields an endpoint's `defaults` and a call may set (the request schema's own;
# `model`, `stream`, `stream_options` and `user` are the endpoint's and the call's business).
NOT_SAMPLING = frozenset({"model", "stream", "stream_options", "user"})
SAMPLING_FIELDS = frozenset(SamplingRequest.model_fields) - NOT_SAMPLING

Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME, strip_whitespace=True)]
Template = Annotated[str, StringConstraints(max_length=MAX_TEMPLATE_CHARS)]
Variable = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageTemplate(Wire):
    role: Literal["system", "user", "assistant"]
    content: Template


class SearchBinding(Wire):
    """One retrieval: the results of searching `dataset` for `query` (a template) go to `variable`."""

    dataset: Name  # its id or name
    variable: Variable
    query: Template
    top_k: int = Field(default=5, ge=1, le=50)
    alpha: float = Field(default=0.5, ge=0, le=1)
    filter: dict[str, Any] | None = None


def check_sampling(values: dict[str, Any], where: str) -> dict[str, Any]:
    """`values` if every key is a sampling field with a valid value; BadRequest naming the
    first that is not (param `where.key`, or just `key` when `where` is empty)."""
    def param(key: str) -> str:
        return f"{where}.{key}" if where else key

    unknown = sorted(set(values) - SAMPLING_FIELDS)
    if unknown:
        raise BadRequest(f"{param(unknown[0])} is not a sampling field of the request schema "
                         f"(these are: {', '.join(sorted(SAMPLING_FIELDS))})", param=param(unknown[0]))
    try:
        SamplingRequest.model_validate({"model": "x", **values})
    except ValidationError as exc:
        bad = to_bad_request(exc, SamplingRequest)
        raise BadRequest(f"{where + '.' if where else ''}{bad.message}",
                         param=param(bad.param) if bad.param else None) from None
    except BadRequest as exc:
        raise BadRequest(exc.message, param=param(exc.param) if exc.param else None) from None
    return values


class EndpointSpec(Wire):
    """An endpoint file. Exactly one of `messages` (chat models) or `prompt` (completions)."""

    name: Name
    model: Name  # a Model API slug, or baseten/{model_id}[/{deployment_id}]
    messages: Annotated[list[MessageTemplate], Field(min_length=1, max_length=MAX_MESSAGES)] | None = None
    prompt: Template | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    search: Annotated[list[SearchBinding], Field(max_length=MAX_SEARCHES)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_template(self) -> "EndpointSpec":
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give either `messages` (for chat models) or `prompt`, not both or neither")
        variables = [s.variable for s in self.search]
        if len(set(variables)) != len(variables):
            raise ValueError("two search bindings fill the same variable")
        return self

    @property
    def chat(self) -> bool:
        return self.messages is not None


class EndpointOut(EndpointSpec):
    id: str
    version: int
    variables: list[str]  # what `values` must hold (the search variables are filled by search)
    created_at: datetime
    updated_at: datetime


class EndpointList(Wire):
    endpoints: list[EndpointOut]


class ChatTurn(Wire):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, StringConstraints(max_length=MAX_VALUE_CHARS)]


class CompletionCall(BaseModel):
    """The body of a call; any sampling field (e.g. `max_tokens`) overrides the endpoint's defaults."""

    model_config = ConfigDict(extra="allow")

    values: Annotated[dict[Variable, Any], Field(max_length=MAX_VALUES)] = Field(default_factory=dict)
    prompt: Annotated[str, StringConstraints(max_length=MAX_VALUE_CHARS)] | None = None
    messages: Annotated[list[ChatTurn], Field(max_length=MAX_MESSAGES)] | None = None
    stream: bool = False
    user: Annotated[str, StringConstraints(max_length=MAX_NAME)] | None = None

    @model_validator(mode="after")
    def _sampling_extras(self) -> "CompletionCall":
        if self.prompt is not None and self.messages is not None:
            raise ValueError("send `prompt` or `messages`, not both")
        return self

    @property
    def sampling(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Usage(Wire):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class SearchMetadata(Wire):
    documentId: str
    rowId: int
    url: str | None


class SearchResultOut(Wire):
    """One search result: an item of a prompt endpoint's `search_results`, and of a dataset
    search's `results` (`trestle.protocol.datasets`)."""

    data: dict[str, Any]
    embedding: str
    image_paths: list[str] | None
    confidence: float
    metadata: SearchMetadata
    variable: str | None  # the template variable; null in a dataset search
    last_accessed: str
    query: str


class EndpointChoice(Wire):
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: str | None
    usage_id: str


class EndpointCompletion(Wire):
    id: str  # cmpl-...
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[EndpointChoice]
    usage: Usage | None = None
    search_results: list[SearchResultOut] = Field(default_factory=list)
    prompt_cost: float = 0.0
    completion_cost: float = 0.0
    model_name: str
    baseplate_model_name: str  # the same as model_name, under the name seed clients read
    cost_note: str | None = None  # why the costs are 0 (no price set for the model)


class PriceSet(Wire):
    prompt: float = Field(ge=0, le=1e9)  # per 1M prompt tokens
    completion: float = Field(ge=0, le=1e9)  # per 1M completion tokens


class PriceOut(PriceSet):
    model: str
    updated_at: datetime


class PriceList(Wire):
    prices: list[PriceOut]


UsageStatus = Literal["ok", "error", "client_closed"]


class UsageRecordOut(Wire):
    id: str
    created_at: datetime
    endpoint_id: str
    endpoint_version: int
    key_id: str | None
    user: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    prompt_cost: float
    completion_cost: float
    latency_ms: float
    status: UsageStatus
    error: str | None
    stream: bool


class UsageTotals(Wire):
    calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_cost: float
    completion_cost: float
    cost: float


class UsageReport(Wire):
    records: list[UsageRecordOut]  # newest first, at most `limit`
    totals: UsageTotals  # over every matching record
