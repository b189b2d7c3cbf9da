"""api key scopes: `scope` (admin | invoke) and the model / endpoint ids an invoke key may call

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Keys that exist before this revision keep what they could do: they become `admin`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("scope", sa.String(16), nullable=False, server_default="admin"))
        batch.add_column(sa.Column("models", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("endpoints", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("endpoints")
        batch.drop_column("models")
        batch.drop_column("scope")
