"""Full-text search: SQLite FTS5 or PostgreSQL to_tsvector, behind one function each."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Integer, column, text
from sqlalchemy.orm import Session

_TOKEN = re.compile(r"\w+", re.UNICODE)


def fts_terms(search: str) -> list[str]:
    """The word tokens of a search string (all must appear, in any order)."""
    return _TOKEN.findall(search.lower())


def _ids(session: Session, table: str, columns: str, search: str) -> Any:
    terms = fts_terms(search)
    if not terms:
        return text("SELECT NULL AS id WHERE 0 = 1").columns(column("id", Integer))
    if session.get_bind().dialect.name == "sqlite":
        match = " AND ".join(f'"{t}"' for t in terms)
        return (
            text(f"SELECT rowid AS id FROM {table}_fts WHERE {table}_fts MATCH :q")
            .bindparams(q=match)
            .columns(column("id", Integer))
        )
    query = " & ".join(terms)
    expr = " || ' ' || ".join(f"coalesce({c.strip()}, '')" for c in columns.split(","))
    return (
        text(
            f"SELECT id FROM {table} "
            f"WHERE to_tsvector('simple', {expr}) @@ to_tsquery('simple', :q)"
        )
        .bindparams(q=query)
        .columns(column("id", Integer))
    )


def alert_ids_matching(session: Session, search: str) -> Any:
    """A subquery of alert ids whose title or snippet contains every word of `search`."""
    return _ids(session, "alert", "title, snippet", search)


def article_ids_matching(session: Session, search: str) -> Any:
    """A subquery of article ids whose title or text contains every word of `search`."""
    return _ids(session, "article", "title, text", search)
