"""A model that declares a secret and says whether it got it."""


class Model:
    def __init__(self, secrets, **kwargs):
        self._secrets = secrets

    def predict(self, model_input):
        return {"token": self._secrets["keeper_token"]}
