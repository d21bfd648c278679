"""The tamper-evident audit log and consent records (issue 14's tables).

Revision ID: 0002
Revises: 0001

Galleries opened by a development build of faceapp may already have these tables (that
build created them on open): they are then left as they are.
"""

import sqlalchemy as sa
from alembic import op

from faceapp.gallery.audit import install_append_only

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    tables = set(sa.inspect(conn).get_table_names())
    if "audit_entry" not in tables:
        op.create_table(
            "audit_entry",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("time", sa.String(40), nullable=False),
            sa.Column("actor", sa.String(200), nullable=False),
            sa.Column("action", sa.String(40), nullable=False),
            sa.Column("outcome", sa.String(40), nullable=False),
            sa.Column("subject", sa.String(200), nullable=False),
            sa.Column("detail", sa.Text, nullable=False),
            sa.Column("prev_hash", sa.String(64), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
            sqlite_autoincrement=True,
        )
        op.create_index("ix_audit_entry_time", "audit_entry", ["time"])
    install_append_only(conn)  # the SQLite triggers that refuse UPDATE / DELETE
    if "consent" not in tables:
        op.create_table(
            "consent",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("person_id", sa.Integer, sa.ForeignKey("person.id", ondelete="CASCADE"),
                      nullable=False),
            sa.Column("time", sa.DateTime(timezone=True), nullable=False),
            sa.Column("given_by", sa.String(200), nullable=False),
            sa.Column("recorded_by", sa.String(200), nullable=False),
            sa.Column("purpose", sa.String(500), nullable=False),
            sa.Column("basis", sa.Text, nullable=False),
        )
        op.create_index("ix_consent_person_id", "consent", ["person_id"])


def downgrade() -> None:
    raise NotImplementedError("gallery migrations go forward only")
