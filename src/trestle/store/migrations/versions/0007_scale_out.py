"""scale-out: per-key rate limits, and pushed folders kept in the store for other gateways

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22

`api_keys.rpm` / `api_keys.tpm`: requests and tokens per minute a key may use (NULL: no limit).
`deployment_archives`: the gzip tar a deployment was pushed as, in chunks, written on PostgreSQL
only, so that every gateway sharing the database can unpack the folder on its own machine.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("rpm", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tpm", sa.Integer(), nullable=True))
    op.create_table(
        "deployment_archives",
        sa.Column("deployment_id", sa.String(16), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE",
                                name="fk_deployment_archives_deployment_id_deployments"),
        sa.PrimaryKeyConstraint("deployment_id", "part", name="pk_deployment_archives"),
    )


def downgrade() -> None:
    op.drop_table("deployment_archives")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("tpm")
        batch.drop_column("rpm")
