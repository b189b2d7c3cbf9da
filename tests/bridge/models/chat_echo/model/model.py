"""A model that speaks OpenAI chat itself and answers with what it received: the request body and
headers, as JSON text. A request that names a tool gets one call of it, with `{"seen": true}`.
A streamed request whose last message is "break" gets one chunk, then the stream breaks; one whose
last message is "count" gets "one two three ..." split mid-word across chunks, for as long as it is
read (up to 10,000 chunks), and says in its log how far it got."""

import json
import time
import uuid

from fastapi import Request


class Model:
    def chat_completions(self, model_input, request: Request):
        if model_input.get("stream") and model_input["messages"][-1]["content"] == "break":
            return self._broken()
        if model_input.get("stream") and model_input["messages"][-1]["content"] == "count":
            return self._count()
        seen = {"body": model_input, "headers": dict(request.headers)}
        message = {"role": "assistant", "content": json.dumps(seen)}
        finish = "stop"
        choice = model_input.get("tool_choice")
        if isinstance(choice, dict):
            call = {"id": "call_1", "type": "function",
                    "function": {"name": choice["function"]["name"], "arguments": '{"seen": true}'}}
            message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": model_input.get("model", "chat-echo"),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}

    def _count(self):
        words = "one two three four five six seven eight nine ten ".split(" ")[:-1]
        sent = 0
        try:
            for i in range(10_000):
                word = words[i % len(words)] + " "
                for piece in (word[:3], word[3:]):  # "thr" + "ee ": a stop sequence split in two
                    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                             "model": "chat-echo", "choices": [{"index": 0, "delta": {"content": piece},
                                                                "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                sent = i + 1
            done = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "chat-echo",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
            yield f"data: {json.dumps(done)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            print(f"count: {sent} words sent", flush=True)

    def _broken(self):
        chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "chat-echo",
                 "choices": [{"index": 0, "delta": {"content": "so far"}, "finish_reason": None}]}
        yield f"data: {json.dumps(chunk)}\n\n"
        raise RuntimeError("the model broke mid-stream")
