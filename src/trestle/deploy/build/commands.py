"""config.yaml's `build_commands`: shell commands run once per deployment before it loads.

As in Truss, each command runs in order with `/bin/sh -c`, here in the deployment's pushed folder
(writable while it builds, read-only to the workers afterwards) with the deployment's virtualenv
first on `PATH`; a deployment with build commands gets a virtualenv of its own, so a command may
`pip install` into it. Commands run in the same sandbox and scrubbed environment as the workers
(`trestle.deploy.sandbox`), each bounded by `COMMAND_TIMEOUT_S`. Their output goes to the
deployment log; the first that fails (or times out) fails the deployment with its last lines.
A marker in the deployment's folder records that they ran, so a gateway restart does not run
them again.
"""

from __future__ import annotations

import asyncio
import collections
import os
from pathlib import Path

from trestle.deploy import sandbox
from trestle.deploy.build.venv import BuildError, log_line as _log

COMMAND_TIMEOUT_S = 1800.0
DONE_MARKER = ".build-commands-done"
ERROR_LINES = 20


async def run_build_commands(commands: list[str], *, deployment_id: str, home: Path,
                             source_dir: Path, venv: Path, log_file: Path) -> None:
    """Run `commands` for the deployment whose folder is `home`; `BuildError` on the first
    failure."""
    if not commands or (home / DONE_MARKER).exists():
        return
    user_home = home / "home"
    user_home.mkdir(exist_ok=True)
    sandbox.give(user_home, deployment_id)
    sandbox.give_tree(source_dir, deployment_id)
    sandbox.give_tree(venv, deployment_id)
    box = sandbox.detect()
    env = sandbox.worker_env(user_home, str(os.getpid()))
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    env["VIRTUAL_ENV"] = str(venv)
    for number, command in enumerate(commands, 1):
        _log(log_file, f"build command {number}/{len(commands)}: {command}")
        args = sandbox.command(box, ["/bin/sh", "-c", command], deployment_id=deployment_id,
                               folder=home, home=user_home, writable=[source_dir, venv],
                               cwd=source_dir)
        code, tail = await _run(args, env, source_dir, log_file)
        if code != 0:
            why = "timed out" if code is None else f"failed with exit code {code}"
            lines = "\n".join(tail)
            for path, shown in ((str(source_dir), "."), (str(venv), "<venv>")):
                lines = lines.replace(path, shown)
            raise BuildError(f"build command {number} ({command}) {why}:\n{lines}")
    (home / DONE_MARKER).write_text("\n".join(commands) + "\n")


async def _run(args: list[str], env: dict[str, str], cwd: Path,
               log_file: Path) -> tuple[int | None, list[str]]:
    tail: collections.deque[str] = collections.deque(maxlen=ERROR_LINES)
    with open(log_file, "ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, env=env, cwd=cwd)
        assert proc.stdout is not None

        async def pump() -> None:
            while line := await proc.stdout.readline():
                out.write(line)
                out.flush()
                tail.append(line.decode(errors="replace").rstrip())

        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                await pump()
                return await proc.wait(), list(tail)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None, list(tail)


