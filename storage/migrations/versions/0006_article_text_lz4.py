"""PostgreSQL: article texts compressed with lz4 instead of pglz

An article's text (~2-3 KB) is past PostgreSQL's TOAST threshold, so every stored
article is compressed on insert, by pglz unless the column says otherwise. Replaying
300 feeds x 50 articles one feed per transaction, as a worker stores them, the COPY of
their article rows took 0.67-0.70 s with pglz and 0.48-0.51 s with lz4. Only rows
written from now on are compressed with lz4; older ones stay readable as they are.
Servers built without lz4 (and PostgreSQL before 14) keep pglz. SQLite: nothing to do.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 00:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One row when the server offers lz4 for TOAST compression, none otherwise.
_LZ4_OFFERED = (
    "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
)


def _set_compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if bind.exec_driver_sql(_LZ4_OFFERED).first() is None:
        return
    op.execute(f"ALTER TABLE article ALTER COLUMN text SET COMPRESSION {method}")


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("pglz")
