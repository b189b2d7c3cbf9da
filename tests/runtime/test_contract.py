"""The Model class contract: __init__ arguments, definition errors that fail the load."""

from __future__ import annotations

import pytest

from .conftest import EXAMPLES


def test_init_gets_everything_with_kwargs(workers, model_folder):
    source = """
        class Model:
            def __init__(self, **kwargs):
                self.kwargs = kwargs

            def predict(self, model_input):
                k = self.kwargs
                return {
                    "names": sorted(k),
                    "model_name": k["config"]["model_name"],
                    "data_dir": k["data_dir"].name,
                    "environment": k["environment"],
                    "secrets": sorted(k["secrets"]),
                }
    """
    worker = workers.start(model_folder(source, {"model_name": "kw"}), "--environment", "staging")
    with worker.client() as c:
        got = c.post("/predict", json={}).json()
    assert got == {
        "names": ["config", "data_dir", "environment", "secrets"],
        "model_name": "kw",
        "data_dir": "data",
        "environment": {"name": "staging"},
        "secrets": [],
    }


def test_init_gets_only_what_it_names(workers, model_folder):
    source = """
        class Model:
            def __init__(self, environment, config=None):
                self.got = (environment, config["model_name"])

            def predict(self, model_input):
                return list(self.got)
    """
    worker = workers.start(model_folder(source, {"model_name": "named"}))
    with worker.client() as c:
        assert c.post("/predict", json={}).json() == [None, "named"]


def test_secrets_and_environment_variables(workers, tmp_path):
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text('{"webhook_token": "s3cret-value-123"}')
    worker = workers.start(
        EXAMPLES / "secrets_env", "--secrets-file", str(secrets_file), "--environment", "production"
    )
    assert not secrets_file.exists()
    with worker.client() as c:
        good = c.post("/predict", json={"token": "s3cret-value-123"}).json()
        bad = c.post("/predict", json={"token": "guess"}).json()
    assert good == {"model": "secrets-env", "style": "formal", "environment": "production", "authorized": True}
    assert bad["authorized"] is False
    assert "s3cret-value-123" not in worker.log()


BROKEN = {
    "postprocess with a generator predict": (
        """
        class Model:
            def predict(self, model_input):
                yield "a"

            def postprocess(self, model_output):
                return model_output
        """,
        "Model.postprocess cannot be used with a generator predict",
    ),
    "predict that is not callable": (
        """
        class Model:
            predict = 42
        """,
        "Model.predict must be a method",
    ),
    "load that yields": (
        """
        class Model:
            def load(self):
                yield

            def predict(self, model_input):
                return 1
        """,
        "Model.load must not yield",
    ),
    "async load that yields": (
        """
        class Model:
            async def load(self):
                yield

            def predict(self, model_input):
                return 1
        """,
        "Model.load must not yield",
    ),
    "no endpoint method": (
        """
        class Model:
            def load(self):
                pass
        """,
        "defines none of predict, chat_completions, completions",
    ),
    "preprocess that yields": (
        """
        class Model:
            def preprocess(self, model_input):
                yield model_input

            def predict(self, model_input):
                return 1
        """,
        "Model.preprocess must return its result, not yield",
    ),
    "predict with an extra required parameter": (
        """
        class Model:
            def predict(self, model_input, temperature):
                return 1
        """,
        "requires a parameter 'temperature'",
    ),
    "__init__ asking for an unknown argument": (
        """
        class Model:
            def __init__(self, tokenizer):
                pass

            def predict(self, model_input):
                return 1
        """,
        "__init__ requires 'tokenizer', which trestle does not provide",
    ),
    "wrong class name": (
        """
        class MyModel:
            def predict(self, model_input):
                return 1
        """,
        "defines no 'Model'",
    ),
    "import error": (
        """
        import not_a_real_module_xyz
        """,
        "ModuleNotFoundError: No module named 'not_a_real_module_xyz'",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_definition_errors_fail_the_load(workers, model_folder, case):
    source, expected = BROKEN[case]
    worker = workers.start(model_folder(source), wait="settled")
    health = worker.health()
    assert health.status_code == 503
    assert health.json()["status"] == "failed"
    assert expected in health.json()["error"]
