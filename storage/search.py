"""Full-text search: SQLite FTS5 or PostgreSQL to_tsvector, behind one function each.

The article index is kept off the ingest path: writing it row by row cost more than
storing the article itself (benchmarks/pipeline.py), so the articles above the
`search_index_state` mark are indexed in one statement when somebody searches, and
periodically by the worker (`newswatch.index_for_search`). SQLite indexes into the
FTS5 table `article_fts`; PostgreSQL into `article_search` (a tsvector per article
under a GIN index). Alerts are searched through their article, whose title and text
contain the alert's title and snippet. Both tables come from migration 0003.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Engine, Integer, column, select, text
from sqlalchemy.orm import Session

from storage.engine import lock_for_ingest, session_scope
from storage.models import Alert

_TOKEN = re.compile(r"\w+", re.UNICODE)


def fts_terms(search: str) -> list[str]:
    """The word tokens of a search string (all must appear, in any order)."""
    return _TOKEN.findall(search.lower())


def refresh_search_index(session: Session) -> int:
    """Index the articles stored since the last refresh; returns how many.

    Runs in the caller's transaction and under the ingest lock (SQLite's write lock,
    PostgreSQL's advisory lock), so no article id below the new mark can still be
    uncommitted and two refreshes never index a row twice.
    """
    lock_for_ingest(session)
    conn = session.connection()
    mark = conn.execute(
        text("SELECT indexed_through FROM search_index_state WHERE name = 'article'")
    ).scalar()
    top = conn.execute(text("SELECT coalesce(max(id), 0) FROM article")).scalar_one()
    if mark is None or top <= mark:
        return 0
    if session.get_bind().dialect.name == "sqlite":
        insert = (
            "INSERT INTO article_fts(rowid, title, text) "
            "SELECT id, title, text FROM article WHERE id > :mark AND id <= :top"
        )
    else:
        insert = (
            "INSERT INTO article_search (article_id, document) SELECT id, to_tsvector("
            "'simple', coalesce(title, '') || ' ' || coalesce(text, '')) "
            "FROM article WHERE id > :mark AND id <= :top"
        )
    added = conn.execute(text(insert), {"mark": mark, "top": top}).rowcount
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

    The index is brought up to date first, in the caller's transaction.
    """
    terms = fts_terms(search)
    if not terms:
        return text("SELECT NULL AS id WHERE 0 = 1").columns(column("id", Integer))
    refresh_search_index(session)
    if session.get_bind().dialect.name == "sqlite":
        query = "SELECT rowid AS id FROM article_fts WHERE article_fts MATCH :q"
        match = " AND ".join(f'"{t}"' for t in terms)
    else:
        query = (
            "SELECT article_id AS id FROM article_search WHERE document @@ to_tsquery('simple', :q)"
        )
        match = " & ".join(terms)
    return text(query).bindparams(q=match).columns(column("id", Integer))


def alert_ids_matching(session: Session, search: str) -> Any:
    """A subquery of alert ids whose article's title or text contains every word."""
    alert = Alert.__table__  # type: ignore[attr-defined]
    articles = article_ids_matching(session, search).subquery()
    return select(alert.c.id).where(alert.c.article_id.in_(select(articles.c.id)))
