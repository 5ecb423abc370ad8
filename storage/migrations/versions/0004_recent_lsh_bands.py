"""new band keys go to a small lsh_band_recent table, merged into lsh_band in key order

A band key is a hash, so each new article's 40 band rows land on ~40 random pages of
the band index, and every commit writes each page it touched to the WAL: with one
commit per feed, that was nearly a page per band row once the index was large. New
bands now go to `lsh_band_recent`, small enough to stay cheap to write; when it holds
the bands of more than `storage.dedup.RECENT_BAND_ARTICLES` articles, one statement
moves them into `lsh_band` in key order, touching each page there once.
`lsh_band_state.merged_through` is the newest article whose bands were moved.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 02:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lsh_band_recent",
        sa.Column("key", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "article_id"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "lsh_band_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("merged_through", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # Every existing article's bands are in lsh_band already.
    op.execute(
        "INSERT INTO lsh_band_state (id, merged_through) "
        "SELECT 1, coalesce(max(id), 0) FROM article"
    )


def downgrade() -> None:
    op.execute(
        "INSERT INTO lsh_band (key, article_id) "
        "SELECT key, article_id FROM lsh_band_recent ORDER BY key, article_id"
    )
    op.drop_table("lsh_band_state")
    op.drop_table("lsh_band_recent")
