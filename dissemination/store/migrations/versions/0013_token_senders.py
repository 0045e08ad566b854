"""The senders an API token may publish as.

`api_tokens.senders`: the CAP `sender` values (or local agencies' senders) a token's holder
may publish alerts as, set when the token is created. A token from before this revision has
none, so it can publish nothing until it is replaced by one created with `--sender`.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("senders", sa.JSON))
