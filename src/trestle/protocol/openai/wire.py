"""The building blocks of the OpenAI request types (and the Anthropic ones): `WireModel`, the base
that makes unknown keys errors and reads an explicit `null` as the default, and the constrained
scalars they share."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

class WireModel(BaseModel):
    """Base of every request type: unknown keys are errors, no type coercion ("1" is not 1).

    An explicit `null` for a field that has a default means that default (OpenAI's SDKs send
    `null` when a caller passes `None`); `null` for a required field is still an error.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if not isinstance(data, dict) or None not in data.values():
            return data
        optional = _optional_keys(cls)
        return {k: v for k, v in data.items() if not (v is None and k in optional)}


@functools.cache
def _optional_keys(cls: type[BaseModel]) -> frozenset[str]:
    """The keys (names and aliases) of `cls`'s fields that have a default."""
    return frozenset(
        key
        for name, field in cls.model_fields.items()
        if not field.is_required()
        for key in (name, field.alias)
        if key
    )


TokenId = Annotated[int, Field(ge=0)]
StopString = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
# Tool and function names as OpenAI accepts them.
FunctionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


