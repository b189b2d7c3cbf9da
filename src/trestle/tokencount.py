"""Counting tokens for the legacy bridge's `usage`, with the tokenizer a deployment names.

    # config.yaml of a predict-only model
    bridge:
      tokenizer: tokenizer.json        # or a .gguf, a path inside the folder, or package:DIST/FILE

    counter = TokenCounter.load(path)                    # blocking: call it off the event loop
    counter.usage(payload, completion_text, chat=True)   # -> Usage (blocking too)

Used by the bridge (`trestle.gateway.bridge.legacy`) and, to check the file at push, by the
deployment manager. A `tokenizer.json` is read with Hugging Face's `tokenizers`; its chat template, when there is
one, comes from the `tokenizer_config.json` beside it. A GGUF is read vocabulary-only by
`trestle.engine.llama.LlamaVocab` (the module that owns llama.cpp) and carries its own template.

The prompt of a chat request is its `messages` rendered by that template (the engine's sandboxed
renderer, with the generation prompt), tokenized without adding special tokens again; without a
template (or when it cannot render these messages), the text of each message's content, one per
line, with the tokenizer's special tokens. A text completion's prompt is `prompt` (each string of
a list). The completion is the answer's text, without special tokens.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
from pathlib import Path
from typing import Any, Protocol

from trestle.errors import BadRequest, TrestleError
from trestle.protocol.openai.responses import Usage

log = logging.getLogger("trestle.bridge")

PACKAGE = "package:"
SUFFIXES = (".json", ".gguf")


class Vocabulary(Protocol):
    chat_template: str | None
    bos_token: str
    eos_token: str

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]: ...


class HFTokenizer:
    """A `tokenizer.json` (Hugging Face `tokenizers`), with the template of its tokenizer_config.json."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception:  # the library raises a bare Exception for a file it cannot read
            raise TrestleError("it is not a tokenizer.json that the tokenizers library can read") from None
        self._tok.no_padding()  # counting: the text's own tokens, not a batch's shape
        self._tok.no_truncation()
        settings = _json_or_empty(path.with_name("tokenizer_config.json"))
        template = settings.get("chat_template")
        self.chat_template = template if isinstance(template, str) else None
        self.bos_token = _token_text(settings.get("bos_token"))
        self.eos_token = _token_text(settings.get("eos_token"))

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special).ids


class TokenCounter:
    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab

    @classmethod
    def load(cls, path: Path) -> "TokenCounter":
        """Raises `TrestleError` saying why the file is not a tokenizer (never naming the path)."""
        if path.suffix == ".gguf":
            from trestle.engine.llama import LlamaVocab

            return cls(LlamaVocab.load(path))
        return cls(HFTokenizer(path))

    def close(self) -> None:
        close = getattr(self.vocab, "close", None)
        if close is not None:
            close()

    def count(self, text: str, *, add_special: bool, parse_special: bool) -> int:
        return len(self.vocab.tokenize(text, add_special=add_special, parse_special=parse_special))

    def prompt_tokens(self, payload: dict[str, Any], *, chat: bool) -> int:
        if not chat:
            prompt = payload.get("prompt")
            texts = prompt if isinstance(prompt, list) else [prompt]
            return sum(self.count(t, add_special=True, parse_special=True) for t in texts
                       if isinstance(t, str))
        messages = [m for m in payload.get("messages") or [] if isinstance(m, dict)]
        if self.vocab.chat_template:
            from trestle.engine.chat.template import render_chat

            try:
                text = render_chat(self.vocab.chat_template, messages, add_generation_prompt=True,
                                   bos_token=self.vocab.bos_token, eos_token=self.vocab.eos_token)
                # the template wrote the special tokens: parsed, not added again
                return self.count(text, add_special=False, parse_special=True)
            except BadRequest as exc:
                log.info("the tokenizer's chat template did not render these messages (%s); "
                         "counting their text", exc.message)
        return self.count("\n".join(_text(m.get("content")) for m in messages),
                          add_special=True, parse_special=True)

    def usage(self, payload: dict[str, Any], completion: str, *, chat: bool) -> Usage:
        prompt = self.prompt_tokens(payload, chat=chat)
        done = self.count(completion, add_special=False, parse_special=False)
        return Usage(prompt_tokens=prompt, completion_tokens=done, total_tokens=prompt + done)


def resolve(spec: str, folder: Path) -> Path:
    """The file `bridge.tokenizer` names: inside `folder`, or `package:DIST/FILE`. BadRequest
    (param `bridge.tokenizer`) when there is no such file; messages never name `folder`."""
    if spec.startswith(PACKAGE):
        package, _, name = spec[len(PACKAGE):].partition("/")
        try:
            path = Path(str(importlib.resources.files(package).joinpath(name)))
        except (ModuleNotFoundError, ValueError, TypeError):
            raise BadRequest(f"bridge.tokenizer: the Python package {package!r} is not installed",
                             param="bridge.tokenizer") from None
    else:
        path = folder / spec
        if not path.resolve().is_relative_to(folder.resolve()):
            raise BadRequest("bridge.tokenizer must be a path inside the model folder",
                             param="bridge.tokenizer")
    if not path.is_file():
        raise BadRequest(f"bridge.tokenizer: no file {spec!r} in the model folder",
                         param="bridge.tokenizer")
    return path


def load_for(spec: str, folder: Path) -> TokenCounter:
    """Resolve and load (blocking); BadRequest naming `bridge.tokenizer` when it cannot."""
    path = resolve(spec, folder)
    try:
        return TokenCounter.load(path)
    except TrestleError as exc:
        raise BadRequest(f"bridge.tokenizer: {spec!r}: {exc.message}", param="bridge.tokenizer") from None


def _json_or_empty(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _token_text(value: Any) -> str:
    if isinstance(value, dict):  # an AddedToken: {"content": "<s>", ...}
        value = value.get("content")
    return value if isinstance(value, str) else ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # parts: the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""
