"""From a validated OpenAI request to what the engine runs: a `GenerationSpec`.

This is where each seed-004 field is checked against the loaded model and turned into
engine terms: the chat template renders the messages (`render_chat`, sandboxed), the prompt is
tokenized, truncated (`truncate_prompt_tokens` keeps the last N tokens) and fitted to the
context (`max_tokens` shrinks; a prompt that alone fills the context is a 400 naming both
lengths), and fields that trestle recognises but does not serve yet are refused with a 400
naming the field - never silently ignored.

Preparing runs off the event loop, on a few threads of its own (`prepare_off_loop`): a chat
template may render for up to a second and a long prompt takes a while to tokenize, and
neither may hold up other requests. A client that leaves meanwhile cancels its render.

`response_format` and tools become a `Grammar` (trestle.engine.decoding.grammar) on the spec: compiled
here, before anything is queued, so a schema or grammar llguidance cannot compile or enforce is a
400 naming `response_format` (or `tools[i].function.parameters`) with llguidance's reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from starlette.types import Receive

from trestle.disconnect import race_disconnect

from trestle.engine.chat import tools as tool_calls
from trestle.engine.decoding.grammar import Grammar, GrammarError, Grammars, StructureTag, compact_schema
from trestle.engine.decoding.sampler import SamplingParams
from trestle.engine.model import EngineModel
from trestle.engine.sequence import GenerationSpec
from trestle.errors import BadRequest, TrestleError
from trestle.protocol.openai.requests import ChatCompletionRequest, CompletionRequest, SamplingRequest
from trestle.protocol.openai.structured import (
    ResponseFormatGrammar,
    ResponseFormatJson,
    ResponseFormatJsonObject,
    ResponseFormatStructuralTag,
    ResponseFormatText,
)

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    spec: GenerationSpec
    echo: str  # text to put before the generated text ("" unless `echo`)
    user_hash: str | None  # `user`, recorded as a short hash (never the raw id in logs)
    tool_calls: bool = False  # the output may hold tool calls: read them back (trestle.engine.chat.tools)
    calls_first: bool = False  # ... only at its very start (a response_format beside the tools)


def _not_supported(param: str, what: str) -> BadRequest:
    return BadRequest(f"{param}: {what} is not supported yet by the built-in engine", param=param)


def _check_token_ids(ids, n_vocab: int, param: str) -> list[int]:
    out = [int(t) for t in ids or []]
    for t in out:
        if t >= n_vocab:
            raise BadRequest(
                f"{param}: token id {t} is out of range (vocabulary has {n_vocab} tokens)", param=param
            )
    return out


def _sampling(req: SamplingRequest, n_vocab: int, logprobs: bool, top_logprobs: int) -> SamplingParams:
    bias = {}
    for key, value in (req.logit_bias or {}).items():
        tok = int(key)
        if tok >= n_vocab:
            raise BadRequest(
                f"logit_bias: token id {tok} is out of range (vocabulary has {n_vocab} tokens)",
                param="logit_bias",
            )
        bias[tok] = float(value)
    if req.top_p_min > req.top_p:
        raise BadRequest(
            f"top_p_min ({req.top_p_min}) must not exceed top_p ({req.top_p})", param="top_p_min"
        )
    return SamplingParams(
        temperature=1.0 if req.temperature is None else float(req.temperature),
        top_p=float(req.top_p),
        top_k=int(req.top_k),
        min_p=float(req.min_p),
        top_p_min=float(req.top_p_min),
        frequency_penalty=float(req.frequency_penalty),
        presence_penalty=float(req.presence_penalty),
        repetition_penalty=float(req.repetition_penalty),
        logit_bias=bias,
        seed=req.seed,
        bad_token_ids=_check_token_ids(req.bad_token_ids, n_vocab, "bad_token_ids"),
        stop_token_ids=_check_token_ids(req.stop_token_ids, n_vocab, "stop_token_ids"),
        min_tokens=int(req.min_tokens),
        ignore_eos=bool(req.ignore_eos),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def _fit(model: EngineModel, req: SamplingRequest, prompt: list[int], param: str) -> tuple[list[int], int]:
    if req.truncate_prompt_tokens is not None and len(prompt) > req.truncate_prompt_tokens:
        prompt = prompt[-req.truncate_prompt_tokens :]
    if not prompt:
        raise BadRequest(f"{param}: the prompt is empty after tokenization", param=param)
    n_ctx = model.info.n_ctx_seq
    if len(prompt) >= n_ctx:
        raise BadRequest(
            f"{param}: the prompt is {len(prompt)} tokens but the context length is {n_ctx} "
            f"tokens (at least one must remain for the output); shorten it or set "
            f"truncate_prompt_tokens",
            param=param,
            code="context_length_exceeded",
        )
    return prompt, min(req.max_tokens, n_ctx - len(prompt))


def _bad_list(req: SamplingRequest) -> list[str]:
    if req.bad is None:
        return []
    return [req.bad] if isinstance(req.bad, str) else list(req.bad)


def _user_hash(req: SamplingRequest) -> str | None:
    if req.user is None:
        return None
    return hashlib.sha256(req.user.encode("utf-8")).hexdigest()[:12]


# -- structured outputs ------------------------------------------------------------------------
def response_grammar(rf, model: EngineModel) -> Grammar | None:
    """The grammar for `response_format` (None for text); 400 naming it when it cannot compile."""
    if rf is None or isinstance(rf, ResponseFormatText):
        return None
    grammars = Grammars.of(model)
    try:
        if isinstance(rf, ResponseFormatJsonObject):
            return grammars.json_schema({"type": "object"})
        if isinstance(rf, ResponseFormatJson):
            schema = rf.json_schema.json_schema
            return grammars.json_schema({"type": "object"} if schema is None else schema)
        if isinstance(rf, ResponseFormatGrammar):
            return grammars.grammar(rf.grammar)
        if isinstance(rf, ResponseFormatStructuralTag):
            return grammars.structural_tag(_structure_tags(rf))
    except GrammarError as exc:
        raise BadRequest(
            f"response_format: the {rf.type} cannot be enforced: {exc}", param="response_format"
        ) from None
    raise BadRequest(f"response_format: unknown type {rf.type!r}", param="response_format")


def _structure_tags(rf: ResponseFormatStructuralTag) -> list[StructureTag]:
    tags = []
    for i, s in enumerate(rf.structures):
        starts = [t for t in rf.triggers if s.begin.startswith(t)]
        if not starts:
            raise BadRequest(
                f"response_format: structures[{i}].begin {s.begin!r} does not start with any of "
                f"the triggers {rf.triggers!r}",
                param="response_format",
            )
        schema = {} if s.tag_schema is None else s.tag_schema
        tags.append(StructureTag(max(starts, key=len), s.begin, schema, s.end))
    return tags


def _tool_grammar(req: ChatCompletionRequest, model: EngineModel, response: Grammar | None) -> Grammar | None:
    """The grammar of the tool calls `tool_choice` allows (None: no calls). Under `auto` with a
    `response` grammar (`response_format`), the answer is either calls or in that format; under
    `required` or a named function it is calls, and `response_format` is for a later turn."""
    choice = req.tool_choice or "auto"
    if not req.tools or choice == "none":
        return None
    grammars = Grammars.of(model)
    for i, t in enumerate(req.tools):  # each parameters schema alone first: the 400 names it
        if t.function.parameters is not None:
            try:
                grammars.json_schema(t.function.parameters)
            except GrammarError as exc:
                param = f"tools[{i}].function.parameters"
                raise BadRequest(f"{param}: the schema cannot be enforced: {exc}", param=param) from None
    tools = req.tools
    if not isinstance(choice, str):
        tools = [t for t in req.tools if t.function.name == choice.function.name]
        if not tools:
            raise BadRequest(
                f"tool_choice: no tool named {choice.function.name!r} in tools", param="tool_choice"
            )
    either = choice == "auto" and response is not None
    lark = tool_calls.call_grammar(
        compact_schema(tool_calls.call_schema(tools)),
        free_text=choice == "auto",
        parallel=req.parallel_tool_calls,
        response="response" if either else None,
    )
    try:
        if either:
            return grammars.with_subgrammar(lark, "response", response)
        return grammars.lark(lark)
    except GrammarError as exc:
        raise BadRequest(f"tools: the tool-call grammar cannot be built: {exc}", param="tools") from None


def _spec(
    req: SamplingRequest, prompt: list[int], max_tokens: int, sampling: SamplingParams,
    grammar: Grammar | None = None,
) -> GenerationSpec:
    return GenerationSpec(
        grammar=grammar,
        prompt=prompt,
        max_tokens=max_tokens,
        sampling=sampling,
        stop=req.stop_list,
        include_stop_str_in_output=req.include_stop_str_in_output,
        bad=_bad_list(req),
        skip_special_tokens=req.skip_special_tokens,
        spaces_between_special_tokens=req.spaces_between_special_tokens,
    )


def prepare_chat(
    req: ChatCompletionRequest, model: EngineModel, cancel: threading.Event | None = None
) -> Prepared:
    from trestle.engine.chat.template import RenderCancelled, render_chat

    grammar = response_grammar(req.response_format, model)
    calls = _tool_grammar(req, model, grammar)
    template = req.chat_template or model.info.chat_template
    if not template:
        raise BadRequest(
            "chat_template: the model has no chat template; pass one in chat_template",
            param="chat_template",
        )
    native_tools = bool(req.tools) and tool_calls.template_supports_tools(template)
    if native_tools:
        messages = list(req.messages)  # render_chat turns them into the template's dicts
    else:
        messages = tool_calls.plain_messages(req.messages, req.tools)
    try:
        text = render_chat(
            template,
            messages,
            cancel,
            add_generation_prompt=req.add_generation_prompt,
            tools=req.tools if native_tools else None,
            documents=req.documents,
            bos_token=model.info.bos_token,
            eos_token=model.info.eos_token,
            **(req.chat_template_args or {}),
        )
    except (TrestleError, RenderCancelled):
        raise
    except Exception as exc:  # a template error is the caller's template or arguments
        raise BadRequest(f"chat_template: the template failed to render: {exc}", param="chat_template") from None
    prompt = model.tokenize(text, add_special=False, parse_special=True)
    if req.add_special_tokens and (not prompt or prompt[0] != model.info.bos_id):
        prompt = [model.info.bos_id, *prompt]
    prompt, max_tokens = _fit(model, req, prompt, "messages")
    sampling = _sampling(req, model.info.n_vocab, req.logprobs, req.top_logprobs if req.logprobs else 0)
    last = req.messages[-1]
    echo = last.text() if req.echo and last.role == "assistant" else ""
    return Prepared(
        _spec(req, prompt, max_tokens, sampling, calls or grammar),
        echo,
        _user_hash(req),
        tool_calls=calls is not None,
        calls_first=calls is not None and grammar is not None,
    )


def prepare_completion(
    req: CompletionRequest, model: EngineModel, cancel: threading.Event | None = None
) -> Prepared:
    if isinstance(req.prompt, str):
        prompt = model.tokenize(req.prompt, add_special=req.add_special_tokens, parse_special=True)
        prompt_text = req.prompt
    else:
        prompt = _check_token_ids(req.prompt, model.info.n_vocab, "prompt")
        prompt_text = b"".join(model.piece(t, special=True) for t in prompt).decode("utf-8", "replace")
    if req.echo and req.logprobs is not None:
        raise _not_supported("echo", "echo together with logprobs (prompt log probabilities)")
    grammar = response_grammar(req.response_format, model)
    prompt, max_tokens = _fit(model, req, prompt, "prompt")
    want = req.logprobs is not None
    sampling = _sampling(req, model.info.n_vocab, want, req.logprobs or 0)
    return Prepared(
        _spec(req, prompt, max_tokens, sampling, grammar),
        prompt_text if req.echo else "",
        _user_hash(req),
    )


# Threads that prepare requests. A render ends within RENDER_SECONDS, so a few are enough for
# a burst of slow templates not to hold up ordinary requests for long.
_PREPARE_THREADS = 4
_pool = ThreadPoolExecutor(_PREPARE_THREADS, thread_name_prefix="trestle-prepare")


async def prepare_off_loop(
    receive: Receive,
    prepare: Callable[..., Prepared],
    req: ChatCompletionRequest | CompletionRequest,
    model: EngineModel,
) -> Prepared:
    """`prepare(req, model, cancel)` on the preparation threads; if the client leaves first,
    its render is cancelled and the request ends here (`asyncio.CancelledError`)."""
    cancel = threading.Event()
    work = asyncio.wrap_future(_pool.submit(prepare, req, model, cancel))
    try:
        left, prepared = await race_disconnect(receive, work)
    finally:
        cancel.set()  # a render still running ends at its next line
    if left:
        log.info("the client left while its request was being prepared; render cancelled")
        raise asyncio.CancelledError
    return prepared
