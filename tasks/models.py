"""Plain data passed between the pipeline steps.

Frozen dataclasses, no ORM rows: a step takes these and returns these, so every step
can be tested without Celery, HTTP or a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class RawEntry:
    """One entry as it came from a feed or a local file, before any cleaning.

    `content` is HTML when `content_type` is "html", plain text when "text".
    `published` is timezone-aware UTC or None.
    """

    guid: str | None
    url: str | None
    title: str | None
    content: str
    content_type: str = "html"
    published: datetime | None = None
    author: str | None = None
    source: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Article:
    """A normalized article: clean story text plus the metadata kept as fields."""

    guid: str
    url: str | None
    canonical_url: str | None
    title: str
    text: str
    published_at: datetime | None = None
    author: str | None = None
    source: str | None = None
    language: str | None = None
    dateline: str | None = None


@dataclass(frozen=True, slots=True)
class TopicTag:
    """A topic attached to an article, with the evidence for it."""

    slug: str
    score: float
    phrases: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Match:
    """A keyword rule that matched an article: which terms fired and where."""

    rule_id: int
    matched: tuple[str, ...]
    snippet: str


def entry_to_dict(entry: RawEntry) -> dict[str, str | None]:
    """A JSON-safe dict of a raw entry, for passing entries through the broker."""
    return {
        "guid": entry.guid,
        "url": entry.url,
        "title": entry.title,
        "content": entry.content,
        "content_type": entry.content_type,
        "published": entry.published.isoformat() if entry.published else None,
        "author": entry.author,
        "source": entry.source,
        "language": entry.language,
    }


def entry_from_dict(data: dict[str, str | None]) -> RawEntry:
    """The inverse of `entry_to_dict`."""
    published = data.get("published")
    return RawEntry(
        guid=data.get("guid"),
        url=data.get("url"),
        title=data.get("title"),
        content=data.get("content") or "",
        content_type=data.get("content_type") or "html",
        published=datetime.fromisoformat(published) if published else None,
        author=data.get("author"),
        source=data.get("source"),
        language=data.get("language"),
    )
