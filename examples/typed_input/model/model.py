from pydantic import BaseModel, Field


class KeywordRequest(BaseModel):
    text: str = Field(min_length=1)
    top_k: int = Field(default=3, ge=1, le=20)


class KeywordResponse(BaseModel):
    keywords: list[str]


class Model:
    def predict(self, model_input: KeywordRequest) -> KeywordResponse:
        # model_input is already validated: a bad request got a 400 naming the field.
        counts = {}
        for word in model_input.text.lower().split():
            word = word.strip(".,!?;:")
            if len(word) > 3:
                counts[word] = counts.get(word, 0) + 1
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        return KeywordResponse(keywords=ranked[: model_input.top_k])
