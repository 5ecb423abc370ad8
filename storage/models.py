"""The tables. Times are stored as UTC; see `UTCDateTime`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    UniqueConstraint,
)
from sqlalchemy.types import DateTime, TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _dt(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


class Feed(SQLModel, table=True):
    """A subscribed feed and its polling state."""

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=2048, unique=True)
    title: str | None = None
    active: bool = True
    interval_seconds: int = 900
    etag: str | None = None
    last_modified: str | None = None
    last_status: int | None = None
    last_error: str | None = None
    error_count: int = 0
    entry_count: int = 0
    last_polled_at: datetime | None = _dt(default=None)
    next_poll_at: datetime = _dt(default_factory=utcnow, index=True)
    # A fetch in progress holds a lease; an expired lease means the fetch was lost.
    lease_until: datetime | None = _dt(default=None)
    # Fetch attempts claimed but never completed, to park a feed that kills workers.
    unfinished_claims: int = 0
    created_at: datetime = _dt(default_factory=utcnow)


class Article(SQLModel, table=True):
    """A stored article; duplicates point at the original of their story."""

    __table_args__ = (UniqueConstraint("origin", "guid", name="uq_article_origin_guid"),)

    id: int | None = Field(default=None, primary_key=True)
    origin: str = Field(max_length=64)  # "feed:<id>" or "local"
    feed_id: int | None = Field(
        default=None, foreign_key="feed.id", index=True, ondelete="SET NULL"
    )
    guid: str = Field(max_length=2048)
    url: str | None = Field(default=None, max_length=2048)
    canonical_url: str | None = Field(default=None, max_length=2048, index=True)
    title: str = ""
    text: str = ""
    text_hash: str = Field(max_length=64, index=True)
    source: str | None = None
    author: str | None = None
    dateline: str | None = None
    language: str | None = None
    published_at: datetime | None = _dt(default=None)
    created_at: datetime = _dt(default_factory=utcnow, index=True)
    duplicate_of: int | None = Field(default=None, foreign_key="article.id", index=True)
    # The id of the story's original (itself for an original): alerts key on it.
    story_id: int | None = Field(default=None, index=True)
    similarity: float | None = None


class ArticleSignature(SQLModel, table=True):
    """The MinHash signatures of an article (see `tasks.fingerprint.pack_signature`)."""

    __tablename__ = "article_signature"

    article_id: int = Field(primary_key=True, foreign_key="article.id", ondelete="CASCADE")
    signature: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class LshBand(SQLModel, table=True):
    """One LSH band key of one article: the shared, indexed near-duplicate index.

    On SQLite the table is WITHOUT ROWID: the primary key is the table, so each band is
    stored once instead of in a table and again in its index (half the bytes on disk).
    No foreign key: only ingest writes bands, in the article's transaction, and a
    check per band row cost more than the insert (migration 0003).
    """

    __tablename__ = "lsh_band"
    __table_args__ = {"sqlite_with_rowid": False}

    key: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    article_id: int = Field(primary_key=True)


class LshBandLog(SQLModel, table=True):
    """The band keys of a stored article not yet merged into `lsh_band`: one row each.

    Appended in id order, so a commit writes a few pages; look-ups find these articles
    in each process's `storage.recentindex.RecentIndex`, and ingest moves them into
    `lsh_band` in key order once there are enough (`storage.dedup.log_capacity`,
    migration 0005). `keys` are the distinct keys as little-endian int64, ascending.
    """

    __tablename__ = "lsh_band_log"

    article_id: int = Field(
        sa_column=Column(
            Integer,
            ForeignKey("article.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        )
    )
    keys: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class LshBandState(SQLModel, table=True):
    """One row: the newest article whose bands were merged into `lsh_band`."""

    __tablename__ = "lsh_band_state"

    id: int = Field(primary_key=True)
    merged_through: int


class Topic(SQLModel, table=True):
    """A topic known to the store (loaded from the topics file)."""

    slug: str = Field(primary_key=True, max_length=64)
    name: str
    description: str = ""


class ArticleTopic(SQLModel, table=True):
    """A topic tag on an article, with its score and the phrases that fired."""

    __tablename__ = "article_topic"
    __table_args__ = (Index("ix_article_topic_slug", "slug"),)

    article_id: int = Field(primary_key=True, foreign_key="article.id", ondelete="CASCADE")
    slug: str = Field(primary_key=True, max_length=64)
    score: float
    phrases: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class Rule(SQLModel, table=True):
    """A user's keyword rule: query, optional topic filter, delivery channels."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    query: str
    topics: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    channels: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    digest: str = "immediate"  # immediate | hourly | daily
    secret: str | None = None
    active: bool = True
    created_at: datetime = _dt(default_factory=utcnow)
    last_digest_at: datetime | None = _dt(default=None)


class Alert(SQLModel, table=True):
    """A rule matched a story. Unique per (rule, story); it is also the delivery outbox."""

    __table_args__ = (UniqueConstraint("rule_id", "story_id", name="uq_alert_rule_story"),)

    id: int | None = Field(default=None, primary_key=True)
    # Both indexed through uq_alert_rule_story (nothing looks up story_id alone).
    rule_id: int = Field(foreign_key="rule.id", ondelete="CASCADE")
    story_id: int
    article_id: int = Field(foreign_key="article.id", index=True)
    title: str = ""
    url: str | None = None
    topics: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    matched: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    snippet: str = ""
    created_at: datetime = _dt(default_factory=utcnow, index=True)
    # Delivery state: pending -> delivered | failed; "none" when the rule has no channels.
    status: str = Field(default="pending", max_length=16, index=True)
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = _dt(default=None)
    delivered_at: datetime | None = _dt(default=None)
    acked_at: datetime | None = _dt(default=None)
