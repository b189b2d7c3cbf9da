"""The worker logs JSON lines (time, level, request id, logger, message), as Truss's server does;
a model's traceback is in the message, trimmed to the model's own frames."""

from __future__ import annotations

from support import log_entries

MODEL = """
    import logging

    log = logging.getLogger("my.model")


    def divide(n):
        return n / 0


    class Model:
        def predict(self, model_input):
            log.warning("about to divide %s", model_input["n"])
            return divide(model_input["n"])
"""


def test_worker_logs_are_json_lines_with_request_ids_and_trimmed_tracebacks(server, folder, push):
    result = push(folder("logs-json", {}, MODEL))
    assert result["deployment"]["status"] == "active", result["deployment"]["error"]
    with server.client() as http:
        resp = http.post(f"/model/{result['model']['id']}/production/predict", json={"n": 3},
                         headers={"x-request-id": "json-log-1"})
    assert resp.status_code == 500
    text = server.cli("deployments", "logs", result["deployment"]["id"]).stdout
    mine = [e for e in log_entries(text) if e["request_id"] == "json-log-1"]
    assert {"time", "level", "request_id", "logger", "message"} <= set(mine[0])
    assert ("WARNING", "my.model", "about to divide 3") in {(e["level"], e["logger"], e["message"])
                                                            for e in mine}
    [error] = [e for e in mine if e["message"].startswith("Model.predict raised")]
    assert error["level"] == "ERROR" and "ZeroDivisionError" in error["message"]
    assert "in divide" in error["message"] and "trestle/runtime" not in error["message"]
