"""Wire types: one pydantic definition per type, shared by gateway, worker, engine and tests."""
