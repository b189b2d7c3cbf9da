"""prompt endpoints: endpoints and their versions, model prices, usage records

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "endpoints",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_endpoints"),
        sa.UniqueConstraint("name", name="uq_endpoints_name"),
    )
    op.create_table(
        "endpoint_versions",
        sa.Column("endpoint_id", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["endpoint_id"], ["endpoints.id"], ondelete="CASCADE",
                                name="fk_endpoint_versions_endpoint_id_endpoints"),
        sa.PrimaryKeyConstraint("endpoint_id", "version", name="pk_endpoint_versions"),
    )
    op.create_table(
        "prices",
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("prompt", sa.Float(), nullable=False),
        sa.Column("completion", sa.Float(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("model", name="pk_prices"),
    )
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("endpoint_id", sa.String(16), nullable=False),
        sa.Column("endpoint_version", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=True),
        sa.Column("user", sa.String(255), nullable=True),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("prompt_cost", sa.Float(), nullable=False),
        sa.Column("completion_cost", sa.Float(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage_records"),
    )
    op.create_index("ix_usage_records_created_at", "usage_records", ["created_at"])
    op.create_index("ix_usage_records_endpoint_id", "usage_records", ["endpoint_id"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_endpoint_id", table_name="usage_records")
    op.drop_index("ix_usage_records_created_at", table_name="usage_records")
    op.drop_table("usage_records")
    op.drop_table("prices")
    op.drop_table("endpoint_versions")
    op.drop_table("endpoints")
