"""Fetch a feed, parse it, run its entries through the pipeline, record the outcome.

Shared by the Celery task `fetch_feed` and the in-process `newswatch poll`.
Expected per-feed failures (network, HTTP, unparsable documents) become a recorded
error on the feed with a backoff; they never raise.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue

import httpx
from sqlalchemy import Engine

from storage.articles import PreparedArticle, ingest
from storage.dedup import probe_candidates, start_recent_index
from storage.engine import dispose_engines, get_engine, session_scope
from storage.feeds import FeedTarget, FetchOutcome, record_fetches
from storage.models import utcnow
from storage.recentindex import RecentIndex
from tasks.fetch import FetchPolicy, FetchResult, fetch_url
from tasks.models import RawEntry
from tasks.parse import parse_feed
from tasks.pipeline import Matchers, prepare

log = logging.getLogger(__name__)

# Entries stored in one transaction by `poll_targets` at most (when that many are
# ready). Each commit rewrites every index page its rows touched (the article table's
# indexes take random keys): 4,000 per commit made a 1,000 x 50 poll ~13% faster than
# 1,000 (benchmarks/ingest.py, measured when new band keys were kept in key order too);
# 10,000 gained no more. A group holds the write lock for a few seconds at most.
GROUP_ENTRIES = 4000


@dataclass(frozen=True, slots=True)
class Download:
    """A fetched and parsed feed, ready for the pipeline (or an outcome without entries).

    `outcome.entries` counts the feed's entries; `entries` holds them until they are
    prepared (a preparation process sends back only the prepared articles).
    """

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
    to_send: list[int] = field(default_factory=list)  # see `IngestResult.to_send`


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
    index: RecentIndex | None = None,
) -> list[PollReport]:
    """Store several downloads and record their fetches in one transaction.

    The pure work (normalize, fingerprint, tag, match) runs first, outside the write
    lock; then one transaction stores every feed's entries and records each fetch (and
    its new ETag) with them, so a crash loses neither half: the next poll fetches again.
    One commit per group instead of two per feed: a commit cost ~1.7 ms on SQLite,
    as much as storing one article (benchmarks/ingest.py).

    Unless given `prepared`, the items are also probed for near-duplicate candidates
    before the lock on SQLite (`probe_candidates`), the look-up's largest query:
    concurrent workers then spend less of their time waiting for one another
    (benchmarks/scaleout.py, 2 workers: 1.27 -> 1.39x one worker's rate). Not on
    PostgreSQL, where ingest ranks a batch's candidates in one statement: a 50-entry
    feed's probe cost ~13 ms and took only ~4 ms off its ingest (~40 ms; 5,000-10,000
    articles stored).
    A long run passes its `index` (see `poll_targets`), invalidated if the commit fails.
    """
    if prepared is None:
        probe = engine.dialect.name == "sqlite"
        prepared = []
        for item in items:
            batch = prepare(item.entries, matchers) if item.entries else []
            prepared.append(probe_candidates(engine, batch) if batch and probe else batch)
    try:
        reports = _store_prepared(
            engine, items, prepared, max_backoff=max_backoff, threshold=threshold, index=index
        )
    except BaseException:
        if index is not None:
            index.invalidate()  # it may hold articles that were rolled back
        raise
    return reports


def _store_prepared(
    engine: Engine,
    items: Sequence[Download],
    prepared: Sequence[list[PreparedArticle]],
    *,
    threshold: float,
    max_backoff: int,
    index: RecentIndex | None,
) -> list[PollReport]:
    reports = []
    now = utcnow()
    with session_scope(engine) as session:
        for item, batch in zip(items, prepared, strict=True):
            target, outcome = item.target, item.outcome
            report = PollReport(
                target.id, target.url, outcome.status, outcome.error, outcome.entries
            )
            if batch:
                result = ingest(
                    engine,
                    origin=f"feed:{target.id}",
                    feed_id=target.id,
                    items=batch,
                    threshold=threshold,
                    session=session,
                    index=index,
                )
                report.stored = len(result.stored)
                report.duplicates = len(result.duplicates)
                report.alerts, report.to_send = result.alerts, result.to_send
            reports.append(report)
        record_fetches(
            session,
            [(item.target.id, item.outcome) for item in items],
            max_backoff=max_backoff,
            now=now,
        )
    return reports


Prepared = tuple[Download, list[PreparedArticle]]


@dataclass(frozen=True, slots=True)
class _Probing:
    """A poll's look-up of near-duplicate candidates among the articles in lsh_band when
    it began (ids up to `through`), made in the preparation processes. The later ones,
    and those the poll stores itself, are in its `RecentIndex`: the storing thread
    queries neither."""

    url: str
    through: int

    def probe(
        self, batch: list[PreparedArticle], engine: Engine | None = None
    ) -> list[PreparedArticle]:
        """`batch` with its probes (no query at all when lsh_band was empty), made on
        `engine`, or in a preparation process on its own engine for `url`."""
        if not batch:
            return batch
        return probe_candidates(engine or get_engine(self.url), batch, through=self.through)


# What a forked preparation process uses: set in the parent just before the fork, so
# children inherit them instead of unpickling automata.
_forked_matchers: Matchers | None = None
_forked_probing: _Probing | None = None


def _parse_and_prepare(target: FeedTarget, result: FetchResult) -> Prepared:
    """CPU half of polling one feed, run in a preparation process.

    The raw entries stay here: sending them back with the prepared articles doubled
    the pickling, and the storing process needs only their count (`outcome.entries`).
    """
    assert _forked_matchers is not None
    item = interpret(target, result)
    batch = prepare(item.entries, _forked_matchers) if item.entries else []
    if _forked_probing is not None:
        batch = _forked_probing.probe(batch)
    return Download(item.target, item.outcome), batch


def _groups(ready: list[Prepared], max_entries: int) -> Iterator[list[Prepared]]:
    group: list[Prepared] = []
    size = 0
    for pair in ready:
        if group and size + pair[0].outcome.entries > max_entries:
            yield group
            group, size = [], 0
        group.append(pair)
        size += pair[0].outcome.entries
    if group:
        yield group


def _preparation_pool(
    matchers: Matchers, processes: int, probing: _Probing | None
) -> ProcessPoolExecutor | None:
    """Worker processes for parsing and preparing entries.

    Parsing, normalizing, fingerprinting and matching are pure Python CPU work: threads
    would share one core. They yield the CPU to this process (PREPARATION_NICENESS).
    Forking (rather than spawning) keeps start-up to milliseconds; the children never
    touch the parent's database connections (disposed on start).
    Call it only while no other thread of this process can hold a lock (see
    `_Downloads.pause`): a fork copies locks as they are.
    """
    global _forked_matchers, _forked_probing
    if processes <= 1 or sys.platform == "win32":
        return None
    _forked_matchers, _forked_probing = matchers, probing
    pool = ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_preparation_process,
    )
    # With "fork", the first submit forks every child before it starts the pool's
    # own thread, so nothing runs in this process meanwhile.
    pool.submit(int)
    return pool


# The preparation processes run this much nicer than the poll: the storing thread is the
# slowest stage, and when the cores are busy it should get one before they do. They
# still keep ahead of it (a 1,000 x 50 poll stored in more, smaller groups). In-process
# 1,000 x 50 polls (benchmarks/ingest.py's harness), five runs each, interleaved: 29.2 s
# on average without, 26.3 s with, the storing thread's wait for a core ~3 s -> < 1 s;
# 5 and 19 measured no better than 10. The gain is within the drift of a whole run of
# the benchmark, whose ratio to reader did not move visibly in two pairs.
PREPARATION_NICENESS = 10


def _start_preparation_process() -> None:
    # Only a priority: where the system refuses it, the process runs as it is.
    with contextlib.suppress(OSError):
        os.nice(PREPARATION_NICENESS)
    dispose_engines()


# Outcomes without entries (304s, errors) wait to be recorded together, in the next
# group's transaction or on their own: at most this long, or this many of them. A
# commit per handful of 304s was most of an unchanged poll; the wait stays far below
# the lease (`fetch_lease_seconds`), and a crash meanwhile only means a fetch again.
QUIET_SECONDS = 5.0
QUIET_BATCH = 1000

# Bytes of fetched feed documents whose entries are not stored yet, at most: past this
# the download threads wait (a thread that started a fetch still finishes it). The
# storing thread is the slowest stage, and without a bound a large poll held every
# document, its prepared articles and their pickles in memory at once: 1,000 x 50
# entries peaked at 380-550 MB. At 12 MiB (~5,800 such entries; a group stores 4,000)
# it peaked at 267-285 MB, in the same time as at 24 MiB (three pairs, 24.5 s on
# average); 8 MiB saved little more.
MAX_UNSTORED_BYTES = 12 * 1024 * 1024

# How long the downloads may pause for the preparation pool to be forked (see
# `poll_targets`). Fetches still in flight after this are slow ones: the poll is then
# bound by the network, and this thread prepares changed feeds itself, unhurried.
PAUSE_SECONDS = 1.0


# What reaches the storing thread: a fetch, a preparation, or a download thread's death.
_Arrival = FetchResult | Download | Future[Prepared] | BaseException


class _Arrivals:
    """Results handed from the download threads and the preparation pool to this thread.

    One queue instead of a future per feed and `wait(FIRST_COMPLETED)` over all of
    them: that call registers a waiter on every pending future, O(n^2) for a poll.
    """

    def __init__(self) -> None:
        self._queue: SimpleQueue[tuple[FeedTarget, _Arrival]] = SimpleQueue()

    def put(self, target: FeedTarget, arrival: _Arrival) -> None:
        """Hand over a fetch result (or the exception that ended a download thread)."""
        self._queue.put((target, arrival))

    def watch(self, target: FeedTarget, future: Future[Prepared]) -> None:
        """Hand over a preparation once it is done."""
        future.add_done_callback(lambda done: self._queue.put((target, done)))

    def take(self, timeout: float | None) -> list[tuple[FeedTarget, _Arrival]]:
        """Everything arrived so far, waiting up to `timeout` for the first ([] if none)."""
        try:
            arrived = [self._queue.get(timeout=None if timeout is None else max(0.0, timeout))]
        except Empty:
            return []
        while True:
            try:
                arrived.append(self._queue.get_nowait())
            except Empty:
                return arrived


def document_size(arrival: _Arrival) -> int:
    """Bytes of the feed document a fetch brought (0 for a 304, an error, an exception)."""
    if isinstance(arrival, FetchResult) and arrival.content is not None:
        return len(arrival.content)
    return 0


class _Downloads:
    """The feeds left to fetch, shared by a few download threads, which can be paused.

    A few long-lived loops instead of a future per feed (submitting 1,000 futures and
    running their callbacks cost ~5% of an unchanged poll). The pause lets the storing
    thread fork the preparation pool once the first changed feed arrives: every
    download thread then waits between two fetches, holding no lock, so the fork
    copies none held (forking while a thread is inside httpx or OpenSSL could leave a
    child stuck on a lock nobody will release).

    The threads also wait while more than `max_unstored` bytes of fetched documents
    await storing: the storing thread hands them back with `stored` (see
    MAX_UNSTORED_BYTES).
    """

    def __init__(self, targets: list[FeedTarget], out: _Arrivals, max_unstored: int) -> None:
        self._todo = list(reversed(targets))
        self._out = out
        self._cond = threading.Condition()
        self._busy = 0
        self._pausing = False
        self._unstored = 0
        self._max_unstored = max_unstored

    def run(self, policy: FetchPolicy, client: httpx.Client) -> None:
        """A download thread: fetch feeds until none is left (or `cancel`)."""
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: (
                        not self._todo
                        or (not self._pausing and self._unstored < self._max_unstored)
                    )
                )
                if not self._todo:
                    return
                target = self._todo.pop()
                self._busy += 1
            arrival: _Arrival
            try:
                arrival = fetch(target, policy, client)
            except BaseException as exc:  # `fetch` turns errors into results; this is worse
                arrival = exc
            with self._cond:
                self._busy -= 1
                self._unstored += document_size(arrival)
            # Handed over after `_busy` dropped: when the storing thread wakes for the
            # last fetch in flight, `idle()` is already true.
            self._out.put(target, arrival)
            if isinstance(arrival, BaseException):
                raise arrival

    def pause(self) -> None:
        """Ask the download threads to stop before their next fetch."""
        with self._cond:
            self._pausing = True

    def idle(self) -> bool:
        """True when paused and no fetch is in flight."""
        with self._cond:
            return self._pausing and self._busy == 0

    def left(self) -> int:
        """How many feeds no thread has started on yet."""
        with self._cond:
            return len(self._todo)

    def stored(self, size: int) -> None:
        """Hand back `size` bytes of documents whose entries are stored (or that had none)."""
        if size:
            with self._cond:
                self._unstored -= size
                self._cond.notify_all()

    def resume(self) -> None:
        """Let the download threads go on."""
        with self._cond:
            self._pausing = False
            self._cond.notify_all()

    def cancel(self) -> None:
        """Drop the feeds not yet started; the threads end after their current fetch."""
        with self._cond:
            self._todo.clear()
            self._pausing = False
            self._cond.notify_all()


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
    Fetches without entries (304s, errors) are recorded with the next group, or on
    their own after QUIET_SECONDS or QUIET_BATCH of them.

    The pool is forked at the start when some feed has no validator (its answer will
    be a document), otherwise only when the first changed feed arrives: the download
    threads pause (PAUSE_SECONDS at most) so that none runs during the fork, and this
    thread prepares what arrives meanwhile. Forking the pool cost ~50-100 ms, a tenth
    of a poll where every feed answers 304.

    Near-duplicate look-ups: the preparation processes probe the articles in lsh_band
    when the poll began; the others, and the ones it stores itself, are looked up in
    memory (`RecentIndex`). The storing thread then runs no candidate query: 1,000 x 50
    entries, ~40% of its time (benchmarks/ingest.py). Not on PostgreSQL once lsh_band
    has articles: probes did not pay there (see `store_downloads`).
    """
    reports: list[PollReport] = []
    probing, index = _run_look_ups(engine)
    use_pool = len(targets) > 1 and processes > 1 and sys.platform != "win32"
    cpu = (
        _preparation_pool(matchers, processes, probing)
        if use_pool and _expects_content(targets)
        else None
    )
    # When the first changed feed arrives without a pool: pause the downloads until
    # this moment at most, then fork (once) if they are idle, or go on without.
    pause_until: float | None = None
    pool_tried = cpu is not None or not use_pool
    arrivals = _Arrivals()
    downloads = _Downloads(targets, arrivals, MAX_UNSTORED_BYTES)
    quiet: list[Prepared] = []
    quiet_since = 0.0
    # Feed id -> size of its document, handed back to the downloads once stored.
    unstored: dict[int, int] = {}

    def stored(pairs: list[Prepared]) -> None:
        downloads.stored(sum(unstored.pop(item.target.id, 0) for item, _ in pairs))

    def store(group: list[Prepared]) -> None:
        nonlocal quiet
        group, quiet = group + quiet, []
        reports.extend(
            store_downloads(
                engine,
                matchers,
                [item for item, _ in group],
                threshold=threshold,
                max_backoff=max_backoff,
                prepared=[batch for _, batch in group],
                index=index,
            )
        )

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as io:
            try:
                for _ in range(min(max(1, concurrency), len(targets))):
                    io.submit(downloads.run, policy, client)
                outstanding = len(targets)
                while outstanding:
                    deadlines = [quiet_since + QUIET_SECONDS] if quiet else []
                    deadlines += [pause_until] if pause_until is not None else []
                    wait = min(deadlines) - time.monotonic() if deadlines else None
                    ready: list[Prepared] = []
                    for target, arrival in arrivals.take(wait):
                        if isinstance(arrival, BaseException):
                            raise arrival
                        if size := document_size(arrival):
                            unstored[target.id] = size
                        if isinstance(arrival, Future):
                            ready.append(_prepared_result(arrival, target))
                        elif isinstance(arrival, Download):
                            ready.append((arrival, []))
                        elif cpu is not None and arrival.content:
                            arrivals.watch(target, cpu.submit(_parse_and_prepare, target, arrival))
                        else:
                            if not pool_tried and pause_until is None and arrival.content:
                                downloads.pause()
                                pause_until = time.monotonic() + PAUSE_SECONDS
                            item = interpret(target, arrival)
                            batch = prepare(item.entries, matchers) if item.entries else []
                            if probing is not None:
                                batch = probing.probe(batch, engine)
                            ready.append((item, batch))
                    if pause_until is not None and (
                        downloads.idle() or time.monotonic() >= pause_until
                    ):
                        if downloads.idle() and downloads.left():
                            cpu = _preparation_pool(matchers, processes, probing)
                        downloads.resume()
                        pause_until, pool_tried = None, True
                    outstanding -= len(ready)
                    for pair in ready:
                        if not pair[0].outcome.entries:
                            if not quiet:
                                quiet_since = time.monotonic()
                            quiet.append(pair)
                    changed = [p for p in ready if p[0].outcome.entries]
                    # A document without entries (unparseable, empty) is not kept.
                    stored([p for p in ready if not p[0].outcome.entries])
                    for group in _groups(changed, GROUP_ENTRIES):
                        store(group)
                        stored(group)
                    if quiet and (
                        len(quiet) >= QUIET_BATCH or time.monotonic() - quiet_since >= QUIET_SECONDS
                    ):
                        store([])
                if quiet:
                    store([])
            except BaseException:
                downloads.cancel()
                raise
    finally:
        if cpu is not None:
            cpu.shutdown(cancel_futures=True)
    return reports


def _run_look_ups(engine: Engine) -> tuple[_Probing | None, RecentIndex | None]:
    """How a poll's near-duplicate look-ups run (see `poll_targets`)."""
    index = start_recent_index(engine)
    if index.start and engine.dialect.name != "sqlite":
        return None, index
    url = engine.url.render_as_string(hide_password=False)
    return _Probing(url, index.start), index


def _expects_content(targets: list[FeedTarget]) -> bool:
    """True when some feed has no validator (ETag, Last-Modified): it cannot get a 304."""
    return any(t.etag is None and t.last_modified is None for t in targets)


def _prepared_result(future: Future[Prepared], target: FeedTarget) -> Prepared:
    try:
        return future.result()
    except Exception as exc:  # a crash in one feed's preparation must not stop the poll
        log.error("preparing %s failed: %s", target.url, exc)
        return Download(
            target, FetchOutcome(status=None, error=f"internal error while processing: {exc}")
        ), []
