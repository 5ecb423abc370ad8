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
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage.dedup import (
    DedupLookup,
    Probe,
    merge_band_log,
    newest_article,
    pack_band_keys,
    recent_index,
    sync_recent_index,
)
from storage.engine import lock_for_ingest, session_scope
from storage.models import (
    Alert,
    Article,
    ArticleSignature,
    ArticleTopic,
    LshBandLog,
    utcnow,
)
from storage.recentindex import RecentIndex
from storage.statements import Statements
from tasks.fingerprint import Fingerprint
from tasks.models import Article as ArticleData
from tasks.models import Match, TopicTag


@dataclass(frozen=True, slots=True)
class PreparedArticle:
    """An article with everything computed before the transaction."""

    article: ArticleData
    fingerprint: Fingerprint
    tags: tuple[TopicTag, ...] = ()
    matches: tuple[Match, ...] = ()
    probe: Probe | None = None


@dataclass(slots=True)
class IngestResult:
    """What a batch did to the store."""

    stored: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    skipped: int = 0
    alerts: list[int] = field(default_factory=list)
    # The new alerts to send now: pending, of a rule with channels and no digest. Only
    # these need a delivery task; the others are stored or wait for their digest.
    to_send: list[int] = field(default_factory=list)


_ARTICLE_COLUMNS = (
    "id",
    "origin",
    "feed_id",
    "guid",
    "url",
    "canonical_url",
    "title",
    "text",
    "text_hash",
    "source",
    "author",
    "dateline",
    "language",
    "published_at",
    "created_at",
    "duplicate_of",
    "story_id",
    "similarity",
)
_ALERT_COLUMNS = (
    "rule_id",
    "story_id",
    "article_id",
    "title",
    "url",
    "topics",
    "matched",
    "snippet",
    "created_at",
    "status",
    "attempts",
)


def _reserve_article_ids(sql: Statements, count: int) -> list[int]:
    """Ids for the batch's articles, taken while the ingest lock is held."""
    if sql.dialect.name == "postgresql":
        rows = sql.rows(
            "SELECT nextval(pg_get_serial_sequence('article', 'id')) FROM generate_series(1, ?)",
            [count],
        )
        return [int(r[0]) for r in rows]
    # SQLite: the write lock is held (BEGIN IMMEDIATE) and ids are max + 1 anyway.
    first = newest_article(sql) + 1
    return list(range(first, first + count))


def ingest(
    engine: Engine,
    *,
    origin: str,
    feed_id: int | None,
    items: Sequence[PreparedArticle],
    threshold: float,
    session: Session | None = None,
    index: RecentIndex | None = None,
) -> IngestResult:
    """Store a batch: skip entries already seen, link duplicates, tag, create alerts.

    A duplicate alerts only the rules that have not alerted on its story yet: an alert
    is unique per (rule, story), so a copy that matches a rule its original did not (an
    added paragraph naming a watched name) still alerts, once.
    Runs in the given session's transaction, or in its own.

    Per batch, not per article: one query for guids and URLs already stored, one for
    exact copies, one ranked query over lsh_band per article without a probe
    (`DedupLookup`; on PostgreSQL one for the batch), and one executemany (COPY) per
    table at the end. The articles not merged into lsh_band yet are looked up in this
    process's `RecentIndex` (or the given `index`), synced first, and the batch's own
    articles in memory, so a copy later in the same batch still finds its original.
    The stored articles are added to the index; the caller invalidates it if the
    transaction is not committed.
    """
    if index is None:
        index = recent_index(engine)
    if session is None:
        try:
            with session_scope(engine) as own:
                return ingest(
                    engine,
                    origin=origin,
                    feed_id=feed_id,
                    items=items,
                    threshold=threshold,
                    session=own,
                    index=index,
                )
        except BaseException:
            index.invalidate()  # it may hold articles that were rolled back
            raise
    result = IngestResult()
    if not items:
        return result
    lock_for_ingest(session)
    sql = Statements.of(session)
    fresh = _unseen(sql, origin, feed_id, items)
    result.skipped = len(items) - len(fresh)
    if not fresh:
        return result
    with index.lock:
        sync_recent_index(sql, index)
        return _store(sql, origin, feed_id, fresh, threshold, index, result)


