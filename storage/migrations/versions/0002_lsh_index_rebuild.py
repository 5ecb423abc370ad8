"""near-duplicate index: WITHOUT ROWID bands, containment + lead signatures

Recreates lsh_band (WITHOUT ROWID on SQLite: the key is the table, stored once) and
recomputes every article's signature and band keys from its stored text, because the
signature layout and band keys changed (tasks/fingerprint.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 500


def _create_lsh_band() -> None:
    op.create_table(
        "lsh_band",
        sa.Column("key", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["article.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key", "article_id"),
        sqlite_with_rowid=False,
    )


def _reindex() -> None:
    """Fingerprint every stored article again with the current layout."""
    # Imported here: only this step needs the fingerprint code, and it must be the
    # code that the application will use to query the rebuilt index.
    from tasks.fingerprint import fingerprint

    bind = op.get_bind()
    signature = sa.table(
        "article_signature", sa.column("article_id", sa.Integer), sa.column("signature")
    )
    band = sa.table("lsh_band", sa.column("key", sa.BigInteger), sa.column("article_id"))
    op.execute(signature.delete())
    last = 0
    while True:
        rows = bind.execute(
            sa.text("SELECT id, text, title FROM article WHERE id > :last ORDER BY id LIMIT :n"),
            {"last": last, "n": _BATCH},
        ).all()
        if not rows:
            break
        signatures: list[dict[str, object]] = []
        bands: list[dict[str, object]] = []
        for article_id, body, title in rows:
            fp = fingerprint(body or title or "")
            signatures.append({"article_id": article_id, "signature": fp.signature})
            bands.extend({"key": k, "article_id": article_id} for k in set(fp.band_keys))
        bind.execute(signature.insert(), signatures)
        if bands:
            bind.execute(band.insert(), bands)
        last = rows[-1][0]


def upgrade() -> None:
    op.drop_table("lsh_band")
    _create_lsh_band()
    _reindex()


def downgrade() -> None:
    # The 0001 layout's band keys cannot be derived from the new signatures; the
    # downgraded index starts empty (near-duplicate links already stored are kept).
    op.drop_table("lsh_band")
    op.create_table(
        "lsh_band",
        sa.Column("key", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["article.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key", "article_id"),
    )
    op.execute(sa.text("DELETE FROM article_signature"))
