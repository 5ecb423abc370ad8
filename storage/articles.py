"""Storing articles: exact and near-duplicate resolution, tags and alerts in one transaction.

`ingest` is the critical section of the pipeline. It runs under a lock that serializes
concurrent writers (SQLite's write lock via BEGIN IMMEDIATE, a transaction-scoped
advisory lock on PostgreSQL), so two workers racing on copies of one story still
produce exactly one original, and the unique (rule, story) constraint makes an alert
impossible to store twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, Select, bindparam, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlmodel import col

from storage.engine import session_scope
from storage.models import Alert, Article, ArticleSignature, ArticleTopic, LshBand, Rule, utcnow
from tasks.errors import NotFound
from tasks.fingerprint import Fingerprint, best_match
from tasks.models import Article as ArticleData
from tasks.models import Match, TopicTag

# Arbitrary constant naming the ingest lock among PostgreSQL advisory locks.
INGEST_LOCK_KEY = 0x6E657773  # "news"
# Never verify more than this many near-duplicate candidates for one article.
MAX_CANDIDATES = 200


@dataclass(frozen=True, slots=True)
class PreparedArticle:
    """An article with everything computed before the transaction."""

    article: ArticleData
    fingerprint: Fingerprint
    tags: tuple[TopicTag, ...] = ()
    matches: tuple[Match, ...] = ()


@dataclass(slots=True)
class IngestResult:
    """What a batch did to the store."""

    stored: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    skipped: int = 0
    alerts: list[int] = field(default_factory=list)


def lock_for_ingest(session: Session) -> None:
    """Serialize ingest transactions across processes (see module docstring)."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": INGEST_LOCK_KEY})


def find_original(
    session: Session, fp: Fingerprint, threshold: float, text: str | None = None
) -> tuple[int, float] | None:
    """The story id this fingerprint duplicates (exact hash first, then LSH), if any.

    One indexed query ranks the articles sharing a band by how many bands they share and
    returns their signatures; only those are verified, so the cost stays flat as the store
    grows (benchmarks/lookup.py). Given the article's `text`, borderline estimates are
    settled on the exact shingles of the few candidates concerned.
    """
    # Core execution on the session's connection: the ORM session path cost ~0.2 ms
    # per statement, more than the indexed look-ups themselves.
    conn = session.connection()
    exact_stmt, story_stmt, _, texts_stmt = _lookup_statements()
    exact = conn.execute(exact_stmt, {"text_hash": fp.text_hash}).scalar()
    if exact is not None:
        return exact, 1.0
    if fp.shingle_count == 0 or not fp.band_keys:
        return None

    def texts_of(ids: list[int]) -> dict[int, str]:
        rows = conn.execute(texts_stmt, {"ids": ids})
        return {int(row[0]): str(row[1]) for row in rows}

    best = best_match(
        fp.signature,
        near_duplicate_candidates(session, fp.band_keys),
        threshold,
        text=text,
        texts_of=texts_of,
    )
    if best is None:
        return None
    story = conn.execute(story_stmt, {"article_id": best[0]}).scalar()
    return (story if story is not None else best[0]), best[1]


def near_duplicate_candidates(
    session: Session, band_keys: Sequence[int]
) -> list[tuple[int, bytes]]:
    """(article_id, signature) of the articles sharing most bands with `band_keys`.

    Ranking by shared bands keeps a true copy (which shares many) inside MAX_CANDIDATES
    even when a common band value brings in many unrelated articles.
    """
    stmt = _lookup_statements()[2]
    rows = session.connection().execute(stmt, {"keys": sorted(set(band_keys))})
    return [(row[0], row[1]) for row in rows]


