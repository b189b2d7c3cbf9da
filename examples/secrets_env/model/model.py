import hmac
import os

# Set from config.yaml's environment_variables before this module is imported.
STYLE = os.environ["GREETING_STYLE"]


class Model:
    def __init__(self, secrets, environment, config):
        self._secrets = secrets
        self._environment = (environment or {}).get("name")
        self._name = config["model_name"]
        self._token = None

    def load(self):
        # A missing secret raises KeyError saying: set it with `trestle secrets set webhook_token`.
        self._token = self._secrets["webhook_token"]

    def predict(self, model_input):
        authorized = hmac.compare_digest(model_input.get("token", ""), self._token)
        return {
            "model": self._name,
            "style": STYLE,
            "environment": self._environment,
            "authorized": authorized,
        }
