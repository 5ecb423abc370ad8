"""full-text search off the ingest path: one article index, caught up before searches

SQLite: the article FTS5 index is no longer written by an insert trigger; the rows
above `search_index_state.indexed_through` are indexed in one statement before a
search (and periodically by the worker), see storage/search.py. The delete and
update triggers only touch rows that were indexed. The alert FTS index is dropped on
both backends: an alert is searched through its article's title and text, which
contain its title and snippet. The alert rule_id and story_id indexes are dropped as
well: nothing queries story_id alone, and the unique (rule_id, story_id) constraint
serves rule_id.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXED = "(SELECT indexed_through FROM search_index_state WHERE name = 'article')"


def upgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_rule_id")
        batch_op.drop_index("ix_alert_story_id")
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP INDEX IF EXISTS ix_alert_fts")
        return
    for suffix in ("ai", "ad", "au"):
        op.execute(f"DROP TRIGGER IF EXISTS alert_fts_{suffix}")
        op.execute(f"DROP TRIGGER IF EXISTS article_fts_{suffix}")
    op.execute("DROP TABLE IF EXISTS alert_fts")
    op.execute(
        "CREATE TABLE search_index_state "
        "(name TEXT PRIMARY KEY NOT NULL, indexed_through INTEGER NOT NULL)"
    )
    # Every existing article was indexed by the old insert trigger.
    op.execute(
        "INSERT INTO search_index_state (name, indexed_through) "
        "SELECT 'article', coalesce(max(id), 0) FROM article"
    )
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


def downgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.create_index("ix_alert_rule_id", ["rule_id"], unique=False)
        batch_op.create_index("ix_alert_story_id", ["story_id"], unique=False)
    if op.get_bind().dialect.name != "sqlite":
        op.execute(
            "CREATE INDEX ix_alert_fts ON alert USING gin "
            "(to_tsvector('simple', coalesce(title, '') || ' ' || coalesce(snippet, '')))"
        )
        return
    op.execute("DROP TRIGGER IF EXISTS article_fts_ad")
    op.execute("DROP TRIGGER IF EXISTS article_fts_au")
    op.execute("DROP TABLE IF EXISTS search_index_state")
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
