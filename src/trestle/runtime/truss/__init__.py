"""The runtime of a Truss-style model folder: the worker's ASGI app (`app`: routes, bodies in JSON
or msgpack through `bodies`, streams through `streaming`) around the user's Model class, loaded
by `loader`, checked against `contract` and called by `host` (with `healthcheck` polling its
`is_healthy`, and `tracebacks` trimmed to the user's frames); or, with `docker_server:`, the
user's own HTTP server proxied (`docker_server`)."""
