"""new band keys go to lsh_band_log, one row per article, instead of lsh_band_recent

`lsh_band_recent` kept new bands in key order, so every commit rewrote most of its
pages, and each move into `lsh_band` (every 2,500 articles) rewrote most of that
table. New articles' keys are now one row per article, appended in id order, and
looked up in memory (`storage.recentindex`) until ingest moves them into `lsh_band`,
every `storage.dedup.RECENT_BAND_ARTICLES` articles. The waiting rows of
`lsh_band_recent` are moved into `lsh_band` here.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 22:00:00.000000
"""

from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEWEST = "UPDATE lsh_band_state SET merged_through = (SELECT coalesce(max(id), 0) FROM article)"


def upgrade() -> None:
    op.execute(
        "INSERT INTO lsh_band (key, article_id) "
        "SELECT key, article_id FROM lsh_band_recent ORDER BY key, article_id"
    )
    op.execute(_NEWEST)
    op.drop_table("lsh_band_recent")
    op.create_table(
        "lsh_band_log",
        sa.Column("article_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("keys", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["article.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("article_id"),
    )


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT article_id, keys FROM lsh_band_log")).all()
    bands = sorted(
        (key, int(article_id))
        for article_id, keys in rows
        for key in np.frombuffer(bytes(keys), "<i8").tolist()
    )
    if bands:
        bind.execute(
            sa.text("INSERT INTO lsh_band (key, article_id) VALUES (:key, :article_id)"),
            [{"key": key, "article_id": article_id} for key, article_id in bands],
        )
    op.drop_table("lsh_band_log")
    op.create_table(
        "lsh_band_recent",
        sa.Column("key", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "article_id"),
        sqlite_with_rowid=False,
    )
    op.execute(_NEWEST)
