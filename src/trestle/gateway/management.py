"""The management API under `/api/v1`, used by the CLI (and by scripts: it is plain JSON)."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from trestle.deploy.manager import DeploymentManager
from trestle.deploy.package import receive
from trestle.errors import BadRequest, NotFound, PayloadTooLarge
from trestle.protocol import management as wire
from trestle.protocol.errors import error_response
from trestle.protocol.validation import parse_body
from trestle.store import Deployment, Environment, Model, Store

PREFIX = "/api/v1"


def _manager(request: Request) -> DeploymentManager:
    return request.app.state.manager


def _store(request: Request) -> Store:
    return request.app.state.store


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


def urls(base: str, model_id: str, deployment_id: str) -> dict[str, str]:
    m = f"{base}/model/{model_id}"
    return {
        "production": f"{m}/production/predict",
        "development": f"{m}/development/predict",
        "deployment": f"{m}/deployment/{deployment_id}/predict",
        "chat_completions": f"{m}/deployment/{deployment_id}/sync/v1/chat/completions",
    }


async def push(request: Request) -> JSONResponse:
    """The body (a gzip tar) goes to disk as it arrives, bounded by `Limits.upload_bytes`; over
    the limit, the answer closes the connection so that the rest is not read."""
    manager = _manager(request)
    limits = manager.settings.limits
    declared = request.headers.get("content-length", "")
    try:
        if declared.isdigit() and int(declared) > limits.upload_bytes:
            raise PayloadTooLarge(f"the push body is larger than {limits.describe('upload_bytes')}",
                                  code="max_upload_bytes")
        archive = await receive(request.stream(), manager.upload_dir(), limits)
    except PayloadTooLarge as exc:
        return error_response(exc, headers={"Connection": "close"})
    except ClientDisconnect:
        raise BadRequest("the client went away before the push body ended") from None
    q = request.query_params
    try:
        result = await manager.push(
            archive,
            name=q.get("name") or None,
            promote=q.get("promote", "0").lower() in ("1", "true", "yes"),
            environment=q.get("environment") or None,
        )
    finally:
        archive.unlink(missing_ok=True)
    store = _store(request)
    base = str(request.base_url).rstrip("/")
    out = wire.PushResponse(
        model=await _model_out(store, result.model),
        deployment=await _deployment_out(store, result.deployment),
        environments=result.environments,
        urls=urls(base, result.model.id, result.deployment.id),
        ignored_keys=result.ignored_keys,
    )
    return _json(out, 201)


async def list_models(request: Request) -> JSONResponse:
    store = _store(request)
    models = [await _model_out(store, m) for m in await store.list_models()]
    return _json(wire.ModelList(models=models))


async def list_deployments(request: Request) -> JSONResponse:
    store = _store(request)
    model_id = request.query_params.get("model_id") or None
    deps = await store.list_deployments(model_id)
    envs = {m: await store.list_environments(m) for m in {d.model_id for d in deps}}
    out = [await _deployment_out(store, d, envs[d.model_id]) for d in deps]
    return _json(wire.DeploymentList(deployments=out))


async def get_deployment(request: Request) -> JSONResponse:
    store = _store(request)
    dep = await store.get_deployment(request.path_params["deployment_id"])
    if dep is None:
        raise NotFound(f"no deployment with id {request.path_params['deployment_id']}")
    return _json(await _deployment_out(store, dep))


async def deployment_logs(request: Request) -> PlainTextResponse:
    path = _manager(request).log_file(request.path_params["deployment_id"])
    text = path.read_text(errors="replace") if path.exists() else ""
    return PlainTextResponse(text)


async def promote(request: Request) -> JSONResponse:
    body = await _body(request, wire.PromoteRequest)
    model_id, env = request.path_params["model_id"], request.path_params["env"]
    await _manager(request).promote(model_id, env, body.deployment_id)
    return _json(wire.EnvironmentOut(model_id=model_id, name=env, deployment_id=body.deployment_id))


def _key_out(key) -> wire.KeyOut:
    return wire.KeyOut(id=key.id, name=key.name, prefix=key.prefix, created_at=key.created_at,
                       revoked_at=key.revoked_at)


async def create_key(request: Request) -> JSONResponse:
    body = await _body(request, wire.KeyCreate)
    key, plaintext = await _store(request).create_api_key(body.name)
    return _json(wire.KeyCreated(**_key_out(key).model_dump(), key=plaintext), 201)


async def list_keys(request: Request) -> JSONResponse:
    keys = await _store(request).list_api_keys()
    return _json(wire.KeyList(keys=[_key_out(k) for k in keys]))


async def revoke_key(request: Request) -> JSONResponse:
    key = await _store(request).revoke_api_key(request.path_params["key_id"])
    return _json(_key_out(key))


async def set_secret(request: Request) -> JSONResponse:
    body = await _body(request, wire.SecretSet)
    await _store(request).set_secret(request.path_params["name"], body.value)
    return _json(wire.SecretList(secrets=await _store(request).list_secret_names()))


async def list_secrets(request: Request) -> JSONResponse:
    return _json(wire.SecretList(secrets=await _store(request).list_secret_names()))


routes = [
    Route(f"{PREFIX}/push", push, methods=["POST"]),
    Route(f"{PREFIX}/models", list_models, methods=["GET"]),
    Route(f"{PREFIX}/deployments", list_deployments, methods=["GET"]),
    Route(f"{PREFIX}/deployments/{{deployment_id}}", get_deployment, methods=["GET"]),
    Route(f"{PREFIX}/deployments/{{deployment_id}}/logs", deployment_logs, methods=["GET"]),
    Route(f"{PREFIX}/models/{{model_id}}/environments/{{env}}", promote, methods=["POST"]),
    Route(f"{PREFIX}/keys", create_key, methods=["POST"]),
    Route(f"{PREFIX}/keys", list_keys, methods=["GET"]),
    Route(f"{PREFIX}/keys/{{key_id}}", revoke_key, methods=["DELETE"]),
    Route(f"{PREFIX}/secrets/{{name}}", set_secret, methods=["PUT"]),
    Route(f"{PREFIX}/secrets", list_secrets, methods=["GET"]),
]
