"""Reading stored articles: lists, one article, its tags, duplicate clusters, counts.

Apart from `storage.articles` and `storage.dedup` (storing and deduplicating), so that a
query command imports no fingerprinting (numpy) and no ingest machinery.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from storage.engine import session_scope
from storage.models import Article, ArticleTopic
from tasks.errors import NotFound


def article_record(row: Article, topics: list[str], *, with_text: bool = False) -> dict[str, Any]:
    """The JSON-ready view of an article (the fields DESIGN.md promises)."""
    record: dict[str, Any] = {
        "id": row.id,
        "guid": row.guid,
        "url": row.url,
        "title": row.title,
        "source": row.source,
        "author": row.author,
        "published_at": row.published_at,
        "created_at": row.created_at,
        "feed_id": row.feed_id,
        "duplicate_of": row.duplicate_of,
        "topics": topics,
    }
    if with_text:
        record["dateline"] = row.dateline
        record["language"] = row.language
        record["canonical_url"] = row.canonical_url
        record["similarity"] = row.similarity
        record["text"] = row.text
    return record


def _topics_of(session: Session, ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {i: [] for i in ids}
    if ids:
        rows = session.execute(
            select(col(ArticleTopic.article_id), col(ArticleTopic.slug))
            .where(col(ArticleTopic.article_id).in_(ids))
            .order_by(col(ArticleTopic.score).desc())
        )
        for article_id, slug in rows:
            out[article_id].append(slug)
    return out


def list_articles(
    engine: Engine,
    *,
    limit: int = 50,
    search: str | None = None,
    topic: str | None = None,
    duplicates_only: bool = False,
) -> list[dict[str, Any]]:
    """Newest articles first, optionally full-text searched or filtered by topic."""
    with session_scope(engine) as session:
        query = select(Article).order_by(col(Article.id).desc()).limit(limit)
        if topic:
            query = query.where(
                col(Article.id).in_(
                    select(col(ArticleTopic.article_id)).where(col(ArticleTopic.slug) == topic)
                )
            )
        if duplicates_only:
            query = query.where(col(Article.duplicate_of).is_not(None))
        if search:
            from storage.search import article_ids_matching

            query = query.where(col(Article.id).in_(article_ids_matching(session, search)))
        rows = list(session.scalars(query))
        topics = _topics_of(session, [r.id for r in rows if r.id is not None])
        return [article_record(r, topics.get(r.id or 0, [])) for r in rows]


def get_article(engine: Engine, article_id: int) -> dict[str, Any]:
    """One article with its normalized text and topic tags."""
    with session_scope(engine) as session:
        row = session.get(Article, article_id)
        if row is None:
            raise NotFound(f"no article with id {article_id}")
        topics = _topics_of(session, [article_id])[article_id]
        return article_record(row, topics, with_text=True)


def article_tags(engine: Engine, article_id: int) -> list[dict[str, Any]]:
    """The topic tags of an article with their scores and fired phrases."""
    with session_scope(engine) as session:
        if session.get(Article, article_id) is None:
            raise NotFound(f"no article with id {article_id}")
        rows = session.scalars(
            select(ArticleTopic)
            .where(col(ArticleTopic.article_id) == article_id)
            .order_by(col(ArticleTopic.score).desc())
        )
        return [{"slug": r.slug, "score": r.score, "phrases": r.phrases} for r in rows]


def duplicate_clusters(engine: Engine, *, limit: int = 100) -> list[dict[str, Any]]:
    """Stories with copies: the original and each copy with its outlet and similarity."""
    with session_scope(engine) as session:
        story_ids = list(
            session.scalars(
                select(col(Article.duplicate_of))
                .where(col(Article.duplicate_of).is_not(None))
                .group_by(col(Article.duplicate_of))
                .order_by(func.max(col(Article.id)).desc())
                .limit(limit)
            )
        )
        clusters = []
        for story_id in story_ids:
            original = session.get(Article, story_id)
            if original is None:
                continue
            copies = session.scalars(
                select(Article)
                .where(col(Article.duplicate_of) == story_id)
                .order_by(col(Article.id))
            )
            clusters.append(
                {
                    "story_id": story_id,
                    "original": {
                        "id": original.id,
                        "title": original.title,
                        "source": original.source,
                        "guid": original.guid,
                    },
                    "copies": [
                        {
                            "id": c.id,
                            "title": c.title,
                            "source": c.source,
                            "guid": c.guid,
                            "similarity": c.similarity,
                        }
                        for c in copies
                    ],
                }
            )
        return clusters


def article_count(engine: Engine) -> dict[str, int]:
    """Counts for `newswatch stats`."""
    with session_scope(engine) as session:
        total = session.scalar(select(func.count()).select_from(Article)) or 0
        dups = (
            session.scalar(
                select(func.count())
                .select_from(Article)
                .where(col(Article.duplicate_of).is_not(None))
            )
            or 0
        )
        return {"articles": total, "duplicates": dups, "stories": total - dups}
