"""Parse a request body into a wire type, or raise `BadRequest` that names the field.

    parse_body(ChatCompletionRequest, raw_bytes) -> ChatCompletionRequest

This is the one place where pydantic's `ValidationError` is mapped to the error tree (request
bodies here, `config.yaml` in `trestle.deploy.config`, the management API too; the worker's
check of a user's pydantic-typed input lists every bad field instead, as the model contract asks):

- the body is not JSON                  -> "body is not valid JSON"
- the body is JSON but not an object    -> "body must be a JSON object"
- an unknown key                        -> "Unrecognized request argument: foo", param `foo`
- anything else                         -> "<param>: <what is wrong>", param the dotted path
                                           (`messages.0.role`, `temperature`, `stop.3`)

pydantic puts union-member tags into error locations (`messages.0.user.content`, `stop.str`);
`_field_path` walks the model's types along the location and keeps only field names and
indices, so `param` is the path a client wrote. When a union fails in every member, the errors
of the member that got furthest are reported.
"""

from __future__ import annotations

import types
import typing
from typing import Any, TypeVar, Union

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from typing_extensions import TypeAliasType

from trestle.errors import BadRequest

M = TypeVar("M", bound=BaseModel)


def parse_body(model_cls: type[M], raw: bytes | str) -> M:
    """Validate `raw` (the request body) as `model_cls`; raise `BadRequest` on any problem."""
    try:
        return model_cls.model_validate_json(raw)
    except ValidationError as exc:
        raise to_bad_request(exc, model_cls) from None


def to_bad_request(exc: ValidationError, model_cls: type[BaseModel], *,
                   unknown: str = "Unrecognized request argument") -> BadRequest:
    """The `BadRequest` that describes `exc` (raised while validating `model_cls`); `unknown`
    starts the message for a key the type does not have."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return BadRequest(f"body is not valid JSON ({first['ctx']['error']})")
    if first["type"] == "model_type" and first["loc"] == ():
        return BadRequest("body must be a JSON object")

    located = [(_field_path_or_loc(model_cls, err["loc"]), err) for err in errors]
    # Report one field: the first one with an error, at its deepest location (the union member
    # that matched furthest), with every distinct message at that location.
    top = located[0][0][:1]
    same_field = [(path, err) for path, err in located if path[:1] == top]
    path = max((path for path, _ in same_field), key=len)
    chosen = [err for p, err in same_field if p == path]
    if chosen[0]["type"] in ("union_tag_invalid", "union_tag_not_found"):
        # the error is the discriminating field itself, e.g. `messages.0.role`
        path = [*path, str(chosen[0]["ctx"]["discriminator"]).strip("'")]
    param = ".".join(str(part) for part in path) or None

    if any(err["type"] == "extra_forbidden" for err in chosen):
        return BadRequest(f"{unknown}: {param}", param=param)
    messages: list[str] = []
    for err in chosen:
        text = _message(err)
        if text not in messages:
            messages.append(text)
    what = " or ".join(messages)
    return BadRequest(f"{param}: {what}" if param else what, param=param)


def _message(err: ErrorDetails) -> str:
    kind = err["type"]
    if kind == "value_error":
        return str(err["ctx"]["error"])  # our own validators: no "Value error, " prefix
    if kind == "missing":
        return "field required"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        ctx = err.get("ctx", {})
        discriminator = str(ctx.get("discriminator", "")).strip("'")
        if kind == "union_tag_not_found":
            return f"`{discriminator}` is required"
        return f"must be one of {ctx.get('expected_tags')}, got {ctx.get('tag')!r}"
    return err["msg"][:1].lower() + err["msg"][1:]


def _field_path_or_loc(model_cls: type[BaseModel], loc: tuple[int | str, ...]) -> list[int | str]:
    path = _field_path(model_cls, loc, 0)
    return list(loc) if path is None else path  # could not follow: pydantic's location as is


def _field_path(tp: Any, loc: tuple[int | str, ...], i: int) -> list[int | str] | None:
    """The parts of `loc[i:]` a client would write (field names, indices, dict keys), following
    type `tp`; None when `loc[i:]` does not fit `tp`."""
    if i == len(loc):
        return []
    tp = _unwrap(tp)
    part = loc[i]
    origin = typing.get_origin(tp)

    if origin in (Union, types.UnionType):
        members = [m for m in typing.get_args(tp) if m is not type(None)]
        if len(members) == 1:  # `X | None` is not a union for pydantic
            return _field_path(members[0], loc, i)
        # A union's errors carry the member's tag first: skip it, keep what a member accepts.
        # A tag that names an error of the union itself (bad discriminator) ends the path.
        for member in members:
            rest = _field_path(member, loc, i + 1)
            if rest is not None:
                return rest
        return None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, field in tp.model_fields.items():
            if part in (name, field.alias):
                rest = _field_path(field.annotation, loc, i + 1)
                return None if rest is None else [part, *rest]
        # an unknown key (extra_forbidden) is reported where it was written
        return [part] if i == len(loc) - 1 and isinstance(part, str) else None
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        if not isinstance(part, int):
            return None
        args = typing.get_args(tp)
        rest = _field_path(args[0] if args else Any, loc, i + 1)
        return None if rest is None else [part, *rest]
    if origin is dict or tp is dict:
        args = typing.get_args(tp)
        # pydantic reports a bad key as `[key, "[key]"]` and a bad value as `[key]`
        if i + 1 < len(loc) and loc[i + 1] == "[key]":
            return [part]
        rest = _field_path(args[1] if args else Any, loc, i + 1)
        return None if rest is None else [part, *rest]
    if tp is Any:
        return list(loc[i:])
    return None


def _unwrap(tp: Any) -> Any:
    """Strip `Annotated[...]` and named type aliases down to the type they stand for."""
    while True:
        if isinstance(tp, TypeAliasType):
            tp = tp.__value__
        elif typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        else:
            return tp