def _store(
    sql: Statements,
    origin: str,
    feed_id: int | None,
    fresh: list[PreparedArticle],
    threshold: float,
    index: RecentIndex,
    result: IngestResult,
) -> IngestResult:
    """`ingest`'s work on the articles not stored yet, under the lock, the index synced."""
    rules = _rules(sql)
    lookup = DedupLookup(sql, threshold, index)
    lookup.preload_hashes([item.fingerprint.text_hash for item in fresh])
    lookup.prefetch(fresh)
    now = utcnow()
    article_rows: list[tuple[Any, ...]] = []
    signature_rows: list[tuple[int, bytes]] = []
    log_rows: list[tuple[int, bytes]] = []
    tag_rows: list[tuple[Any, ...]] = []
    placed: list[tuple[PreparedArticle, int, int]] = []  # item, article id, story id
    for item, article_id in zip(fresh, _reserve_article_ids(sql, len(fresh)), strict=True):
        data, fp = item.article, item.fingerprint
        original = lookup.find(fp, data.text or data.title, item.probe)
        story_id = original[0] if original else article_id
        lookup.add(article_id, story_id, fp, data.text or data.title)
        article_rows.append(
            (
                article_id,
                origin,
                feed_id,
                data.guid,
                data.url,
                data.canonical_url,
                data.title,
                data.text,
                fp.text_hash,
                data.source,
                data.author,
                data.dateline,
                data.language,
                data.published_at,
                now,
                original[0] if original else None,
                story_id,
                original[1] if original else None,
            )
        )
        signature_rows.append((article_id, fp.signature))
        if fp.shingle_count:
            log_rows.append((article_id, pack_band_keys(fp.band_keys)))
        tag_rows.extend((article_id, t.slug, t.score, list(t.phrases)) for t in item.tags)
        placed.append((item, article_id, story_id))
        (result.duplicates if original else result.stored).append(article_id)
    for item, article_id, _ in placed:
        fp = item.fingerprint
        index.add(article_id, fp.band_keys if fp.shingle_count else (), fp.signature)
    tables = _tables()
    sql.insert_many(tables["article"], _ARTICLE_COLUMNS, article_rows)
    sql.insert_many(tables["article_signature"], ("article_id", "signature"), signature_rows)
    if log_rows:
        sql.insert_many(tables["lsh_band_log"], ("article_id", "keys"), log_rows)
    newest = placed[-1][1]
    if merge_band_log(sql, newest=newest) and not index.keeps_merged:
        index.reset(newest)  # lsh_band has them all now
    sql.insert_many(tables["article_topic"], ("article_id", "slug", "score", "phrases"), tag_rows)
    alert_rows = _alert_rows(placed, rules, now)
    if alert_rows:
        # A (rule, story) pair stored by an earlier batch or another worker is skipped
        # by the unique constraint (ON CONFLICT DO NOTHING). Alert ids only grow and
        # only ingest inserts alerts, under the lock: the new ones are above the mark.
        mark = int(sql.value("SELECT coalesce(max(id), 0) FROM alert") or 0)
        sql.insert_many(tables["alert"], _ALERT_COLUMNS, alert_rows, skip_conflicts=True)
        new_alerts = sql.rows(
            "SELECT a.id, a.status, r.digest FROM alert a JOIN rule r ON r.id = a.rule_id "
            "WHERE a.id > ? ORDER BY a.id",
            [mark],
        )
        result.alerts = [int(r[0]) for r in new_alerts]
        result.to_send = [
            int(r[0]) for r in new_alerts if r[1] == "pending" and r[2] == "immediate"
        ]
    return result


def _rules(sql: Statements) -> dict[int, bool]:
    """Rule id -> whether it has channels (its alerts are to be sent).

    Plain rows, decoded only as far as needed: decoding every rule's row in every batch
    cost ~10-50 us per article with 1,000 rules.
    """
    rows = sql.rows("SELECT id, CAST(channels AS TEXT) FROM rule")
    return {int(i): channels not in (None, "[]", "null") for i, channels in rows}


def _unseen(
    sql: Statements, origin: str, feed_id: int | None, items: Sequence[PreparedArticle]
) -> list[PreparedArticle]:
    """The items whose guid (per origin) or canonical URL (per feed) is not stored yet."""
    where, params = sql.among("guid", sorted({item.article.guid for item in items}))
    query = f"SELECT guid FROM article WHERE origin = ? AND {where}"
    seen = {str(r[0]) for r in sql.rows(query, [origin, *params])}
    urls = sorted({i.article.canonical_url for i in items if i.article.canonical_url})
    seen_urls: set[str] = set()
    if feed_id is not None and urls:
        where, params = sql.among("canonical_url", urls)
        seen_urls = {
            str(r[0])
            for r in sql.rows(
                f"SELECT canonical_url FROM article WHERE feed_id = ? AND {where}",
                [feed_id, *params],
            )
        }
    fresh = []
    for item in items:
        data = item.article
        if data.guid in seen or (data.canonical_url and data.canonical_url in seen_urls):
            continue
        seen.add(data.guid)
        if data.canonical_url and feed_id is not None:
            seen_urls.add(data.canonical_url)
        fresh.append(item)
    return fresh


def _alert_rows(
    placed: list[tuple[PreparedArticle, int, int]],
    rules: dict[int, bool],
    now: datetime,
) -> list[tuple[Any, ...]]:
    """One alert per (rule, story) matched in this batch; the earliest article of the
    batch carries it. Pairs already stored are skipped by the insert (the unique key)."""
    rows_out: dict[tuple[int, int], tuple[Any, ...]] = {}
    for item, article_id, story_id in placed:
        topics = [t.slug for t in item.tags]
        for match in item.matches:
            has_channels = rules.get(match.rule_id)
            if has_channels is None or (match.rule_id, story_id) in rows_out:
                continue
            rows_out[(match.rule_id, story_id)] = (
                match.rule_id,
                story_id,
                article_id,
                item.article.title,
                item.article.url,
                topics,
                list(match.matched),
                match.snippet,
                now,
                # An alert of a rule without channels is only stored, never sent.
                "pending" if has_channels else "none",
                0,
            )
    return list(rows_out.values())


@lru_cache(maxsize=1)
def _tables() -> dict[str, Any]:
    models: tuple[Any, ...] = (
        Article,
        ArticleSignature,
        LshBandLog,
        ArticleTopic,
        Alert,
    )
    return {str(model.__tablename__): model.__table__ for model in models}
