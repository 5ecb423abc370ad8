"""keep per-article work off the ingest path: deferred full-text index, no band FK

Full-text search: the article index is no longer written while articles are stored.
Articles above `search_index_state.indexed_through` are indexed in one statement
before a search and periodically by the worker (storage/search.py). On SQLite the FTS5
insert trigger goes, and the delete/update triggers only touch indexed rows; on
PostgreSQL the GIN expression index on article becomes a GIN index on a separate
`article_search` table of tsvectors. Alerts are searched through their article, whose
title and text contain the alert's title and snippet, so the alert indexes go.

The alert rule_id and story_id indexes go too: nothing queries story_id alone, and the
unique (rule_id, story_id) constraint serves rule_id. lsh_band loses its foreign key:
it is written only by ingest, in the article's own transaction, and a check per band
row (40 per article) cost more than the band insert itself on PostgreSQL; look-ups
join article, so a band of a deleted article finds nothing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXED = "(SELECT indexed_through FROM search_index_state WHERE name = 'article')"
_PG_DOCUMENT = "to_tsvector('simple', coalesce(title, '') || ' ' || coalesce(text, ''))"


def upgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_rule_id")
        batch_op.drop_index("ix_alert_story_id")
    op.create_table(
        "search_index_state",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("indexed_through", sa.Integer(), nullable=False),
    )
    # Every existing article was indexed by the old trigger or expression index.
    op.execute(
        "INSERT INTO search_index_state (name, indexed_through) "
        "SELECT 'article', coalesce(max(id), 0) FROM article"
    )
    if op.get_bind().dialect.name == "sqlite":
        _upgrade_sqlite()
    else:
        _upgrade_postgresql()


def _upgrade_sqlite() -> None:
    for suffix in ("ai", "ad", "au"):
        op.execute(f"DROP TRIGGER IF EXISTS alert_fts_{suffix}")
        op.execute(f"DROP TRIGGER IF EXISTS article_fts_{suffix}")
    op.execute("DROP TABLE IF EXISTS alert_fts")
    op.execute(
        "CREATE TRIGGER article_fts_ad AFTER DELETE ON article "
        f"WHEN old.id <= {_INDEXED} BEGIN "
        "INSERT INTO article_fts(article_fts, rowid, title, text) "
        "VALUES ('delete', old.id, old.title, old.text); END"
    )
    op.execute(
        "CREATE TRIGGER article_fts_au AFTER UPDATE OF title, text ON article "
        f"WHEN old.id <= {_INDEXED} BEGIN "
        "INSERT INTO article_fts(article_fts, rowid, title, text) "
        "VALUES ('delete', old.id, old.title, old.text); "
        "INSERT INTO article_fts(rowid, title, text) VALUES (new.id, new.title, new.text); END"
    )
    # SQLite cannot drop a constraint: copy the bands into a table without it.
    op.execute(
        "CREATE TABLE lsh_band_new (key BIGINT NOT NULL, article_id INTEGER NOT NULL, "
        "PRIMARY KEY (key, article_id)) WITHOUT ROWID"
    )
    op.execute("INSERT INTO lsh_band_new (key, article_id) SELECT key, article_id FROM lsh_band")
    op.execute("DROP TABLE lsh_band")
    op.execute("ALTER TABLE lsh_band_new RENAME TO lsh_band")


def _upgrade_postgresql() -> None:
    op.execute("DROP INDEX IF EXISTS ix_alert_fts")
    op.execute("DROP INDEX IF EXISTS ix_article_fts")
    op.create_table(
        "article_search",
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("document", sa.dialects.postgresql.TSVECTOR(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["article.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("article_id"),
    )
    op.execute(f"INSERT INTO article_search SELECT id, {_PG_DOCUMENT} FROM article")
    op.execute("CREATE INDEX ix_article_search_document ON article_search USING gin (document)")
    for fk in sa.inspect(op.get_bind()).get_foreign_keys("lsh_band"):
        op.drop_constraint(fk["name"], "lsh_band", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.create_index("ix_alert_rule_id", ["rule_id"], unique=False)
        batch_op.create_index("ix_alert_story_id", ["story_id"], unique=False)
    op.drop_table("search_index_state")
    if op.get_bind().dialect.name == "sqlite":
        _downgrade_sqlite()
        return
    op.drop_table("article_search")
    op.create_foreign_key(None, "lsh_band", "article", ["article_id"], ["id"], ondelete="CASCADE")
    op.execute(
        "CREATE INDEX ix_alert_fts ON alert USING gin "
        "(to_tsvector('simple', coalesce(title, '') || ' ' || coalesce(snippet, '')))"
    )
    op.execute(f"CREATE INDEX ix_article_fts ON article USING gin ({_PG_DOCUMENT})")


def _downgrade_sqlite() -> None:
    op.execute("DROP TRIGGER IF EXISTS article_fts_ad")
    op.execute("DROP TRIGGER IF EXISTS article_fts_au")
    op.execute(
        "CREATE TABLE lsh_band_old (key BIGINT NOT NULL, article_id INTEGER NOT NULL, "
        "PRIMARY KEY (key, article_id), "
        "FOREIGN KEY(article_id) REFERENCES article (id) ON DELETE CASCADE) WITHOUT ROWID"
    )
    op.execute("INSERT INTO lsh_band_old (key, article_id) SELECT key, article_id FROM lsh_band")
    op.execute("DROP TABLE lsh_band")
    op.execute("ALTER TABLE lsh_band_old RENAME TO lsh_band")
    # Rebuild both indexes from their content tables, then restore the 0001 triggers.
    op.execute(
        "CREATE VIRTUAL TABLE alert_fts USING fts5(title, snippet, "
        "content='alert', content_rowid='id', tokenize='unicode61')"
    )
    op.execute("INSERT INTO alert_fts(alert_fts) VALUES ('rebuild')")
    op.execute("INSERT INTO article_fts(article_fts) VALUES ('rebuild')")
    for table, cols in (("alert", "title, snippet"), ("article", "title, text")):
        new_vals = ", ".join(f"new.{c.strip()}" for c in cols.split(","))
        old_vals = ", ".join(f"old.{c.strip()}" for c in cols.split(","))
        op.execute(
            f"CREATE TRIGGER {table}_fts_ai AFTER INSERT ON {table} BEGIN "
            f"INSERT INTO {table}_fts(rowid, {cols}) VALUES (new.id, {new_vals}); END"
        )
        op.execute(
            f"CREATE TRIGGER {table}_fts_ad AFTER DELETE ON {table} BEGIN "
            f"INSERT INTO {table}_fts({table}_fts, rowid, {cols}) "
            f"VALUES ('delete', old.id, {old_vals}); END"
        )
        op.execute(
            f"CREATE TRIGGER {table}_fts_au AFTER UPDATE OF {cols} ON {table} BEGIN "
            f"INSERT INTO {table}_fts({table}_fts, rowid, {cols}) "
            f"VALUES ('delete', old.id, {old_vals}); "
            f"INSERT INTO {table}_fts(rowid, {cols}) VALUES (new.id, {new_vals}); END"
        )
