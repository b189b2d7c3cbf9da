"""A worker never outlives the gateway that started it.

The supervisor sets `TRESTLE_PARENT_PID`; the worker asks Linux to send it SIGTERM when that
parent dies (`prctl(PR_SET_PDEATHSIG)`), which uvicorn turns into a graceful shutdown. Without
this, a gateway killed with SIGKILL would leave its workers running, holding memory (an engine
holds its model) and sockets nobody can reach. Elsewhere than Linux this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
ENV = "TRESTLE_PARENT_PID"

log = logging.getLogger(__name__)


def exit_with_parent() -> None:
    expected = os.environ.get(ENV)
    if not expected or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("could not ask to be stopped with the gateway (errno %d)", ctypes.get_errno())
        return
    if str(os.getppid()) != expected:  # the parent died before we asked
        log.error("the gateway (pid %s) is gone; exiting", expected)
        os.kill(os.getpid(), signal.SIGTERM)
