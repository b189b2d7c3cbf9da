"""OpenAI `POST /v1/embeddings`: the request and response bodies.

One definition per wire type, used by the embeddings worker (`trestle.embeddings.app`), the
datastore's client of it (`trestle.endpoints.retrieval.embedder`) and the tests. `input` is a string
or a list of strings (token-id arrays are refused with a 400 that says so); `encoding_format` is
`float` (lists of numbers) or `base64` (little-endian float32 bytes, as OpenAI sends them);
`dimensions` must equal the model's (the worker refuses others: it does not shorten vectors).
"""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from trestle.errors import BadRequest

MAX_INPUTS = 2048  # strings per request, as OpenAI
MAX_INPUT_CHARS = 50_000  # characters per string

InputText = Annotated[str, StringConstraints(max_length=MAX_INPUT_CHARS)]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    input: InputText | Annotated[list[InputText], Field(min_length=1, max_length=MAX_INPUTS)]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _no_token_ids(cls, value):
        if isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
            raise BadRequest(
                "input must be a string or a list of strings; token-id arrays are not supported "
                "by this model",
                param="input",
            )
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    vector = np.asarray(vector, dtype="<f4")
    if encoding_format == "base64":
        return base64.b64encode(vector.tobytes()).decode("ascii")
    return vector.tolist()


def decode_vectors(response: EmbeddingResponse) -> np.ndarray:
    """The response's vectors as one float32 matrix, in input order."""
    rows = sorted(response.data, key=lambda d: d.index)
    return np.stack([
        np.frombuffer(base64.b64decode(d.embedding), dtype="<f4")
        if isinstance(d.embedding, str) else np.asarray(d.embedding, dtype=np.float32)
        for d in rows
    ]).astype(np.float32, copy=False)
