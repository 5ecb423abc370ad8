"""Plain data passed between the pipeline steps.

Frozen dataclasses, no ORM rows: a step takes these and returns these, so every step
can be tested without Celery, HTTP or a database.
"""

from __future__ import annotations

from collections.abc import Callable
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


class Match:
    """A keyword rule that matched an article: which terms fired and where.

    Immutable; compared, hashed and pickled by (`rule_id`, `matched`, `snippet`). The
    snippet may be given as a function that computes it, called when it is read: rule
    matching builds many matches whose snippets are never read (stories already
    alerted). Equality, hashing and pickling read it, so a pickled match carries text.
    """

    __slots__ = ("_matched", "_rule_id", "_snippet")

    def __init__(
        self, rule_id: int, matched: tuple[str, ...], snippet: str | Callable[[], str]
    ) -> None:
        # Plain slot writes rather than a frozen __setattr__: matches are built by the
        # thousand per batch; the read-only properties below keep them immutable.
        self._rule_id = rule_id
        self._matched = matched
        self._snippet = snippet

    @property
    def rule_id(self) -> int:
        """The id of the rule that matched."""
        return self._rule_id

    @property
    def matched(self) -> tuple[str, ...]:
        """The rule's present positive terms, spelled as in its query, in text order."""
        return self._matched

    @property
    def snippet(self) -> str:
        """Text around the first matched term (computed on first read when deferred)."""
        snippet = self._snippet
        return snippet if isinstance(snippet, str) else snippet()

    def _key(self) -> tuple[int, tuple[str, ...], str]:
        return self._rule_id, self._matched, self.snippet

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Match):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Match(rule_id={self._rule_id!r}, matched={self._matched!r}, snippet={self.snippet!r})"
        )

    def __reduce__(self) -> tuple[type[Match], tuple[int, tuple[str, ...], str]]:
        # The snippet travels as text: a deferred one refers to the whole article.
        return Match, self._key()


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
