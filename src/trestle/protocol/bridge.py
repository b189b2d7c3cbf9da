"""The OpenAI bridge's own wire fields: which deployment an OpenAI-shaped request is for.

    {"model": "...", "messages": [...], "baseten": {"model_id": "m1", "deployment_id": "d1"}}
    {"model": "baseten/m1", ...}            # the model's production deployment
    {"model": "baseten/m1/d1", ...}         # that exact deployment

`target_of(payload)` returns the `BridgeTarget`, None when the request names a Model API slug
instead, or raises `BadRequest` naming `baseten.model_id`. `without_routing(payload)` is the
body the model receives: the same object less the `baseten` field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trestle.errors import BadRequest

FIELD = "baseten"
MODEL_PREFIX = "baseten/"


class BridgeTarget(BaseModel):
    """`extra_body={"baseten": {...}}`: production when `deployment_id` is absent."""

    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=200)
    deployment_id: str | None = Field(default=None, min_length=1, max_length=200)


def target_of(payload: dict[str, Any]) -> BridgeTarget | None:
    if FIELD in payload:
        value = payload[FIELD]
        if not isinstance(value, dict) or not isinstance(value.get("model_id"), str):
            raise BadRequest(f"`{FIELD}` must be an object with a string `model_id` "
                             f"(and optionally `deployment_id`), e.g. "
                             f"extra_body={{'{FIELD}': {{'model_id': 'MODEL_ID'}}}}",
                             param=f"{FIELD}.model_id")
        try:
            return BridgeTarget.model_validate(value)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"]) or "model_id"
            raise BadRequest(f"`{FIELD}.{where}`: {err['msg']}", param=f"{FIELD}.{where}") from None
    model = payload.get("model")
    if isinstance(model, str) and model.startswith(MODEL_PREFIX):
        parts = model[len(MODEL_PREFIX):].split("/")
        if len(parts) not in (1, 2) or not all(parts):
            raise BadRequest(f"`model` {model!r} must be `baseten/MODEL_ID` or "
                             "`baseten/MODEL_ID/DEPLOYMENT_ID`", param="model")
        return BridgeTarget(model_id=parts[0], deployment_id=parts[1] if len(parts) == 2 else None)
    return None


def without_routing(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != FIELD}
