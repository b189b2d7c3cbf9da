"""Alembic environment of the store, run by `trestle.store.migrate` (there is no alembic.ini).

The caller passes an open connection in `config.attributes["connection"]`; migrations run inside
the transaction that the caller began, so that two processes opening a fresh database at the same
time apply them once.
"""

from __future__ import annotations

from alembic import context

from trestle.store.tables import Base, is_search_object

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "trestle's migrations run through trestle.store.migrate (e.g. Store.open(url)), "
        "which passes the connection; there is no alembic.ini"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
    compare_type=True,
    # FTS5 and pgvector tables belong to the search implementations, not to the ORM.
    include_name=lambda name, type_, parents: not is_search_object(name),
)
with context.begin_transaction():
    context.run_migrations()
