"""Topics known to the store, kept in step with the topics file."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select
from sqlmodel import col

from storage.engine import session_scope
from storage.models import ArticleTopic, Topic


def sync_topics(engine: Engine, topics: list[tuple[str, str, str]]) -> int:
    """Insert or update (slug, name, description) rows; returns how many changed."""
    changed = 0
    with session_scope(engine) as session:
        for slug, name, description in topics:
            row = session.get(Topic, slug)
            if row is None:
                session.add(Topic(slug=slug, name=name, description=description))
                changed += 1
            elif (row.name, row.description) != (name, description):
                row.name, row.description = name, description
                changed += 1
    return changed


def list_topics(engine: Engine) -> list[dict[str, Any]]:
    """Every topic with the number of articles tagged with it."""
    with session_scope(engine) as session:
        counts: dict[str, int] = {
            str(slug): int(n)
            for slug, n in session.execute(
                select(col(ArticleTopic.slug), func.count()).group_by(col(ArticleTopic.slug))
            ).all()
        }
        return [
            {
                "slug": t.slug,
                "name": t.name,
                "description": t.description,
                "articles": counts.get(t.slug, 0),
            }
            for t in session.scalars(select(Topic).order_by(Topic.slug))
        ]
