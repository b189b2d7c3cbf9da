"""Polling the Model's optional `is_healthy()` (sync or async, as in Truss) once it is loaded.

Every `runtime.health_checks.period` seconds the worker calls it; a check fails when it returns
something falsy, raises, or takes longer than `timeout`. After `failure_threshold` failures in a
row the worker reports `unhealthy` on `/health` (503, with the last reason); the supervisor
(`trestle.deploy.local`) then takes the replica out of rotation and restarts it. A passing check
resets the count. Until then the worker keeps serving the requests it gets.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from trestle.protocol.health import WorkerState

if TYPE_CHECKING:
    from trestle.runtime.truss.host import LoadedModel

logger = logging.getLogger("trestle.runtime")


async def check(model: LoadedModel) -> str | None:
    """One call of is_healthy(): None when it passed, else why it failed."""
    assert model.spec is not None and model.spec.is_healthy is not None
    method = model.spec.is_healthy
    settings = model.config.runtime.health_checks
    try:
        async with asyncio.timeout(settings.timeout):
            if method.is_coroutine:
                result = await method.fn()
            else:
                # a thread cannot be stopped: a check that overran is awaited again next time
                # instead of starting another one beside it
                call = model.health_call
                if call is None or call.done():
                    call = model.health_call = asyncio.ensure_future(model.in_thread(method.fn))
                result = await asyncio.shield(call)
    except TimeoutError:
        return f"is_healthy() did not answer within {settings.timeout:g}s"
    except Exception as exc:
        return f"is_healthy() raised {type(exc).__name__}: {exc}"
    return None if result else f"is_healthy() returned {result!r}"


async def poll(model: LoadedModel) -> None:
    """Check every period until the model is unhealthy (the supervisor restarts it)."""
    settings = model.config.runtime.health_checks
    while model.state is WorkerState.READY:
        await asyncio.sleep(settings.period)
        reason = await check(model)
        if reason is None:
            if model.health_failures:
                logger.info("health check passed again after %d failure(s)", model.health_failures)
            model.health_failures = 0
            continue
        model.health_failures += 1
        logger.warning("health check failed (%d of %d): %s", model.health_failures,
                       settings.failure_threshold, reason)
        if model.health_failures >= settings.failure_threshold:
            model.error = reason
            model.state = WorkerState.UNHEALTHY
            logger.error("unhealthy after %d failed health checks in a row; the replica is taken "
                         "out of rotation and restarted", model.health_failures)
