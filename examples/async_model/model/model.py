import asyncio

import lexicon  # from packages/


class Model:
    def __init__(self, data_dir):
        self._path = data_dir / "lexicon.tsv"
        self._scores = None

    async def load(self):
        text = await asyncio.to_thread(self._path.read_text)
        self._scores = lexicon.parse(text)

    async def predict(self, model_input):
        await asyncio.sleep(0)  # e.g. awaiting a remote feature store
        total = lexicon.score(self._scores, model_input["text"])
        label = "positive" if total > 0 else "negative" if total < 0 else "neutral"
        return {"score": total, "label": label}
