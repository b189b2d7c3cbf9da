"""The management API under `/api/v1`, used by the CLI (and by scripts: it is plain JSON)."""

from __future__ import annotations

from functools import partial

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trestle.deploy.logs import logfile
from trestle.deploy.lifecycle import EnvironmentState
from trestle.deploy.build.package import receive
from trestle.errors import BadRequest, NotFound, PayloadTooLarge
from trestle.protocol import management as wire
from trestle.protocol.errors import error_response
from trestle.protocol.validation import parse_body
from trestle.gateway import logstream
from trestle.gateway.context import Gateway
from trestle.store import Deployment, Environment, Model, Store

PREFIX = "/api/v1"


def _json(model: BaseModel, status_code: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status_code)


async def _body(request: Request, cls: type[BaseModel]) -> BaseModel:
    return parse_body(cls, await request.body())


async def _model_out(store: Store, model: Model) -> wire.ModelOut:
    envs = {e.name: e.deployment_id for e in await store.list_environments(model.id)}
    return wire.ModelOut(id=model.id, name=model.name, created_at=model.created_at, environments=envs)


async def _deployment_out(store: Store, dep: Deployment,
                          envs: list[Environment] | None = None) -> wire.DeploymentOut:
    """`envs`: the model's environments, when the caller already has them."""
    if envs is None:
        envs = await store.list_environments(dep.model_id)
    return wire.DeploymentOut(
        id=dep.id, model_id=dep.model_id, status=dep.status, error=dep.error,
        created_at=dep.created_at, updated_at=dep.updated_at, config=dep.config,
        environments=[e.name for e in envs if e.deployment_id == dep.id],
    )


def urls(base: str, model_id: str, deployment_id: str, environments: list[str],
         methods: list[str], slug: str | None, predict: bool = True) -> dict[str, str]:
    """The URLs that reach this deployment once it is active, and only those that will work:
    `/predict` for a Model class (`predict`), the OpenAI routes it has (an engine's under its
    slug at `/v1`)."""
    m = f"{base}/model/{model_id}"
    targets = {env: f"{m}/{env}" for env in environments}
    targets["deployment"] = f"{m}/deployment/{deployment_id}"
    out: dict[str, str] = {}
    if slug is not None:  # an engine: no /predict; called by its slug, or through its own URLs
        out["chat_completions"] = f"{base}/v1/chat/completions"
        out["completions"] = f"{base}/v1/completions"
        out["deployment_chat_completions"] = f"{targets['deployment']}/sync/v1/chat/completions"
        return out
    for name, target in targets.items():
        if predict:
            out[name] = f"{target}/predict"
    paths = {"chat_completions": "v1/chat/completions", "completions": "v1/completions"}
    for method in methods:
        out[method] = f"{targets['deployment']}/sync/{paths[method]}"
    return out


async def push(gw: Gateway, request: Request) -> JSONResponse:
    """The body (a gzip tar) goes to disk as it arrives, bounded by `Limits.upload_bytes`; over
    the limit, the answer closes the connection so that the rest is not read."""
    limits = gw.settings.limits
    declared = request.headers.get("content-length", "")
    try:
        if declared.isdigit() and int(declared) > limits.upload_bytes:
            raise PayloadTooLarge(f"the push body is larger than {limits.describe('upload_bytes')}",
                                  code="max_upload_bytes")
        archive = await receive(request.stream(), gw.manager.upload_dir(), limits)
    except PayloadTooLarge as exc:
        return error_response(exc, headers={"Connection": "close"})
    except ClientDisconnect:
        raise BadRequest("the client went away before the push body ended") from None
    q = request.query_params
    try:
        result = await gw.manager.push(
            archive,
            name=q.get("name") or None,
            promote=q.get("promote", "0").lower() in ("1", "true", "yes"),
            environment=q.get("environment") or None,
        )
    finally:
        archive.unlink(missing_ok=True)
    store = gw.store
    base = str(request.base_url).rstrip("/")
    slug = (result.deployment.config.get("engine") or {}).get("slug")
    out = wire.PushResponse(
        model=await _model_out(store, result.model),
        deployment=await _deployment_out(store, result.deployment),
        environments=result.environments,
        slug=slug,
        notes=result.notes,
        urls=urls(base, result.model.id, result.deployment.id, result.environments,
                  result.methods, slug, predict="upstream" not in result.deployment.config),
        ignored_keys=result.ignored_keys,
    )
    return _json(out, 201)


async def list_models(gw: Gateway, request: Request) -> JSONResponse:
    store = gw.store
    models = [await _model_out(store, m) for m in await store.list_models()]
    return _json(wire.ModelOutList(models=models))


async def list_deployments(gw: Gateway, request: Request) -> JSONResponse:
    store = gw.store
    model_id = request.query_params.get("model_id") or None
    deps = await store.list_deployments(model_id)
    envs = {m: await store.list_environments(m) for m in {d.model_id for d in deps}}
    out = [await _deployment_out(store, d, envs[d.model_id]) for d in deps]
    return _json(wire.DeploymentList(deployments=out))


