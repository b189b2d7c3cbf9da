"""`python -m trestle.runtime`: one worker process serving one model folder.

    python -m trestle.runtime --model-dir DIR (--socket PATH | --port N [--host H])
                              [--secrets-file PATH] [--deployment-id ID] [--environment NAME]

Reads `DIR/config.yaml`; serves the app `trestle.runtime.engines` picks for it (the engine of its
`engine.kind`, else the model runtime of `trestle.runtime.truss.app`). The secrets
file (a JSON object `{name: value}`) is read and then deleted. Serves with uvicorn (uvloop,
httptools), access log off: the runtime logs one line per request itself, with its
`x-request-id`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from trestle.errors import TrestleError
from trestle.requestid import configure_logging
from trestle.runtime.config import load_config
from trestle.runtime.engines import app_builder
from trestle.runtime.logs import JsonLines, RequestIdMiddleware
from trestle.runtime.parent import exit_with_parent
from trestle.runtime.secrets import Secrets, SecretsFileError, read_secrets_file

if TYPE_CHECKING:
    from trestle.deploy.config import ModelConfig

logger = logging.getLogger("trestle.runtime")

EXIT_BAD_ARGUMENTS = 2
KEEP_ALIVE_S = 75


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trestle.runtime", description="Serve one model folder.")
    parser.add_argument("--model-dir", required=True, type=Path, help="Truss-style folder with config.yaml")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="listen on this Unix socket path")
    where.add_argument("--port", type=int, help="listen on this TCP port")
    parser.add_argument("--host", default="127.0.0.1", help="TCP host (with --port; default 127.0.0.1)")
    parser.add_argument("--secrets-file", type=Path, help="JSON object {name: value}; deleted once read")
    parser.add_argument("--deployment-id", help="deployment id, for log lines")
    parser.add_argument("--environment", help="environment name, passed to Model(environment={'name': ...})")
    parser.add_argument("--replica", type=int, help="the replica's index, for log lines")
    return parser.parse_args(argv)


def build_worker_app(
    config: ModelConfig, model_dir: Path, *, secrets: Secrets, environment: str | None
):
    """The engine app or the model runtime app, wrapped to carry request ids."""
    env = {"name": environment} if environment else None
    app = app_builder(config)(config, model_dir, secrets=secrets, environment=env)
    return RequestIdMiddleware(app)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # the model's print()s reach the log as they happen
    configure_logging(formatter=JsonLines(args.deployment_id, replica=args.replica))
    exit_with_parent()
    secrets = Secrets()
    if args.secrets_file is not None:
        try:
            secrets = read_secrets_file(args.secrets_file)
        except SecretsFileError as exc:
            logger.error("%s", exc)
            return EXIT_BAD_ARGUMENTS
    try:
        config = load_config(args.model_dir)
        app = build_worker_app(config, args.model_dir, secrets=secrets, environment=args.environment)
    except TrestleError as exc:
        logger.error("cannot serve %s: %s", args.model_dir, exc.message)
        return EXIT_BAD_ARGUMENTS
    label = " ".join(
        f"{k}={v}" for k, v in (("deployment", args.deployment_id), ("environment", args.environment)) if v
    )
    logger.info("serving %s%s with %d secret(s)", args.model_dir, f" ({label})" if label else "", len(secrets))
    uv_config = uvicorn.Config(
        app,
        uds=args.socket,
        host=args.host,
        port=args.port if args.port is not None else 8000,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,  # keep our handler: every line carries the request id
        timeout_graceful_shutdown=30,
        # Idle connections stay open longer than the gateway keeps them in its pool (60 s,
        # trestle.deploy.transport), so the gateway always closes first: a worker closing one
        # just as the gateway reuses it would fail a request (uvicorn's default is 5 s).
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    uvicorn.Server(uv_config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
