"""The worker runtime: serves one Truss-style model folder as an ASGI app.

Read top-down:
    server      `python -m trestle.runtime`: arguments, logging, uvicorn
    engines     which app serves a folder: the model runtime, or an engine by `engine.kind`
    app         routes, health, readiness gate: request bodies in, responses out
    host        `LoadedModel`: loads the Model once, calls it (concurrency slots, user errors)
    contract    what a Model class may define, checked at load
    loader      imports `model/model.py` from the folder, builds the instance
    streaming   generators streamed through a bounded buffer
    secrets     the secrets file and the read-only mapping the Model gets
    logs        request ids on every log line
    tracebacks  user tracebacks trimmed to the user's frames

The user-facing contract is documented in docs/model-contract.md.
"""
