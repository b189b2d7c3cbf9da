"""The remaining example folders, pushed to `trestle serve` and called through the gateway."""

from __future__ import annotations

from support import EXAMPLES, wait_for


def test_async_load_and_async_predict(server, pushed):
    m = pushed("async_model")["model"]["id"]
    with server.client() as http:
        good = http.post(f"/model/{m}/production/predict", json={"text": "great lovely day"})
        bad = http.post(f"/model/{m}/production/predict", json={"text": "awful terrible day"})
    assert good.status_code == 200 and good.json()["label"] == "positive"
    assert bad.json()["label"] == "negative"


def test_pydantic_typed_input_is_validated_at_the_edge(server, pushed):
    m = pushed("typed_input")["model"]["id"]
    with server.client() as http:
        ok = http.post(f"/model/{m}/production/predict",
                       json={"text": "serving models serving models fast", "top_k": 1})
        assert ok.status_code == 200 and ok.json() == {"keywords": ["models"]}
        bad = http.post(f"/model/{m}/production/predict", json={"text": "", "top_k": 99})
    assert bad.status_code == 400
    error = bad.json()["error"]  # Truss's shape on /predict: the message names every field
    assert error.startswith("invalid input: text: ") and "top_k" in error
    assert bad.headers["x-baseten-error-code"] == "700"


def test_request_aware_model_sees_the_client_leave(server):
    # The model logs what it saw; workers are sandboxed, so the test reads the deployment's log
    # through the CLI rather than a file the model writes outside its own folder.
    push = server.push(EXAMPLES / "request_aware")
    m, dep = push["model"]["id"], push["deployment"]["id"]
    with server.client() as http:
        with http.stream("POST", f"/model/{m}/production/predict",
                         json={"stream": True, "steps": 2000}) as resp:
            assert next(resp.iter_lines()) == "tick 0"

    def closed_lines():
        log = server.cli("deployments", "logs", dep).stdout
        found = [line[line.index("stream closed after"):] for line in log.splitlines()
                 if "stream closed after" in line]
        return found or None

    closed = wait_for(closed_lines, "the stream to close")
    assert int(closed[0].split()[3]) < 2000  # it stopped early: the client had gone
