"""Fetch a feed, parse it, run its entries through the pipeline, record the outcome.

Shared by the Celery task `fetch_feed` and the in-process `newswatch poll`.
Expected per-feed failures (network, HTTP, unparsable documents) become a recorded
error on the feed with a backoff; they never raise.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import Engine

from storage.articles import PreparedArticle, ingest
from storage.engine import dispose_engines, session_scope
from storage.feeds import FeedTarget, FetchOutcome, record_fetches
from storage.models import utcnow
from tasks.fetch import FetchPolicy, FetchResult, fetch_url
from tasks.models import RawEntry
from tasks.parse import parse_feed
from tasks.pipeline import Matchers, prepare

log = logging.getLogger(__name__)

# Entries stored in one transaction by `poll_targets` (a few feeds' worth).
GROUP_ENTRIES = 1000


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
    fetched = fetch(target, policy, client)
    return fetched if isinstance(fetched, Download) else interpret(target, fetched)


def fetch(
    target: FeedTarget, policy: FetchPolicy, client: httpx.Client | None
) -> FetchResult | Download:
    """The HTTP half of `download`: a fetch result, or a Download recording a crash."""
    try:
        return fetch_url(
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


def interpret(target: FeedTarget, result: FetchResult) -> Download:
    """The parsing half of `download`: what a fetch result means for the feed."""
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
    """Run a download's entries through the pipeline, then record the fetch on the feed."""
    return store_downloads(engine, matchers, [item], threshold=threshold, max_backoff=max_backoff)[
        0
    ]


def store_downloads(
    engine: Engine,
    matchers: Matchers,
    items: Sequence[Download],
    *,
    threshold: float,
    max_backoff: int,
    prepared: Sequence[list[PreparedArticle]] | None = None,
) -> list[PollReport]:
    """Store several downloads and record their fetches in one transaction.

    The pure work (normalize, fingerprint, tag, match) runs first, outside the write
    lock; then one transaction stores every feed's entries and records each fetch (and
    its new ETag) with them, so a crash loses neither half: the next poll fetches again.
    One commit per group instead of two per feed: a commit cost ~1.7 ms on SQLite,
    as much as storing one article (benchmarks/ingest.py).
    """
    if prepared is None:
        prepared = [prepare(item.entries, matchers) if item.entries else [] for item in items]
    reports = []
    now = utcnow()
    with session_scope(engine) as session:
        for item, batch in zip(items, prepared, strict=True):
            target, outcome = item.target, item.outcome
            report = PollReport(
                target.id, target.url, outcome.status, outcome.error, len(item.entries)
            )
            if batch:
                result = ingest(
                    engine,
                    origin=f"feed:{target.id}",
                    feed_id=target.id,
                    items=batch,
                    threshold=threshold,
                    session=session,
                )
                report.stored = len(result.stored)
                report.duplicates = len(result.duplicates)
                report.alerts = result.alerts
            reports.append(report)
        record_fetches(
            session,
            [(item.target.id, item.outcome) for item in items],
            max_backoff=max_backoff,
            now=now,
        )
    return reports


Prepared = tuple[Download, list[PreparedArticle]]

# The matchers a forked preparation process uses: set in the parent just before the
# fork, so children inherit them instead of unpickling automata.
_forked_matchers: Matchers | None = None


def _parse_and_prepare(target: FeedTarget, result: FetchResult) -> Prepared:
    """CPU half of polling one feed, run in a preparation process."""
    assert _forked_matchers is not None
    item = interpret(target, result)
    return item, (prepare(item.entries, _forked_matchers) if item.entries else [])


def _groups(ready: list[Prepared], max_entries: int) -> Iterator[list[Prepared]]:
    group: list[Prepared] = []
    size = 0
    for pair in ready:
        if group and size + len(pair[0].entries) > max_entries:
            yield group
            group, size = [], 0
        group.append(pair)
        size += len(pair[0].entries)
    if group:
        yield group


def _preparation_pool(matchers: Matchers, processes: int) -> ProcessPoolExecutor | None:
    """Worker processes for parsing and preparing entries, forked before any thread starts.

    Parsing, normalizing, fingerprinting and matching are pure Python CPU work: threads
    would share one core. Forking (rather than spawning) keeps start-up to milliseconds;
    the children never touch the parent's database connections (disposed on start) and
    fork before the download threads exist.
    """
    global _forked_matchers
    if processes <= 1 or sys.platform == "win32":
        return None
    _forked_matchers = matchers
    pool = ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context("fork"),
        initializer=dispose_engines,
    )
    pool.submit(int).result()  # with "fork", every child is started on the first submit
    return pool


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
    processes: int = 1,
) -> list[PollReport]:
    """Fetch many feeds concurrently (bounded), prepare them on `processes` cores, and
    store them in groups as they arrive.

    Threads do the network I/O; a pool of processes parses and prepares; this thread
    stores. Everything ready by the time the previous group is stored joins the next
    group (at most GROUP_ENTRIES entries), so a slow feed never holds the others back.
    """
    reports: list[PollReport] = []
    cpu = _preparation_pool(matchers, processes) if len(targets) > 1 else None
    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as io:
            fetching: dict[Future[FetchResult | Download], FeedTarget] = {
                io.submit(fetch, t, policy, client): t for t in targets
            }
            preparing: dict[Future[Prepared], FeedTarget] = {}
            while fetching or preparing:
                waiting: list[Future[Any]] = [*fetching, *preparing]
                done, _ = wait(waiting, return_when=FIRST_COMPLETED)
                ready: list[Prepared] = []
                for future in done:
                    if future in fetching:
                        target = fetching.pop(future)
                        fetched = future.result()
                        if isinstance(fetched, Download):
                            ready.append((fetched, []))
                        elif cpu is not None and fetched.content:
                            preparing[cpu.submit(_parse_and_prepare, target, fetched)] = target
                        else:
                            item = interpret(target, fetched)
                            ready.append((item, prepare(item.entries, matchers)))
                    else:
                        target = preparing.pop(future)
                        ready.append(_prepared_result(future, target))
                for group in _groups(ready, GROUP_ENTRIES):
                    reports.extend(
                        store_downloads(
                            engine,
                            matchers,
                            [item for item, _ in group],
                            threshold=threshold,
                            max_backoff=max_backoff,
                            prepared=[batch for _, batch in group],
                        )
                    )
    finally:
        if cpu is not None:
            cpu.shutdown(cancel_futures=True)
    return reports


def _prepared_result(future: Future[Prepared], target: FeedTarget) -> Prepared:
    try:
        return future.result()
    except Exception as exc:  # a crash in one feed's preparation must not stop the poll
        log.error("preparing %s failed: %s", target.url, exc)
        return Download(
            target, FetchOutcome(status=None, error=f"internal error while processing: {exc}")
        ), []