async def get_deployment(gw: Gateway, request: Request) -> JSONResponse:
    store = gw.store
    dep = await store.get_deployment(request.path_params["deployment_id"])
    if dep is None:
        raise NotFound(f"no deployment with id {request.path_params['deployment_id']}")
    out = await _deployment_out(store, dep)
    replicas = gw.manager.backend.replicas(dep.id)
    if replicas is not None:
        out.replicas = [wire.ReplicaOut(**r) for r in replicas]
    return _json(out)


async def scale_deployment(gw: Gateway, request: Request) -> JSONResponse:
    """`POST /deployments/{id}/scale` with a `ScaleRequest`: answers the deployment."""
    body = await _body(request, wire.ScaleRequest)
    dep_id = request.path_params["deployment_id"]
    await gw.manager.scale(dep_id, body.model_dump(exclude_none=True))
    return await get_deployment(gw, request)


LOG_TAIL_DEFAULT = 1000
LOG_TAIL_MAX = 100_000
LOG_LIMIT_DEFAULT = 1024 * 1024
LOG_LIMIT_MAX = 8 * 1024 * 1024


def _int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 18 or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}", param=name)
    return int(raw)


async def deployment_logs(gw: Gateway, request: Request) -> Response:
    """The deployment log: its last `tail` lines (default 1000), or `limit` bytes from byte
    `offset`. Never reads more of the file than it answers; `x-log-size` is the file's size.
    `format=json`: JSON lines instead (`trestle.deploy.logs.logrecords`), with `since` and `follow`."""
    path = gw.manager.log_file(request.path_params["deployment_id"])
    fmt = request.query_params.get("format", "text")
    if fmt == "json":
        return await logstream.json_logs(gw, request, path)
    if fmt != "text":
        raise BadRequest("format must be text or json", param="format")
    for name in ("since", "follow"):
        if name in request.query_params:
            raise BadRequest(f"{name} goes with format=json", param=name)
    offset = _int_param(request, "offset", None, 0, 2**62)
    if offset is not None:
        if "tail" in request.query_params:
            raise BadRequest("give either tail or offset (with limit), not both", param="tail")
        limit = _int_param(request, "limit", LOG_LIMIT_DEFAULT, 1, LOG_LIMIT_MAX)
        data = await run_in_threadpool(logfile.read_range, path, offset, limit)
    else:
        if "limit" in request.query_params:
            raise BadRequest("limit goes with offset", param="limit")
        lines = _int_param(request, "tail", LOG_TAIL_DEFAULT, 0, LOG_TAIL_MAX)
        data = await run_in_threadpool(logfile.tail, path, lines)
    headers = {"x-log-size": str(logfile.size(path))}
    return Response(data, media_type="text/plain; charset=utf-8", headers=headers)


async def promote(gw: Gateway, request: Request) -> JSONResponse:
    body = await _body(request, wire.PromoteRequest)
    model_id, env = request.path_params["model_id"], request.path_params["env"]
    dep = gw.routing.deployments.get(body.deployment_id)
    if dep is None or dep.model_id != model_id:
        raise NotFound(f"model {model_id} has no deployment {body.deployment_id}", param="deployment_id")
    return _json(_environment_out(await gw.lifecycle.promote(body.deployment_id, env)))


# -- environments and the deployment lifecycle (trestle.deploy.lifecycle) ----------------------
def _environment_out(env: EnvironmentState) -> wire.EnvironmentOut:
    return wire.EnvironmentOut(model_id=env.model_id, name=env.name, deployment_id=env.deployment_id,
                               serving=env.serving, history=env.history)


async def list_environments(gw: Gateway, request: Request) -> JSONResponse:
    envs = await gw.lifecycle.environments(request.path_params["model_id"])
    return _json(wire.EnvironmentList(environments=[_environment_out(e) for e in envs]))


async def create_environment(gw: Gateway, request: Request) -> JSONResponse:
    body = await _body(request, wire.EnvironmentCreate)
    env = await gw.lifecycle.create_environment(request.path_params["model_id"], body.name,
                                                body.deployment_id)
    return _json(_environment_out(env), 201)


async def get_environment(gw: Gateway, request: Request) -> JSONResponse:
    p = request.path_params
    return _json(_environment_out(await gw.lifecycle.environment(p["model_id"], p["env"])))


async def delete_environment(gw: Gateway, request: Request) -> JSONResponse:
    p = request.path_params
    return _json(_environment_out(await gw.lifecycle.delete_environment(p["model_id"], p["env"])))


async def rollback(gw: Gateway, request: Request) -> JSONResponse:
    p = request.path_params
    return _json(_environment_out(await gw.lifecycle.rollback(p["model_id"], p["env"])))


async def promote_deployment(gw: Gateway, request: Request) -> JSONResponse:
    body = await _body(request, wire.DeploymentPromote)
    env = await gw.lifecycle.promote(request.path_params["deployment_id"], body.environment)
    return _json(_environment_out(env))


