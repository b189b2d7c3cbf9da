"""The edge: one ASGI app for auth, routing, proxying to replicas and the management API."""
