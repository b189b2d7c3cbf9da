"""The few pydantic calls the worker makes, on pydantic 2 or 1.

A deployment's requirements may pin `pydantic<2` (Truss's own `test_pyantic_v1` model does), and
the worker runs inside that deployment's virtualenv with that pydantic (`trestle.deploy.build.venv`).
So everything a model worker imports (`trestle.runtime` and the wire types it answers with:
`trestle.protocol.errors`, `trestle.protocol.health`) goes through these functions instead of
calling pydantic 2's API directly. The gateway and the engines always run on pydantic 2.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic

V1 = pydantic.VERSION.startswith("1.")
ValidationError = pydantic.ValidationError

if V1:  # pragma: no cover - exercised by the pydantic<2 deployment tests
    from pydantic.json import pydantic_encoder as _encoder

    def dump(model: pydantic.BaseModel, **kwargs: Any) -> dict:
        """`model` as JSON-ready Python (model_dump(mode="json"))."""
        kwargs.pop("mode", None)
        return json.loads(model.json(**kwargs))

    def validate(cls: type, value: Any) -> Any:
        return cls.parse_obj(value)

    def json_schema(cls: type) -> dict:
        return cls.schema()

    def errors(exc: pydantic.ValidationError) -> list[dict]:
        return exc.errors()

    def to_json(value: Any) -> bytes:
        """`value` as JSON bytes (NaN and infinities as null); TypeError when it cannot be."""
        try:
            return json.dumps(_finite(value), default=_encoder, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(str(exc)) from None

    def _finite(value: Any) -> Any:
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            return None
        if isinstance(value, dict):
            return {k: _finite(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_finite(v) for v in value]
        return value
else:
    import pydantic_core

    def dump(model: pydantic.BaseModel, **kwargs: Any) -> dict:
        """`model` as JSON-ready Python (model_dump(mode="json"))."""
        return model.model_dump(mode="json", **kwargs)

    def validate(cls: type, value: Any) -> Any:
        return cls.model_validate(value)

    def json_schema(cls: type) -> dict:
        return cls.model_json_schema()

    def errors(exc: pydantic.ValidationError) -> list[dict]:
        return exc.errors(include_url=False)

    def to_json(value: Any) -> bytes:
        """`value` as JSON bytes (NaN and infinities as null); TypeError when it cannot be."""
        try:
            return pydantic_core.to_json(value, inf_nan_mode="null")
        except pydantic_core.PydanticSerializationError as exc:
            raise TypeError(str(exc)) from None