def _deployment_action(action: str):
    async def handle(gw: Gateway, request: Request) -> JSONResponse:
        dep = await getattr(gw.lifecycle, action)(request.path_params["deployment_id"])
        if action == "delete":
            return _json(await _deployment_out(gw.store, dep, envs=[]))
        return _json(await _deployment_out(gw.store, dep))

    return handle


def _key_out(key) -> wire.KeyOut:
    return wire.KeyOut(
        id=key.id, name=key.name, prefix=key.prefix, scope=key.scope,
        models=list(key.models) if key.models is not None else None,
        endpoints=list(key.endpoints) if key.endpoints is not None else None,
        rpm=key.rpm, tpm=key.tpm, created_at=key.created_at, revoked_at=key.revoked_at,
    )


async def create_key(gw: Gateway, request: Request) -> JSONResponse:
    body = await _body(request, wire.KeyCreate)
    key, plaintext = await gw.store.create_api_key(body.name, scope=body.scope, models=body.models,
                                                   endpoints=body.endpoints, rpm=body.rpm, tpm=body.tpm)
    return _json(wire.KeyCreated(**_key_out(key).model_dump(), key=plaintext), 201)


async def list_keys(gw: Gateway, request: Request) -> JSONResponse:
    keys = await gw.store.list_api_keys()
    return _json(wire.KeyList(keys=[_key_out(k) for k in keys]))


async def update_key(gw: Gateway, request: Request) -> JSONResponse:
    body = await _body(request, wire.KeyUpdate)
    key = await gw.store.update_api_key(request.path_params["key_id"],
                                        **body.model_dump(exclude_unset=True))
    return _json(_key_out(key))


async def revoke_key(gw: Gateway, request: Request) -> JSONResponse:
    key = await gw.store.revoke_api_key(request.path_params["key_id"])
    return _json(_key_out(key))


async def set_secret(gw: Gateway, request: Request) -> JSONResponse:
    body = await _body(request, wire.SecretSet)
    await gw.store.set_secret(request.path_params["name"], body.value)
    return _json(wire.SecretList(secrets=await gw.store.list_secret_names()))


async def list_secrets(gw: Gateway, request: Request) -> JSONResponse:
    return _json(wire.SecretList(secrets=await gw.store.list_secret_names()))


def routes(gw: Gateway) -> list[Route]:
    return [
        Route(f"{PREFIX}/push", partial(push, gw), methods=["POST"]),
        Route(f"{PREFIX}/models", partial(list_models, gw), methods=["GET"]),
        Route(f"{PREFIX}/deployments", partial(list_deployments, gw), methods=["GET"]),
        Route(f"{PREFIX}/deployments/{{deployment_id}}", partial(get_deployment, gw), methods=["GET"]),
        Route(f"{PREFIX}/deployments/{{deployment_id}}/logs", partial(deployment_logs, gw), methods=["GET"]),
        Route(f"{PREFIX}/deployments/{{deployment_id}}/scale", partial(scale_deployment, gw), methods=["POST"]),
        Route(f"{PREFIX}/deployments/{{deployment_id}}", partial(_deployment_action("delete"), gw),
              methods=["DELETE"]),
        Route(f"{PREFIX}/deployments/{{deployment_id}}/promote", partial(promote_deployment, gw),
              methods=["POST"]),
        Route(f"{PREFIX}/deployments/{{deployment_id}}/deactivate",
              partial(_deployment_action("deactivate"), gw), methods=["POST"]),
        Route(f"{PREFIX}/deployments/{{deployment_id}}/activate",
              partial(_deployment_action("activate"), gw), methods=["POST"]),
        Route(f"{PREFIX}/models/{{model_id}}/environments", partial(list_environments, gw), methods=["GET"]),
        Route(f"{PREFIX}/models/{{model_id}}/environments", partial(create_environment, gw),
              methods=["POST"]),
        Route(f"{PREFIX}/models/{{model_id}}/environments/{{env}}", partial(get_environment, gw),
              methods=["GET"]),
        Route(f"{PREFIX}/models/{{model_id}}/environments/{{env}}", partial(promote, gw), methods=["POST"]),
        Route(f"{PREFIX}/models/{{model_id}}/environments/{{env}}", partial(delete_environment, gw),
              methods=["DELETE"]),
        Route(f"{PREFIX}/models/{{model_id}}/environments/{{env}}/rollback", partial(rollback, gw),
              methods=["POST"]),
        Route(f"{PREFIX}/keys", partial(create_key, gw), methods=["POST"]),
        Route(f"{PREFIX}/keys", partial(list_keys, gw), methods=["GET"]),
        Route(f"{PREFIX}/keys/{{key_id}}", partial(revoke_key, gw), methods=["DELETE"]),
        Route(f"{PREFIX}/keys/{{key_id}}", partial(update_key, gw), methods=["PATCH"]),
        Route(f"{PREFIX}/secrets/{{name}}", partial(set_secret, gw), methods=["PUT"]),
        Route(f"{PREFIX}/secrets", partial(list_secrets, gw), methods=["GET"]),
    ]
