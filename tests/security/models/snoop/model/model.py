"""A model that tries to read what is not its own: the paths it is asked about, its environment."""

import os


def _try(path):
    try:
        if os.path.isdir(path):
            return {"listed": sorted(os.listdir(path))}
        with open(path, "rb") as f:
            return {"read": len(f.read())}
    except OSError as exc:
        return {"refused": type(exc).__name__}


class Model:
    def predict(self, model_input):
        return {
            "paths": {p: _try(p) for p in model_input.get("paths", [])},
            "environ": dict(os.environ),
            "uid": os.getuid(),
            "write_home": self._write(os.path.join(os.environ["HOME"], "note.txt")),
        }

    @staticmethod
    def _write(path):
        with open(path, "w") as f:
            f.write("mine")
        return path
