"""The worker runtime: serves one model folder as an ASGI app.

Read top-down:
    server         `python -m trestle.runtime`: arguments, logging, uvicorn
    engines        which app serves a folder: a Truss-style model, its own server, or an engine
                   by `engine.kind` (`engine_worker`: what the engine workers share)
    truss/         a Truss-style folder:
      app          routes, health, readiness gate: request bodies in, responses out (`bodies`)
      host         `LoadedModel`: loads the Model once, calls it (concurrency slots, user errors)
      contract     what a Model class may define, checked at load
      loader       imports `model/model.py` from the folder, builds the instance
      streaming    generators streamed through a bounded buffer
      healthcheck  polling the Model's `is_healthy`
      tracebacks   user tracebacks trimmed to the user's frames
      docker_server  a folder with `docker_server:`: the user's own HTTP server, proxied
    config         config.yaml as a worker reads it
    secrets        the secrets file and the read-only mapping the Model gets
    logs           request ids on every log line
    parent         a worker never outlives the gateway that started it

The user-facing contract is documented in docs/model-contract.md.
"""
