"""The embeddings engine: a worker process that serves OpenAI `/v1/embeddings`.

Read top-down:
    app     the worker's ASGI app: routes, health, readiness, one encode at a time
    model   `EmbeddingModel`: sentence-transformers on CPU (the one module importing torch)

A deployment whose `config.yaml` has `engine: {kind: sentence_transformers, weights: ..., slug: ...}`
is served by it (`trestle.runtime.server` picks the app by `engine.kind`).
"""
