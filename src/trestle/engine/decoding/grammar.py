"""Constrained decoding with llguidance: the only module that imports `llguidance`.

    grammars = Grammars.of(model)                    # per model: tokenizer built once (~0.3 s)
    g = grammars.json_schema(schema)                 # or .lark(text), .grammar(text), .structural_tag(...)
    g = grammars.with_subgrammar(lark, "response", g)  # a Lark grammar in which `@response` is g
    matcher = g.matcher()                            # per sequence
    masks = MaskBatch(grammars, rows=max_batch)      # per scheduler
    masks.fill([(matcher, row), ...])                # one step's constrained sequences together
    allowed = masks.allowed(row)                     # uint8 0/1 per token, for the sampler
    matcher.consume(token)

A `Grammar` is compiled and validated once and cached by its llguidance text (LRU of
CACHE_SIZE): the cache keeps a pristine `LLMatcher` that each sequence deep-copies, so a repeated
schema costs neither a compile nor a validation. Anything llguidance refuses (a bad schema,
a keyword it cannot enforce, a Lark/GBNF syntax error) is a `GrammarError` carrying its reason;
the caller turns it into a 400 naming the request field.

JSON is compact by default: no whitespace between tokens (`,` and `:` separators), so a small
model cannot pad its output with runaway spaces or newlines. The masks of a step are filled
together by an `LLExecutor` (llguidance's batch fill, which drops the GIL).

The tokenizer is `llguidance.llamacpp.lltokenizer_from_vocab`: it marks control tokens itself, so
`<|im_end|>` is never legal inside a JSON string; the model's end-of-sequence token is the one the
grammar allows once it is complete.
"""

from __future__ import annotations

import json
import threading
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import llguidance
import llguidance.llamacpp
import llguidance.numpy
import numpy as np
from llguidance import LLMatcher

CACHE_SIZE = 128
# Compact JSON: what the JSON compiler is told for every schema we compile.
COMPACT_JSON = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
# Threads of the batch mask fill. One: llama.cpp's own threads already use every core while a
# step runs, and a mask costs ~0.3 ms (SmolLM2, JSON), so more threads would only compete.
FILL_THREADS = 1


class GrammarError(ValueError):
    """llguidance cannot compile or enforce a grammar; the message says why."""


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, closed (`closed_schema`), with the compact-JSON options set in its `x-guidance`
    (for inline `%json`)."""
    schema = closed_schema(schema)
    return {**schema, "x-guidance": {**schema.get("x-guidance", {}), **COMPACT_JSON}}


# Keywords whose value is a subschema, a list of subschemas, or a map of names to subschemas.
_SUB = ("additionalProperties", "items", "contains", "not", "if", "then", "else",
        "propertyNames", "unevaluatedItems", "unevaluatedProperties", "additionalItems")
_SUB_LISTS = ("anyOf", "oneOf", "prefixItems")
_SUB_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def closed_schema(schema: Any, *, in_all_of: bool = False) -> Any:
    """A copy of `schema` in which every object schema that lists `properties` and says nothing
    of other keys (no `additionalProperties`, `patternProperties` or `unevaluatedProperties`)
    has `additionalProperties: false`: the output holds the declared keys only.

    JSON Schema's own default admits any other key, and a small model given that freedom
    invents keys until `max_tokens`. A schema that wants other keys says so
    (`"additionalProperties": true` or a schema). Members of an `allOf` are left open, since
    closing each of them would refuse the keys the others declare.
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SUB:
        if isinstance(out.get(key), (dict, list)):
            value = out[key]
            out[key] = [closed_schema(v) for v in value] if isinstance(value, list) else closed_schema(value)
    for key in _SUB_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [closed_schema(v) for v in out[key]]
    if isinstance(out.get("allOf"), list):
        out["allOf"] = [closed_schema(v, in_all_of=True) for v in out["allOf"]]
    for key in _SUB_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed_schema(v) for name, v in out[key].items()}
    open_keys = ("additionalProperties", "patternProperties", "unevaluatedProperties")
    if (
        not in_all_of
        and isinstance(out.get("properties"), dict)
        and not any(k in out for k in open_keys)
        and "allOf" not in out
    ):
        out["additionalProperties"] = False
    return out


@dataclass(frozen=True)
class StructureTag:
    """A region of free text that must match `schema` between `begin` and `end`, entered when the
    text reaches `trigger` (a prefix of `begin`)."""

    trigger: str
    begin: str
    schema: dict[str, Any]
    end: str


class Grammar:
    """A compiled, validated grammar. `matcher()` gives a fresh matcher for one sequence."""

    def __init__(self, text: str, pristine: LLMatcher):
        self.text = text
        self._pristine = pristine

    def matcher(self) -> "Matcher":
        return Matcher(self._pristine.deep_copy())


class Matcher:
    """One sequence's position in its grammar."""

    def __init__(self, m: LLMatcher):
        self._m = m

    def consume(self, token: int) -> bool:
        """Advance by `token`; False (and `error` set) if the grammar does not allow it."""
        return self._m.consume_token(token)

    @property
    def stopped(self) -> bool:
        """The grammar is complete and allows nothing more (not even more text)."""
        return self._m.is_stopped()

    @property
    def accepting(self) -> bool:
        return self._m.is_accepting()

    @property
    def error(self) -> str | None:
        return self._m.get_error() if self._m.is_error() else None


