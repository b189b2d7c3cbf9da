"""Truss config.yaml keys beyond the model itself: environment variables, package folders, and
the keys trestle cannot honour on one machine, which push reports one line each."""

from __future__ import annotations

IMPORTS_MODEL = """
    import os


    class Model:
        def predict(self, model_input):
            import bundled_lib
            import shared_lib

            env = {name: os.environ.get(name) for name in ("FLAG", "OFF", "COUNT", "RATIO", "NAME")}
            return {"env": env, "bundled": bundled_lib.WHO, "shared": shared_lib.WHO}
"""


def test_environment_variables_and_package_dirs_as_truss_sets_them(server, folder, push, tmp_path):
    (tmp_path / "shared" / "shared_lib").mkdir(parents=True)
    (tmp_path / "shared" / "shared_lib" / "__init__.py").write_text("WHO = 'external'\n")
    path = folder(
        "keys",
        {"environment_variables": {"FLAG": True, "OFF": False, "COUNT": 3, "RATIO": 0.5,
                                   "NAME": "x"},
         "bundled_packages_dir": "libs",
         "external_package_dirs": ["../shared"]},
        IMPORTS_MODEL,
        **{"libs/bundled_lib/__init__.py": "WHO = 'bundled'\n"},
    )
    result = push(path)
    assert result["deployment"]["status"] == "active", result["deployment"]["error"]
    with server.client() as http:
        resp = http.post(f"/model/{result['model']['id']}/production/predict", json={})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "env": {"FLAG": "true", "OFF": "false", "COUNT": "3", "RATIO": "0.5", "NAME": "x"},
        "bundled": "bundled", "shared": "external",
    }
    assert "ignored_keys" in result and not result["ignored_keys"]


def test_keys_trestle_cannot_honour_are_reported_by_push_one_line_each(server, folder, push):
    config = {
        "python_version": "py39",
        "resources": {"cpu": "2", "memory": "4Gi", "accelerator": "A10G"},
        "system_packages": ["ffmpeg"],
        "base_image": {"image": "python:3.9"},
        "model_cache": [{"repo_id": "org/model"}],
    }
    path = folder("unhonoured", config, "class Model:\n    def predict(self, x):\n        return x\n")
    result = push(path)
    assert result["deployment"]["status"] == "active", result["deployment"]["error"]
    assert sorted(result["ignored_keys"]) == sorted(config)
    notes = result["notes"]
    for key in config:
        [line] = [n for n in notes if n.startswith(key)]
        assert ": " in line and len(line) > len(key) + 20  # says what trestle does instead
    assert "workers run on the gateway's Python" in next(n for n in notes if n.startswith("python_"))
    text = server.cli("push", str(path)).stdout
    assert text.count("note:") == len(config)
    assert "system_packages: not installed" in text
