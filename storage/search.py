"""Full-text search: SQLite FTS5 or PostgreSQL to_tsvector, behind one function each.

On SQLite the article index is kept off the ingest path: writing it costs more than
storing the article itself (benchmarks/pipeline.py), so articles above the
`search_index_state` mark are indexed in one statement when somebody searches, and
periodically by the worker (`newswatch.index_for_search`). PostgreSQL maintains its
GIN expression index itself. Alerts are searched through their article, whose title
and text contain the alert's title and snippet.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Engine, Integer, column, select, text
from sqlalchemy.orm import Session

from storage.engine import session_scope
from storage.models import Alert

_TOKEN = re.compile(r"\w+", re.UNICODE)


def fts_terms(search: str) -> list[str]:
    """The word tokens of a search string (all must appear, in any order)."""
    return _TOKEN.findall(search.lower())


def refresh_search_index(session: Session) -> int:
    """Index the articles stored since the last refresh; returns how many.

    A no-op on PostgreSQL. Runs in the caller's transaction, which on SQLite holds
    the write lock (BEGIN IMMEDIATE), so two refreshes never index a row twice.
    """
    if session.get_bind().dialect.name != "sqlite":
        return 0
    conn = session.connection()
    mark = conn.execute(
        text("SELECT indexed_through FROM search_index_state WHERE name = 'article'")
    ).scalar()
    top = conn.execute(text("SELECT coalesce(max(id), 0) FROM article")).scalar_one()
    if mark is None or top <= mark:
        return 0
    added = conn.execute(
        text(
            "INSERT INTO article_fts(rowid, title, text) "
            "SELECT id, title, text FROM article WHERE id > :mark AND id <= :top"
        ),
        {"mark": mark, "top": top},
    ).rowcount
    conn.execute(
        text("UPDATE search_index_state SET indexed_through = :top WHERE name = 'article'"),
        {"top": top},
    )
    return int(added or 0)


def index_for_search(engine: Engine) -> int:
    """Bring the search index up to date in its own transaction; returns rows indexed."""
    with session_scope(engine) as session:
        return refresh_search_index(session)


def article_ids_matching(session: Session, search: str) -> Any:
    """A subquery of article ids whose title or text contains every word of `search`.

    On SQLite the index is brought up to date first, in the caller's transaction.
    """
    terms = fts_terms(search)
    if not terms:
        return text("SELECT NULL AS id WHERE 0 = 1").columns(column("id", Integer))
    if session.get_bind().dialect.name == "sqlite":
        refresh_search_index(session)
        match = " AND ".join(f'"{t}"' for t in terms)
        return (
            text("SELECT rowid AS id FROM article_fts WHERE article_fts MATCH :q")
            .bindparams(q=match)
            .columns(column("id", Integer))
        )
    return (
        text(
            "SELECT id FROM article WHERE to_tsvector('simple', "
            "coalesce(title, '') || ' ' || coalesce(text, '')) @@ to_tsquery('simple', :q)"
        )
        .bindparams(q=" & ".join(terms))
        .columns(column("id", Integer))
    )


def alert_ids_matching(session: Session, search: str) -> Any:
    """A subquery of alert ids whose article's title or text contains every word."""
    alert = Alert.__table__  # type: ignore[attr-defined]
    articles = article_ids_matching(session, search).subquery()
    return select(alert.c.id).where(alert.c.article_id.in_(select(articles.c.id)))
