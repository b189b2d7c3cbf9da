"""Run the engine app on a TCP port: `python tests/engine/serve_engine.py MODEL_DIR PORT`.

Used by the tests when the worker entry point (`python -m trestle.runtime`) is not available.
"""

import sys
from pathlib import Path

import uvicorn

from trestle.deploy.config import ModelConfig
from trestle.engine.app import build_app

if __name__ == "__main__":
    folder, port = Path(sys.argv[1]), int(sys.argv[2])
    uvicorn.run(build_app(ModelConfig.load(folder), folder), host="127.0.0.1", port=port, log_level="warning")