@lru_cache(maxsize=1)
def _lookup_statements() -> tuple[Select[Any], Select[Any], Select[Any], Select[Any]]:
    # Built once with bound parameters on the Core tables: building and compiling the
    # statements on every call cost ~10x the SQL itself (about 0.5 ms per look-up).
    article = Article.__table__.c  # type: ignore[attr-defined]
    band = LshBand.__table__.c  # type: ignore[attr-defined]
    signature = ArticleSignature.__table__.c  # type: ignore[attr-defined]
    exact = (
        select(article.story_id)
        .where(article.text_hash == bindparam("text_hash"))
        .order_by(article.id)
        .limit(1)
    )
    story = select(article.story_id).where(article.id == bindparam("article_id"))
    shared = func.count().label("shared")
    ranked = (
        select(band.article_id, shared)
        .where(band.key.in_(bindparam("keys", expanding=True)))
        .group_by(band.article_id)
        .order_by(shared.desc())
        .limit(MAX_CANDIDATES)
        .subquery()
    )
    candidates = select(signature.article_id, signature.signature).join(
        ranked, ranked.c.article_id == signature.article_id
    )
    texts = select(article.id, article.text).where(article.id.in_(bindparam("ids", expanding=True)))
    return exact, story, candidates, texts


def ingest(
    engine: Engine,
    *,
    origin: str,
    feed_id: int | None,
    items: Sequence[PreparedArticle],
    threshold: float,
    session: Session | None = None,
) -> IngestResult:
    """Store a batch: skip entries already seen, link duplicates, tag, create alerts.

    A duplicate never alerts a rule that already alerted on its story, nor a rule that
    existed when the story's original arrived (that rule already had its chance).
    Runs in the given session's transaction, or in its own.

    Writes go through Core statements built once (`_ingest_statements`), not ORM
    objects: the unit of work cost about 3 ms per article, five times the SQL itself
    (benchmarks/pipeline.py). Each article, its signature and its band keys are written
    before the next article is looked up, so a copy later in the same batch finds it;
    topic tags and alerts, which no look-up reads, are written once per batch.
    """
    if session is None:
        with session_scope(engine) as own:
            return ingest(
                engine,
                origin=origin,
                feed_id=feed_id,
                items=items,
                threshold=threshold,
                session=own,
            )
    result = IngestResult()
    if not items:
        return result
    lock_for_ingest(session)
    conn = session.connection()
    stmts = _ingest_statements(conn.dialect.name)
    guids = [item.article.guid for item in items]
    seen: set[str] = set(
        conn.execute(stmts.seen_guids, {"origin": origin, "guids": guids}).scalars()
    )
    urls = [i.article.canonical_url for i in items if i.article.canonical_url]
    if feed_id is not None and urls:
        seen_urls = set(conn.execute(stmts.seen_urls, {"feed_id": feed_id, "urls": urls}).scalars())
    else:
        seen_urls = set()
    rules = {
        rule_id: (created, bool(channels))
        for rule_id, created, channels in conn.execute(stmts.rules).all()
    }
    now = utcnow()
    tag_rows: list[dict[str, Any]] = []
    alert_rows: dict[tuple[int, int], dict[str, Any]] = {}
    for item in items:
        data, fp = item.article, item.fingerprint
        if data.guid in seen or (data.canonical_url and data.canonical_url in seen_urls):
            result.skipped += 1
            continue
        seen.add(data.guid)
        if data.canonical_url and feed_id is not None:
            seen_urls.add(data.canonical_url)
        original = find_original(session, fp, threshold, item.article.text or item.article.title)
        values = {
            "origin": origin,
            "feed_id": feed_id,
            "guid": data.guid,
            "url": data.url,
            "canonical_url": data.canonical_url,
            "title": data.title,
            "text": data.text,
            "text_hash": fp.text_hash,
            "source": data.source,
            "author": data.author,
            "dateline": data.dateline,
            "language": data.language,
            "published_at": data.published_at,
            "created_at": now,
            "duplicate_of": original[0] if original else None,
            "story_id": original[0] if original else None,
            "similarity": original[1] if original else None,
        }
        article_id: int = conn.execute(stmts.article, values).scalar_one()
        if original is None:
            # An original is its own story; the id exists only after the insert.
            conn.execute(stmts.own_story, {"article_id": article_id})
            story_id = article_id
        else:
            story_id = original[0]
        conn.execute(stmts.signature, {"article_id": article_id, "signature": fp.signature})
        if fp.shingle_count:
            conn.execute(
                stmts.band, [{"key": key, "article_id": article_id} for key in set(fp.band_keys)]
            )
        tag_rows.extend(
            {"article_id": article_id, "slug": t.slug, "score": t.score, "phrases": list(t.phrases)}
            for t in item.tags
        )
        (result.duplicates if original else result.stored).append(article_id)
        story_created = (
            conn.execute(stmts.story_created, {"story_id": story_id}).scalar() if original else now
        )
        topics = [t.slug for t in item.tags]
        for match in item.matches:
            if match.rule_id not in rules or (match.rule_id, story_id) in alert_rows:
                continue
            created, has_channels = rules[match.rule_id]
            if original is not None and story_created is not None and created <= story_created:
                continue
            alert_rows[(match.rule_id, story_id)] = {
                "rule_id": match.rule_id,
                "story_id": story_id,
                "article_id": article_id,
                "title": data.title,
                "url": data.url,
                "topics": topics,
                "matched": list(match.matched),
                "snippet": match.snippet,
                "created_at": now,
                # An alert of a rule without channels is only stored, never sent.
                "status": "pending" if has_channels else "none",
            }
    if tag_rows:
        conn.execute(stmts.tag, tag_rows)
    if alert_rows:
        # One executemany (batched into multi-row INSERTs by SQLAlchemy); a (rule, story)
        # pair stored by an earlier batch or another worker is skipped by the unique
        # constraint and returns no id.
        result.alerts.extend(conn.execute(stmts.alert, list(alert_rows.values())).scalars())
    return result


