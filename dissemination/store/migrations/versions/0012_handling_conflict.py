"""Conflicting handling marks kept with the alert, and references resolved by meaning.

`alerts.handling_conflict`: the differing TLP marks an alert carried when it carried more
than one (its effective TLP is the strictest). `ix_alerts_identifier`: references are
resolved by (sender in any case, identifier, instant), which the unique key on the spelled
(sender, identifier, sent) cannot serve.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("handling_conflict", sa.JSON))
    op.create_index("ix_alerts_identifier", "alerts", ["identifier"])
