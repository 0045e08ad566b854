"""When each alert's first delivery was sent.

`alerts.first_delivered_at`: set once, by the settlement that records the alert's first sent
row on any instance (a conditional update, so concurrent workers set it once); the time from
receipt to it is the publish-to-first-delivery metric.

Revision ID: 0022
Revises: 0021
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("first_delivered_at", sa.DateTime(timezone=True)))
