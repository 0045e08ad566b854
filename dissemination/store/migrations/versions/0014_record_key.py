"""A keyed dissemination record: each entry names the key its HMAC was made with.

`dissemination_records.key_id`: the id of the record key (a digest prefix, never the key) an
entry's hash is an HMAC under; empty for entries chained with plain SHA-256 before the record
was keyed. Added in place, so the table's append-only triggers stay.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("dissemination_records", sa.Column("key_id", sa.String(16)))
