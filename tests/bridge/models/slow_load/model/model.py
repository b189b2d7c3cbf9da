"""A model that stays loading for the whole test session (its deployment stays `deploying`)."""

import asyncio


class Model:
    async def load(self):
        await asyncio.sleep(3600)

    def predict(self, model_input):
        return "never"