@dataclass(frozen=True, slots=True)
class _IngestStatements:
    seen_guids: Any
    seen_urls: Any
    article: Any
    own_story: Any
    signature: Any
    band: Any
    tag: Any
    alert: Any
    rules: Any
    story_created: Any


@lru_cache(maxsize=4)
def _ingest_statements(dialect: str) -> _IngestStatements:
    # Built once per dialect with bound parameters, so SQLAlchemy compiles each once.
    article = Article.__table__  # type: ignore[attr-defined]
    alert = Alert.__table__  # type: ignore[attr-defined]
    rule = Rule.__table__  # type: ignore[attr-defined]
    alert_insert: Any
    if dialect == "postgresql":
        alert_insert = postgresql.insert(alert).on_conflict_do_nothing()
    elif dialect == "sqlite":
        alert_insert = sqlite.insert(alert).on_conflict_do_nothing()
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        alert_insert = insert(alert)
    return _IngestStatements(
        seen_guids=select(article.c.guid).where(
            article.c.origin == bindparam("origin"),
            article.c.guid.in_(bindparam("guids", expanding=True)),
        ),
        seen_urls=select(article.c.canonical_url).where(
            article.c.feed_id == bindparam("feed_id"),
            article.c.canonical_url.in_(bindparam("urls", expanding=True)),
        ),
        article=insert(article).returning(article.c.id),
        own_story=article.update()
        .where(article.c.id == bindparam("article_id"))
        .values(story_id=article.c.id),
        signature=insert(ArticleSignature.__table__),  # type: ignore[attr-defined]
        band=insert(LshBand.__table__),  # type: ignore[attr-defined]
        tag=insert(ArticleTopic.__table__),  # type: ignore[attr-defined]
        alert=alert_insert.returning(alert.c.id),
        rules=select(rule.c.id, rule.c.created_at, rule.c.channels),
        story_created=select(article.c.created_at).where(article.c.id == bindparam("story_id")),
    )


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
