"""The loaded model: one instance of the user's Model class, and the rules for calling it.

`LoadedModel` loads the class once in the background (`state` goes loading -> ready | failed, as
`trestle.protocol.health` reports it), then runs each request's user code:

    [preprocess ->] method [-> postprocess]            `run`
    a returned generator -> a buffered stream           `open_stream`

`runtime.predict_concurrency` slots bound the user code: one request holds one slot for
preprocess + predict + postprocess together; a stream frees its slot when its generator is
exhausted (`trestle.runtime.truss.streaming`). Sync methods run in a thread pool with the request's
context (so their log lines carry the request id); async ones run on the event loop.

Exceptions from user code become a generic 500 (the trimmed traceback goes to the log), except
`HTTPException`, which keeps its status and detail. Reading the request and writing the response
is `trestle.runtime.truss.app`'s part.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from starlette.exceptions import HTTPException
from starlette.requests import Request

from trestle import requestid
from trestle.errors import TrestleError
from trestle.protocol.health import WorkerHealth, WorkerState, not_ready
from trestle.runtime.config import CONFIG_FILE
from trestle.runtime.secrets import Secrets
from trestle.runtime.truss import healthcheck
from trestle.runtime.truss.contract import ENDPOINT_METHODS, Method, ModelSpec, describe_model
from trestle.runtime.truss.loader import (
    DATA_DIR,
    ModelDefinitionError,
    code_roots,
    construct,
    import_model_class,
)
from trestle.runtime.truss.streaming import BufferedStream
from trestle.runtime.truss.tracebacks import user_traceback

if TYPE_CHECKING:
    from trestle.deploy.config import ModelConfig
    from trestle.runtime.config import WorkerConfig

logger = logging.getLogger("trestle.runtime")


class UserCodeError(TrestleError):
    """The model's code raised; the client gets no details, the log gets the traceback."""

    truss_code = "600"  # Truss: the error comes from the model's code


