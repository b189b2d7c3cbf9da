"""A model that prints as much as it is asked to: the log grows."""


class Model:
    def predict(self, model_input):
        n = int(model_input.get("lines", 0))
        for i in range(n):
            print(f"chatty line {i} " + "x" * 1000, flush=(i == n - 1))
        return {"printed": n}
