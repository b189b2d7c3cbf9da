"""config.yaml `build_commands` run in order, in the deployment's folder with its virtualenv on
PATH, before the model loads; the first that fails fails the deployment with its output."""

from __future__ import annotations

READS_BUILD_OUTPUT = """
    from pathlib import Path


    class Model:
        def predict(self, model_input):
            folder = Path(__file__).resolve().parent.parent
            return {"built": (folder / "built.txt").read_text().splitlines()}
"""


def test_build_commands_run_in_order_in_the_folder_with_the_venv_on_path(server, folder, push):
    path = folder("builds", {"build_commands": [
        "echo first > built.txt",
        "python -c 'import sys; print(sys.prefix)' >> built.txt",
        "echo \"$VIRTUAL_ENV\" >> built.txt",
    ]}, READS_BUILD_OUTPUT)
    result = push(path)
    assert result["deployment"]["status"] == "active", result["deployment"]["error"]
    with server.client() as http:
        resp = http.post(f"/model/{result['model']['id']}/production/predict", json={})
    assert resp.status_code == 200, resp.text
    first, prefix, venv = resp.json()["built"]
    assert first == "first"
    assert prefix == venv and prefix.endswith("/venv")  # the deployment's own virtualenv
    log = server.cli("deployments", "logs", result["deployment"]["id"]).stdout
    assert "build command 3/3" in log


def test_a_failing_build_command_fails_the_deployment_with_its_output(server, folder, push):
    path = folder("breaks", {"build_commands": [
        "echo fine",
        "echo 'cannot fetch the weights' >&2; exit 3",
        "echo never > never.txt",
    ]}, READS_BUILD_OUTPUT)
    result = push(path)
    dep = result["deployment"]
    assert dep["status"] == "failed"
    assert "build command 2" in dep["error"] and "exit code 3" in dep["error"]
    assert "cannot fetch the weights" in dep["error"]
    log = server.cli("deployments", "logs", dep["id"]).stdout
    assert "build command 3/3" not in log