class Slot:
    """One held concurrency slot, released exactly once (by the request, or by its stream)."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore = semaphore
        self._held = False
        self.streaming = False  # a stream has taken over releasing it

    async def acquire(self) -> None:
        await self._semaphore.acquire()
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()


class LoadedModel:
    """One instance of the user's Model class: loads it, then calls it under the concurrency slots."""

    def __init__(
        self,
        config: ModelConfig | WorkerConfig,
        model_dir: Path,
        *,
        secrets: Secrets | None = None,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.model_dir = Path(model_dir).resolve()
        self.secrets = secrets if secrets is not None else Secrets()
        self.environment = environment
        self.state = WorkerState.LOADING
        self.error: str | None = None
        self.health_failures = 0  # failed is_healthy() checks in a row (truss.healthcheck)
        self.health_call: asyncio.Future | None = None  # a sync is_healthy() still running
        self.model: object | None = None
        self.spec: ModelSpec | None = None
        concurrency = config.runtime.predict_concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._executor = ThreadPoolExecutor(max_workers=concurrency + 4, thread_name_prefix="model")
        self._roots = code_roots(self.model_dir, config)

    # -- loading -------------------------------------------------------------------------
    async def load(self) -> None:
        """Import, construct and load the model; sets `state` (never raises). Then, when the
        Model defines `is_healthy`, polls it until it is unhealthy
        (`trestle.runtime.truss.healthcheck`)."""
        started = time.perf_counter()
        step = f"importing {self.config.model_module_dir}/{self.config.model_class_filename}"
        try:
            cls = await self.in_thread(import_model_class, self.model_dir, self.config)
            step = f"{cls.__name__}.__init__"
            self.model = await self.in_thread(construct, cls, self._init_arguments())
            self.spec = describe_model(self.model)
            if self.spec.load is not None:
                step = f"{cls.__name__}.load"
                if self.spec.load.is_coroutine:
                    await self.spec.load.fn()
                else:
                    await self.in_thread(self.spec.load.fn)
        except ModelDefinitionError as exc:
            self._fail(str(exc))
        except Exception as exc:
            logger.error("%s failed:\n%s", step, user_traceback(exc, self._roots))
            self._fail(f"{step} raised {type(exc).__name__}: {exc}")
        else:
            self.state = WorkerState.READY
            logger.info("model ready (loaded in %.1f s)", time.perf_counter() - started)
            if self.spec.is_healthy is not None:
                await healthcheck.poll(self)

    def _fail(self, error: str) -> None:
        self.error = error
        self.state = WorkerState.FAILED
        logger.error("model failed to load: %s", error)

    def _init_arguments(self) -> dict[str, Any]:
        raw = yaml.safe_load((self.model_dir / CONFIG_FILE).read_text()) or {}
        return {
            "config": raw,
            "data_dir": self.model_dir / DATA_DIR,
            "secrets": self.secrets,
            "environment": self.environment,
        }

    def check_ready(self) -> None:
        """Raise the 503 while loading or failed (an unhealthy model keeps serving until the
        supervisor restarts it)."""
        if self.state is not WorkerState.READY and self.state is not WorkerState.UNHEALTHY:
            raise not_ready(self.state, self.error)

    def health(self) -> WorkerHealth:
        if self.spec is None:
            return WorkerHealth(status=self.state, error=self.error)
        methods = [name for name in ENDPOINT_METHODS if self.spec.endpoint(name) is not None]
        extra = {"health_check_failures": self.health_failures} if self.spec.is_healthy else {}
        return WorkerHealth(status=self.state, error=self.error, methods=methods, **extra)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- calling -------------------------------------------------------------------------
    async def in_thread(self, fn: Any, *args: Any) -> Any:
        ctx = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(ctx.run, fn, *args))

    async def _invoke(self, method: Method, value: Any, request: Request) -> Any:
        kwargs = method.arguments(value, request)
        if method.is_coroutine:
            result = await method.fn(**kwargs)
        elif method.streams:
            result = method.fn(**kwargs)  # creating a generator runs none of its code
        else:
            result = await self.in_thread(functools.partial(method.fn, **kwargs))
        if inspect.isawaitable(result) and not inspect.isasyncgen(result):
            result = await result
        return result

    def user_error(self, exc: Exception, method: str, *, logged: bool = False) -> TrestleError:
        if not logged:
            logger.error("Model.%s raised:\n%s", method, user_traceback(exc, self._roots))
        return UserCodeError(
            f"the model's {method} failed with an internal error (request id {requestid.current.get()}); "
            "the deployment logs have the details"
        )

    def _log_stream_error(self, method: str, exc: BaseException) -> None:
        if isinstance(exc, HTTPException):
            logger.info("Model.%s raised HTTPException %s while streaming", method, exc.status_code)
        else:
            logger.error("Model.%s raised while streaming:\n%s", method, user_traceback(exc, self._roots))

    def steps(self, name: str) -> tuple[Method, Method] | None:
        """For endpoint `name`: (the method that takes the input, the endpoint method), or None
        when the class does not define it. The first is preprocess for a predict that has one."""
        self.check_ready()
        assert self.spec is not None
        method = self.spec.endpoint(name)
        if method is None:
            return None
        first = self.spec.preprocess if name == "predict" and self.spec.preprocess else method
        return first, method

    def slot(self) -> Slot:
        """A concurrency slot for one request, not yet acquired."""
        return Slot(self._slots)

    async def run(self, name: str, first: Method, method: Method, value: Any, request: Request) -> Any:
        """[preprocess ->] method [-> postprocess], with user exceptions mapped to errors."""
        assert self.spec is not None
        step = first.name
        try:
            if first is not method:
                value = await self._invoke(first, value, request)
            step = method.name
            result = await self._invoke(method, value, request)
            if name == "predict" and self.spec.postprocess is not None:
                if inspect.isgenerator(result) or inspect.isasyncgen(result):
                    raise TrestleError(
                        "Model.predict returned a generator but the Model defines postprocess; "
                        "a stream cannot be post-processed: remove postprocess"
                    )
                step = "postprocess"
                result = await self._invoke(self.spec.postprocess, result, request)
        except (HTTPException, TrestleError):
            raise
        except Exception as exc:
            raise self.user_error(exc, step) from None
        return result

    async def open_stream(self, generator: Any, method: str, slot: Slot) -> tuple[BufferedStream, bytes | None]:
        """Start streaming `generator`; the stream now frees `slot`. Returns it with its first chunk
        (None: it produced nothing); a generator that fails before its first chunk raises here."""
        slot.streaming = True
        stream = BufferedStream(
            generator,
            executor=self._executor,
            on_done=slot.release,
            on_error=functools.partial(self._log_stream_error, method),
        )
        stream.start()
        try:
            first = await stream.first()
        except (HTTPException, TrestleError):
            raise
        except Exception as exc:
            raise self.user_error(exc, method, logged=True) from None
        except BaseException:
            await stream.aclose()
            raise
        return stream, first
