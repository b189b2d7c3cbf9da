"""environment history: every deployment an environment was pointed at, in order (rollback)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

Each environment that exists before this revision starts its history with where it points now.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "environment_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.String(16), sa.ForeignKey("models.id", name="fk_environment_history_model_id_models"),
                  nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("deployment_id", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_environment_history"),
    )
    op.create_index("ix_environment_history_model_id", "environment_history", ["model_id", "name"])
    op.execute(
        "INSERT INTO environment_history (model_id, name, deployment_id, created_at) "
        "SELECT model_id, name, deployment_id, updated_at FROM environments"
    )


def downgrade() -> None:
    op.drop_index("ix_environment_history_model_id", table_name="environment_history")
    op.drop_table("environment_history")
