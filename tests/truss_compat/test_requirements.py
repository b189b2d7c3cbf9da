"""`requirements` and `requirements_file` build the deployment's virtualenv, cached by what they
resolve to: the same requirements pushed again reuse it, conflicting pins each get their own."""

from __future__ import annotations

VERSIONS_MODEL = """
    import sys
    from importlib.metadata import version


    class Model:
        def predict(self, model_input):
            return {name: version(name) for name in model_input["packages"]} | {"prefix": sys.prefix}
"""


def predict(server, result, body):
    with server.client() as http:
        resp = http.post(f"/model/{result['model']['id']}/deployment/{result['deployment']['id']}"
                         "/predict", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_requirements_file_with_includes_and_comments_installs_with_the_list(server, folder, push):
    path = folder(
        "reqfile", {"requirements": ["pyjokes==0.8.3"], "requirements_file": "requirements.txt"},
        VERSIONS_MODEL,
        **{"requirements.txt": """
               # pins shared with other models
               -r pins/base.txt   # included relative to this file
           """,
           "pins/base.txt": "text-unidecode==1.2\n"},
    )
    result = push(path)
    assert result["deployment"]["status"] == "active", result["deployment"]["error"]
    body = predict(server, result, {"packages": ["text-unidecode", "pyjokes"]})
    assert body["text-unidecode"] == "1.2" and body["pyjokes"] == "0.8.3"
    log = server.cli("deployments", "logs", result["deployment"]["id"]).stdout
    assert "building a virtualenv with 1 requirement(s) and requirements.txt" in log
    assert "installing requirements into a new virtualenv" in log


def test_conflicting_pins_run_side_by_side_and_the_same_pins_reuse_the_venv(server, folder, push):
    old = push(folder("pin-old", {"requirements": ["text-unidecode==1.2"]}, VERSIONS_MODEL))
    new = push(folder("pin-new", {"requirements": ["text-unidecode==1.3"]}, VERSIONS_MODEL))
    again = push(folder("pin-again", {"requirements": ["text-unidecode==1.2"]},
                                VERSIONS_MODEL))
    for result in (old, new, again):
        assert result["deployment"]["status"] == "active", result["deployment"]["error"]
    ask = {"packages": ["text-unidecode"]}
    first, second, third = (predict(server, r, ask) for r in (old, new, again))
    assert first["text-unidecode"] == "1.2" and second["text-unidecode"] == "1.3"
    assert third == first  # the same venv: same version, same prefix
    assert second["prefix"] != first["prefix"]
    log = server.cli("deployments", "logs", again["deployment"]["id"]).stdout
    assert "reusing the virtualenv built for these requirements" in log
    assert "installing requirements" not in log


def test_a_failed_install_fails_the_deployment_with_pips_error(server, folder, push):
    path = folder("badpin", {"requirements_file": "requirements.txt"}, VERSIONS_MODEL,
                  **{"requirements.txt": "text-unidecode==99.0\n"})
    result = push(path)
    dep = result["deployment"]
    assert dep["status"] == "failed"
    assert "pip install failed" in dep["error"]
    assert "No matching distribution found for text-unidecode==99.0" in dep["error"]
    assert str(server.home) not in dep["error"]
    # the next push with the same requirements tries again rather than reusing a broken venv
    again = push(path)
    assert again["deployment"]["status"] == "failed"
    log = server.cli("deployments", "logs", again["deployment"]["id"]).stdout
    assert "installing requirements into a new virtualenv" in log


def test_a_requirements_file_that_reaches_outside_the_folder_is_refused(server, folder, push):
    path = folder("escape", {"requirements_file": "requirements.txt"}, VERSIONS_MODEL,
                  **{"requirements.txt": "-r ../../etc/passwd\n"})
    res = server.cli("push", str(path), check=False)
    assert res.returncode != 0
    assert "leaves the model folder" in res.stderr
    missing = folder("missing", {"requirements_file": "nope.txt"}, VERSIONS_MODEL)
    res = server.cli("push", str(missing), check=False)
    assert res.returncode != 0 and "'nope.txt' is not a file in the model folder" in res.stderr


def test_push_shows_pip_output_while_it_installs(server, folder):
    path = folder("pip-live", {"requirements": ["pyjokes==0.8.3"]}, VERSIONS_MODEL)
    res = server.cli("push", str(path))  # waits for the deployment, as a user would
    build = [line for line in res.stderr.splitlines() if line.startswith("build | ")]
    assert any("Successfully installed" in line and "pyjokes-0.8.3" in line for line in build), res.stderr
    assert "active" in res.stdout
