"""A model that speaks OpenAI chat itself and answers with what it received: the request body and
headers, as JSON text. A request that names a tool gets one call of it, with `{"seen": true}`."""

import json
import time
import uuid

from fastapi import Request


class Model:
    def chat_completions(self, model_input, request: Request):
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
