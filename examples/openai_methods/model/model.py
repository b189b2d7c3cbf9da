"""An echo "LLM" that speaks the OpenAI chat and completions formats itself."""

import json
import time
import uuid


def _sse(obj):
    return f"data: {json.dumps(obj)}\n\n"


class Model:
    def _reply(self, text, max_tokens):
        words = f"You said: {text}".split()
        return words[:max_tokens] if max_tokens else words

    def chat_completions(self, model_input):
        last_user = next(m for m in reversed(model_input["messages"]) if m["role"] == "user")
        words = self._reply(last_user["content"], model_input.get("max_tokens"))
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_input.get("model", "echo")}
        usage = {"prompt_tokens": len(last_user["content"].split()), "completion_tokens": len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not model_input.get("stream"):
            message = {"role": "assistant", "content": " ".join(words)}
            return {**head, "object": "chat.completion", "usage": usage,
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        return self._chat_stream(head, words)

    def _chat_stream(self, head, words):
        chunk = {**head, "object": "chat.completion.chunk"}
        yield _sse({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            yield _sse({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        yield _sse({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        yield "data: [DONE]\n\n"

    def completions(self, model_input):
        words = self._reply(model_input["prompt"], model_input.get("max_tokens"))
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": model_input.get("model", "echo")}
        if not model_input.get("stream"):
            return {**head, "choices": [{"index": 0, "text": " ".join(words), "finish_reason": "stop"}]}
        return self._completion_stream(head, words)

    def _completion_stream(self, head, words):
        for i, word in enumerate(words):
            finish = "stop" if i == len(words) - 1 else None
            text = word if i == 0 else " " + word
            yield _sse({**head, "choices": [{"index": 0, "text": text, "finish_reason": finish}]})
        yield "data: [DONE]\n\n"
