"""A predict-only model for the legacy bridge: its answer's shape is picked by `mode`."""

import time


class Model:
    def predict(self, model_input):
        text = model_input.get("prompt") or model_input["messages"][-1]["content"]
        mode = model_input.get("mode", "text")
        if mode == "usage":  # a whole result, even when the client asked for a stream
            return {"output": f"You said: {text}", "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
        if mode == "report":  # streamed JSON: pieces of text, then the model's own usage
            return self._report(text)
        if model_input.get("stream"):
            return self._words(text, model_input.get("pause", 0))
        if mode == "input":
            return model_input  # JSON: the bridge sends its text
        if mode == "choices":
            return {"id": "mine", "object": "chat.completion", "created": 1, "model": "wordy",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "as is"},
                                 "finish_reason": "stop"}]}
        return f"You said: {text}"

    def _words(self, text, pause):
        for word in f"You said: {text}".split():
            time.sleep(pause)
            yield word + " "

    def _report(self, text):
        words = f"You said: {text}".split()
        for word in words:
            yield {"text": word + " "}
        yield {"usage": {"prompt_tokens": 2, "completion_tokens": len(words)}, "finish_reason": "length"}
