class Model:
    def predict(self, model_input):
        # A generator: each piece is sent to the client as soon as it is yielded.
        words = model_input["text"].split()
        for _ in range(model_input.get("repeat", 1)):
            for word in words:
                yield word + " "
