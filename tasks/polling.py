"""Fetch a feed, parse it, run its entries through the pipeline, record the outcome.

Shared by the Celery task `fetch_feed` and the in-process `newswatch poll`.
Expected per-feed failures (network, HTTP, unparsable documents) become a recorded
error on the feed with a backoff; they never raise.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import httpx
from sqlalchemy import Engine

from storage.engine import session_scope
from storage.feeds import FeedTarget, FetchOutcome, record_fetch
from storage.models import utcnow
from tasks.fetch import FetchPolicy, FetchResult, fetch_url
from tasks.models import RawEntry
from tasks.parse import parse_feed
from tasks.pipeline import Matchers, process_entries

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Download:
    """A fetched and parsed feed, ready for the pipeline (or an outcome without entries)."""

    target: FeedTarget
    outcome: FetchOutcome
    entries: tuple[RawEntry, ...] = ()


@dataclass(slots=True)
class PollReport:
    """What polling one feed did."""

    feed_id: int
    url: str
    status: int | None
    error: str | None
    entries: int = 0
    stored: int = 0
    duplicates: int = 0
    alerts: list[int] = field(default_factory=list)


def download(target: FeedTarget, policy: FetchPolicy, client: httpx.Client | None) -> Download:
    """Fetch and parse one feed: I/O and parsing only, no database."""
    try:
        result: FetchResult = fetch_url(
            target.url,
            etag=target.etag,
            last_modified=target.last_modified,
            policy=policy,
            client=client,
        )
    except Exception as exc:  # a bug must not take the whole poll down
        log.exception("fetching %s failed unexpectedly", target.url)
        return Download(
            target, FetchOutcome(status=None, error=f"internal error while fetching: {exc}")
        )
    if result.error is not None:
        return Download(
            target,
            FetchOutcome(
                status=result.status,
                error=result.error,
                gone=result.gone,
                retry_after=result.retry_after,
                new_url=result.permanent_url,
            ),
        )
    if result.not_modified:
        return Download(
            target,
            FetchOutcome(status=result.status, not_modified=True, new_url=result.permanent_url),
        )
    parsed = parse_feed(
        result.content or b"",
        url=result.final_url or target.url,
        content_type=result.headers.get("content-type") if result.headers else None,
    )
    error = None
    if parsed.error and not parsed.entries:
        error = parsed.error
    return Download(
        target,
        FetchOutcome(
            status=result.status,
            error=error,
            etag=result.etag,
            last_modified=result.last_modified,
            new_url=result.permanent_url,
            title=parsed.title,
            entries=len(parsed.entries),
        ),
        parsed.entries,
    )


def store_download(
    engine: Engine,
    matchers: Matchers,
    item: Download,
    *,
    threshold: float,
    max_backoff: int,
) -> PollReport:
    """Run a download's entries through the pipeline, then record the fetch on the feed.

    The fetch (and its new ETag) is recorded only after the entries are stored, so a
    crash in between makes the next poll fetch them again instead of losing them.
    """
    target, outcome = item.target, item.outcome
    report = PollReport(target.id, target.url, outcome.status, outcome.error, len(item.entries))
    if item.entries:
        result = process_entries(
            engine,
            matchers,
            item.entries,
            origin=f"feed:{target.id}",
            feed_id=target.id,
            threshold=threshold,
        )
        report.stored = len(result.stored)
        report.duplicates = len(result.duplicates)
        report.alerts = result.alerts
    with session_scope(engine) as session:
        record_fetch(session, target.id, outcome, max_backoff=max_backoff, now=utcnow())
    return report


def poll_targets(
    engine: Engine,
    matchers: Matchers,
    targets: list[FeedTarget],
    *,
    policy: FetchPolicy,
    client: httpx.Client,
    concurrency: int,
    threshold: float,
    max_backoff: int,
) -> list[PollReport]:
    """Fetch many feeds concurrently (bounded) and store them one by one as they arrive."""
    reports = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(download, t, policy, client) for t in targets]
        for future in as_completed(futures):
            item = future.result()
            reports.append(
                store_download(engine, matchers, item, threshold=threshold, max_backoff=max_backoff)
            )
    return reports
