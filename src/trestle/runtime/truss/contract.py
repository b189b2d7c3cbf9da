"""What the user's Model class may define, checked once when it loads.

    class Model:
        def __init__(self, **kwargs): ...              # config, data_dir, secrets, environment
        def load(self): ...                             # optional, sync or async, no yield
        def preprocess(self, model_input): ...          # optional, wraps predict
        def predict(self, model_input): ...             # POST /predict
        def postprocess(self, model_output): ...        # optional, not with a streaming predict
        def chat_completions(self, model_input): ...    # POST /v1/chat/completions
        def completions(self, model_input): ...         # POST /v1/completions
        def embeddings(self, model_input): ...          # POST /v1/embeddings
        def messages(self, model_input): ...            # POST /v1/messages (Anthropic-style)
        def responses(self, model_input): ...           # POST /v1/responses
        def is_healthy(self) -> bool: ...               # optional, polled once loaded

Every method may be `def` or `async def`; the endpoint methods (all but load and the hooks) may
also be generators (`yield`), which are streamed. A method takes the input as its first argument
(annotate it with a pydantic model to have it validated) and may take a parameter annotated
`fastapi.Request` / `starlette.requests.Request` to get the live request. `describe_model`
turns an instance into a `ModelSpec`, or raises `ModelDefinitionError` saying what to change.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request

from trestle.runtime.truss.loader import ModelDefinitionError

ENDPOINT_METHODS = ("predict", "chat_completions", "completions", "embeddings", "messages",
                    "responses")
HOOK_METHODS = ("preprocess", "postprocess")


@dataclass(frozen=True)
class Method:
    """One user method, bound to the model instance, with what trestle needs to call it."""

    name: str
    fn: Callable[..., Any]
    is_coroutine: bool  # async def
    is_generator: bool  # def ... yield
    is_async_generator: bool  # async def ... yield
    input_param: str | None  # the parameter that receives the input, if any
    input_model: type[BaseModel] | None  # its pydantic annotation, if any
    request_param: str | None  # the parameter annotated Request, if any
    output_model: type[BaseModel] | None = None  # its return annotation, if a pydantic model

    @property
    def streams(self) -> bool:
        return self.is_generator or self.is_async_generator

    def arguments(self, value: Any, request: Request) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.input_param is not None:
            kwargs[self.input_param] = value
        if self.request_param is not None:
            kwargs[self.request_param] = request
        return kwargs


@dataclass(frozen=True)
class ModelSpec:
    load: Method | None
    preprocess: Method | None
    predict: Method | None
    postprocess: Method | None
    chat_completions: Method | None
    completions: Method | None
    embeddings: Method | None
    messages: Method | None
    responses: Method | None
    is_healthy: Method | None = None

    def endpoint(self, name: str) -> Method | None:
        return getattr(self, name) if name in ENDPOINT_METHODS else None


def _annotations(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: use what is there
        return dict(getattr(fn, "__annotations__", {}) or {})


def _is_request(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, Request)


def _is_pydantic(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, BaseModel)


def describe_method(model: object, name: str, *, takes_input: bool) -> Method | None:
    """The spec of `model.<name>`, or None when the class does not define it."""
    fn = getattr(model, name, None)
    if fn is None:
        return None
    if not callable(fn):
        raise ModelDefinitionError(
            f"Model.{name} must be a method (def {name}(self, ...)), got {type(fn).__name__}"
        )
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        raise ModelDefinitionError(f"Model.{name} has no inspectable signature; define it with def") from None
    hints = _annotations(fn)
    input_param = request_param = None
    input_model = None
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, param.annotation)
        if _is_request(annotation):
            if request_param is not None:
                raise ModelDefinitionError(f"Model.{name} takes two Request parameters; keep one")
            request_param = param.name
        elif input_param is None and takes_input and param.kind is not param.KEYWORD_ONLY:
            input_param = param.name
            input_model = annotation if _is_pydantic(annotation) else None
        elif param.default is param.empty:
            wanted = "(self, model_input)" if takes_input else "(self)"
            raise ModelDefinitionError(
                f"Model.{name} requires a parameter {param.name!r} that trestle cannot fill; "
                f"define it as def {name}{wanted}, optionally with a parameter annotated fastapi.Request"
            )
    returns = hints.get("return")
    is_async_gen = inspect.isasyncgenfunction(fn)
    is_gen = inspect.isgeneratorfunction(fn)
    return Method(
        name=name,
        fn=fn,
        is_coroutine=inspect.iscoroutinefunction(fn),
        is_generator=is_gen,
        is_async_generator=is_async_gen,
        input_param=input_param,
        input_model=input_model,
        request_param=request_param,
        output_model=returns if _is_pydantic(returns) else None,
    )


def describe_model(model: object) -> ModelSpec:
    """Check the model instance against the contract and describe its methods."""
    load = describe_method(model, "load", takes_input=False)
    if load is not None and load.streams:
        raise ModelDefinitionError(
            "Model.load must not yield: it runs once before serving; "
            "use `def load(self)` or `async def load(self)` without yield"
        )
    if load is not None and (load.request_param or load.input_param):
        raise ModelDefinitionError("Model.load takes no arguments besides self")
    is_healthy = describe_method(model, "is_healthy", takes_input=False)
    if is_healthy is not None and (is_healthy.streams or is_healthy.request_param):
        raise ModelDefinitionError(
            "Model.is_healthy must return True or False, without yield or arguments: "
            "`def is_healthy(self) -> bool` or `async def is_healthy(self) -> bool`"
        )
    methods = {name: describe_method(model, name, takes_input=True) for name in ENDPOINT_METHODS + HOOK_METHODS}
    if not any(methods[name] for name in ENDPOINT_METHODS):
        raise ModelDefinitionError(
            f"the Model class defines none of {', '.join(ENDPOINT_METHODS)}; "
            "define at least `def predict(self, model_input)`"
        )
    predict = methods["predict"]
    for hook in HOOK_METHODS:
        method = methods[hook]
        if method is None:
            continue
        if predict is None:
            raise ModelDefinitionError(f"Model.{hook} wraps predict, but the Model has no predict; define predict or remove {hook}")
        if method.streams:
            raise ModelDefinitionError(f"Model.{hook} must return its result, not yield; remove the yield from {hook}")
        if method.input_param is None:
            raise ModelDefinitionError(f"Model.{hook} must take the value to transform: def {hook}(self, model_input)")
    if methods["preprocess"] is not None and predict is not None and predict.input_param is None:
        raise ModelDefinitionError("Model.predict must take the output of preprocess: def predict(self, model_input)")
    if methods["postprocess"] is not None and predict is not None and predict.streams:
        raise ModelDefinitionError(
            "Model.postprocess cannot be used with a generator predict: a stream is sent as it is produced; "
            "transform the chunks inside predict and remove postprocess"
        )
    return ModelSpec(load=load, is_healthy=is_healthy, **methods)
