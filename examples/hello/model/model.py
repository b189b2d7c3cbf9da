class Model:
    def __init__(self, **kwargs):
        self._greeting = None

    def load(self):
        self._greeting = "Hello"

    def predict(self, model_input):
        name = model_input.get("name", "world")
        return {"message": f"{self._greeting}, {name}!"}
