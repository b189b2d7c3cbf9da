"""Websocket endpoints are not served: a Model's `websocket` method is named in the push output,
and a websocket handshake gets a 501 that says so (in the route's error shape)."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

MODEL = """
    class Model:
        def predict(self, model_input):
            return {"ok": True}

        async def websocket(self, websocket):
            await websocket.accept()
            await websocket.send_text("hello")
"""


def test_a_websocket_model_is_told_at_push_and_its_handshake_gets_a_501(server, folder):
    res = server.cli("push", str(folder("sockety", {}, MODEL)))
    assert "`websocket` method is not served" in res.stdout
    model_id = next(line.split()[2] for line in res.stdout.splitlines() if line.startswith("model id"))
    ws_url = server.url.replace("http://", "ws://")
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{ws_url}/model/{model_id}/production/websocket", open_timeout=60)
    response = refused.value.response
    assert response.status_code == 501
    assert "websocket endpoints are not served by trestle" in json.loads(response.body)["error"]
    with pytest.raises(InvalidStatus) as elsewhere:  # the OpenAI routes: the envelope
        connect(f"{ws_url}/v1/realtime", open_timeout=60)
    assert elsewhere.value.response.status_code == 501
    error = json.loads(elsewhere.value.response.body)["error"]
    assert "not served" in error["message"] and error["type"] == "not_implemented_error"
    with server.client() as http:  # its HTTP methods are served
        assert http.post(f"/model/{model_id}/production/predict", json={}).json() == {"ok": True}