class Grammars:
    """Per model: llguidance's tokenizer and the compiled-grammar cache (thread-safe)."""

    _by_model: "weakref.WeakKeyDictionary[Any, Grammars]" = weakref.WeakKeyDictionary()
    _by_model_lock = threading.Lock()

    def __init__(self, model):
        self.n_vocab = model.info.n_vocab
        with warnings.catch_warnings():  # it calls a llama.cpp function deprecated in 0.3.36, per token
            warnings.simplefilter("ignore", DeprecationWarning)
            self.tokenizer = llguidance.llamacpp.lltokenizer_from_vocab(model.vocab_handle)
        self._cache: OrderedDict[str, Grammar] = OrderedDict()
        self._lock = threading.Lock()
        self.compiled = 0  # grammars actually compiled (cache misses), for tests and stats

    @classmethod
    def of(cls, model) -> "Grammars":
        """The model's `Grammars`, built on first use (load time, in the engine)."""
        with cls._by_model_lock:
            g = cls._by_model.get(model)
            if g is None:
                g = cls._by_model[model] = cls(model)
            return g

    # -- front ends ------------------------------------------------------------------------
    def json_schema(self, schema: dict[str, Any]) -> Grammar:
        """Output is one JSON value valid against `schema` (compact, closed: `closed_schema`)."""
        try:
            text = LLMatcher.grammar_from_json_schema(
                json.dumps(closed_schema(schema)), overrides=COMPACT_JSON
            )
        except (ValueError, TypeError) as exc:
            raise GrammarError(str(exc)) from None
        return self.compile(text)

    def lark(self, text: str) -> Grammar:
        """llguidance's Lark dialect (a `start:` rule)."""
        return self.compile(LLMatcher.grammar_from_lark(text))

    def grammar(self, text: str) -> Grammar:
        """A Lark grammar or a GBNF grammar (llama.cpp's `root ::= ...`), told apart by llguidance."""
        try:
            return self.compile(llguidance.grammar_from("gbnf", text))
        except ValueError as exc:
            if isinstance(exc, GrammarError):
                raise
            raise GrammarError(str(exc)) from None

    def structural_tag(self, tags: list[StructureTag]) -> Grammar:
        """Free text in which each tagged region, once its trigger appears, matches its schema."""
        try:
            lark = llguidance.StructTag.to_grammar(
                [
                    llguidance.StructTag(
                        trigger=t.trigger, begin=t.begin, grammar=compact_schema(t.schema), end=t.end
                    )
                    for t in tags
                ],
                assume_special=False,
            )
        except AssertionError as exc:
            raise GrammarError(str(exc) or "invalid structural tag") from None
        return self.compile(LLMatcher.grammar_from_lark(lark))

    def with_subgrammar(self, lark: str, name: str, sub: Grammar) -> Grammar:
        """The Lark grammar `lark`, in which `@<name>` stands for the whole of `sub`."""
        try:
            top = json.loads(sub.text)
        except ValueError:
            top = None
        if isinstance(top, dict) and isinstance(top.get("grammars"), list) and len(top["grammars"]) == 1:
            subs = [{**top["grammars"][0], "name": name}]  # a JSON schema: one grammar
        elif top is None:
            subs = [{"name": name, "lark_grammar": sub.text}]  # Lark text (GBNF is turned into it)
        else:
            raise GrammarError("a grammar made of several grammars cannot be combined with another")
        return self.compile(json.dumps({"grammars": [{"name": "main", "lark_grammar": lark}, *subs]}))

    # -- compile + cache -------------------------------------------------------------------
    def compile(self, text: str) -> Grammar:
        """The validated grammar for llguidance grammar `text`, from the cache when it is there."""
        with self._lock:
            g = self._cache.get(text)
            if g is not None:
                self._cache.move_to_end(text)
                return g
        is_error, messages = LLMatcher.validate_grammar_with_warnings(text, self.tokenizer)
        if is_error:
            raise GrammarError(_clean(messages[0] if messages else "the grammar is invalid"))
        pristine = LLMatcher(self.tokenizer, text, log_level=0)
        if pristine.is_error():
            raise GrammarError(_clean(pristine.get_error()))
        g = Grammar(text, pristine)
        with self._lock:
            self.compiled += 1
            self._cache[text] = g
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return g


def _clean(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "the grammar is invalid"


class MaskBatch:
    """Token masks for up to `rows` sequences (one row per engine slot), filled together."""

    def __init__(self, grammars: Grammars, rows: int):
        self.n_vocab = grammars.n_vocab
        self._bits = llguidance.numpy.allocate_token_bitmask(rows, grammars.n_vocab)
        self._executor = llguidance.LLExecutor(num_threads=FILL_THREADS)

    def fill(self, items: list[tuple[Matcher, int]]) -> None:
        """Compute the next-token mask of each `(matcher, row)`; drops the GIL while it works."""
        if items:
            llguidance.numpy.fill_next_token_bitmask_par(
                self._executor, [(m._m, row) for m, row in items], self._bits
            )

    def allowed(self, row: int) -> np.ndarray:
        """0/1 per token (uint8, length n_vocab): 1 where the grammar allows the token."""
        return np.unpackbits(self._bits[row].view(np.uint8), bitorder="little")[: self.n_vocab]
