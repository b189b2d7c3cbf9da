"""initial: models, deployments, environments, api_keys, secrets

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUS_CHECK = "status IN ('active', 'building', 'deploying', 'failed', 'inactive')"


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("model_id", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("source_dir", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(STATUS_CHECK, name="ck_deployments_status"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_deployments_model_id_models"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
    )
    op.create_index("ix_deployments_model_id", "deployments", ["model_id"])
    op.create_index("ix_deployments_status", "deployments", ["status"])
    op.create_table(
        "environments",
        sa.Column("model_id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("deployment_id", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"],
            name="fk_environments_deployment_id_deployments",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_environments_model_id_models"
        ),
        sa.PrimaryKeyConstraint("model_id", "name", name="pk_environments"),
    )
    op.create_index("ix_environments_deployment_id", "environments", ["deployment_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )
    op.create_table(
        "secrets",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_secrets"),
    )


def downgrade() -> None:
    op.drop_table("secrets")
    op.drop_table("api_keys")
    op.drop_index("ix_environments_deployment_id", table_name="environments")
    op.drop_table("environments")
    op.drop_index("ix_deployments_status", table_name="deployments")
    op.drop_index("ix_deployments_model_id", table_name="deployments")
    op.drop_table("deployments")
    op.drop_table("models")
