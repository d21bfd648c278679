"""Field-level encryption with per-person keys (issue 14, PostgreSQL and crypto-shredding).

Revision ID: 0003
Revises: 0002

Adds the ``gallery_key`` table (key id, ratchet epoch and check value of the gallery's field
key; no key in it) and each person's wrapped data key (``person.key_wrapped``,
``person.key_epoch``), and makes ``face_template.source`` a ``TEXT`` (its sealed form is
longer than 500 characters; SQLite does not enforce lengths, so only PostgreSQL changes).
Existing rows keep their fields in clear (both columns NULL) until ``faceapp keys migrate``
encrypts them; the migration itself only changes the schema.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gallery_key",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("check_value", sa.LargeBinary, nullable=False),
    )
    with op.batch_alter_table("person") as batch:
        batch.add_column(sa.Column("key_wrapped", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("key_epoch", sa.Integer, nullable=True))
    if op.get_bind().dialect.name == "postgresql":  # varchar -> text: no table rewrite
        op.alter_column("face_template", "source", type_=sa.Text, existing_nullable=False)


def downgrade() -> None:
    raise NotImplementedError("gallery migrations go forward only")
