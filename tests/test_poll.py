"""`newswatch poll` end to end in one process: real HTTP server, real SQLite store."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import pytest

from tests.servers import FeedServer, rss

STORY = (
    "Washington and Seoul resumed talks on the cost-sharing agreement for the 28,500 US troops "
    "stationed in South Korea, with negotiators meeting in Honolulu on Tuesday."
)
OTHER = "A new bakery opened in Lisbon, selling custard tarts to long queues of tourists."
LATER = (
    "North Korea test-fired a ballistic missile into the East Sea on Friday, the South's Joint "
    "Chiefs of Staff said, days after trilateral drills by the US, Japan and South Korea ended."
)


def feed_with(*items: tuple[str, str, str]) -> str:
    return rss([{"guid": g, "title": t, "description": d} for g, t, d in items])


def test_poll_stores_alerts_once_and_uses_conditional_get(cli: Any, feeds: FeedServer) -> None:
    feeds.put(
        "/wire.xml", feed_with(("a1", "Cost-sharing talks resume", STORY), ("a2", "Bakery", OTHER))
    )
    assert cli("init").code == 0
    assert cli("feeds", "add", feeds.url("/wire.xml")).code == 0
    added = cli("rules", "add", "usfk-costs", "--query", '"cost sharing" AND troops')
    assert added.code == 0, added.err

    first = cli("poll", "--format", "json")
    assert first.code == 0, first.err
    [report] = first.json()
    assert report["status"] == 200 and report["stored"] == 2 and report["alerts"] == 1

    alerts = cli("alerts", "list", "--format", "json").json()
    assert len(alerts) == 1
    alert = alerts[0]
    for key in (
        "id",
        "rule",
        "article_id",
        "title",
        "url",
        "topics",
        "matched",
        "snippet",
        "created_at",
        "delivered_at",
    ):
        assert key in alert
    assert alert["rule"] == "usfk-costs"
    assert alert["title"] == "Cost-sharing talks resume"
    assert "troop-cost-sharing" in alert["topics"]
    assert "troops" in " ".join(alert["matched"]).lower()

    # Unchanged feed: the second poll must be conditional and add nothing.
    second = cli("poll", "--feed", feeds.url("/wire.xml"), "--format", "json")
    assert second.code == 0, second.err
    assert second.json()[0]["status"] == 304
    assert feeds.requests_to("/wire.xml")[-1].headers.get("if-none-match")
    assert len(cli("alerts", "list", "--format", "json").json()) == 1

    # A changed feed with one more matching story: exactly one more alert.
    feeds.put(
        "/wire.xml",
        feed_with(
            (
                "a3",
                "Troop cost sharing deal near",
                "Officials say a cost sharing deal for US troops in Korea is near, after months of talks on the burden.",
            ),
            ("a1", "Cost-sharing talks resume", STORY),
            ("a2", "Bakery", OTHER),
        ),
    )
    third = cli("poll", "--feed", feeds.url("/wire.xml"), "--format", "json")
    assert third.json()[0]["stored"] == 1
    alerts = cli("alerts", "list", "--format", "json").json()
    assert [a["title"] for a in alerts] == [
        "Troop cost sharing deal near",
        "Cost-sharing talks resume",
    ]

    feed = cli("feeds", "list", "--format", "json").json()[0]
    for key in (
        "id",
        "url",
        "title",
        "active",
        "last_status",
        "last_error",
        "error_count",
        "last_polled_at",
        "next_poll_at",
    ):
        assert key in feed
    assert feed["title"] == "Test Wire" and feed["last_status"] == 200 and feed["error_count"] == 0


def test_syndicated_copy_from_another_feed_does_not_alert_twice(
    cli: Any, feeds: FeedServer
) -> None:
    feeds.put("/a.xml", feed_with(("x1", "Talks on troop costs", STORY + " " + LATER)))
    copy = (
        "<p>READ ALSO: Markets rally</p><p>"
        + STORY
        + "</p><p>"
        + LATER.replace("Friday", "Friday morning")
        + "</p>"
    )
    feeds.put("/b.xml", feed_with(("y9", "Allies discuss troop costs", copy)))
    cli("init")
    cli("feeds", "add", feeds.url("/a.xml"))
    cli("feeds", "add", feeds.url("/b.xml"))
    cli("rules", "add", "costs", "--query", "cost sharing")
    assert cli("poll").code == 0
    articles = cli("articles", "list", "--format", "json").json()
    by_guid = {a["guid"].rsplit("/", 1)[-1]: a for a in articles}
    assert (
        by_guid["y9"]["duplicate_of"] == by_guid["x1"]["id"]
        or by_guid["x1"]["duplicate_of"] == by_guid["y9"]["id"]
    )
    assert len(cli("alerts", "list", "--format", "json").json()) == 1


def test_feed_errors_are_recorded_not_raised(cli: Any, feeds: FeedServer) -> None:
    feeds.put("/good.xml", feed_with(("g1", "Fine", OTHER)))
    cli("init")
    cli("feeds", "add", feeds.url("/missing.xml"))
    cli("feeds", "add", feeds.url("/good.xml"))
    result = cli("poll", "--format", "json")
    assert result.code == 0, result.err
    listed = {f["url"]: f for f in cli("feeds", "list", "--format", "json").json()}
    broken = listed[feeds.url("/missing.xml")]
    assert (
        broken["last_status"] == 404
        and broken["error_count"] == 1
        and "404" in broken["last_error"]
    )
    assert listed[feeds.url("/good.xml")]["error_count"] == 0


def test_preparation_processes_store_the_same_as_one_process(
    cli: Any, feeds: FeedServer, monkeypatch: Any
) -> None:
    from worker.settings import get_settings

    stories = [
        (
            f"s{i}",
            f"Story {i}",
            f"<p>{word} " * 3 + f"report number {i} from the {word} desk about harvests.</p>",
        )
        for i, word in enumerate(["maize", "wheat", "rice", "barley", "millet", "sorghum"])
    ]
    for n in range(6):
        feeds.put(f"/f{n}.xml", feed_with(*stories[n : n + 1], (f"t{n}", "Cost talks", STORY)))
    cli("init")
    for n in range(6):
        cli("feeds", "add", feeds.url(f"/f{n}.xml"))
    cli("rules", "add", "costs", "--query", "cost sharing")
    monkeypatch.setenv("NEWSWATCH_POLL_PROCESSES", "2")
    get_settings.cache_clear()
    reports = cli("poll", "--format", "json").json()
    assert len(reports) == 6 and all(r["status"] == 200 for r in reports)
    # Counted in the preparation processes, which send back only prepared articles.
    assert [r["entries"] for r in reports] == [2] * 6
    assert sum(r["stored"] for r in reports) == 7  # six harvest stories, one talks story
    assert sum(r["duplicates"] for r in reports) == 5  # the talks story from five more feeds
    assert len(cli("alerts", "list", "--format", "json").json()) == 1


@pytest.mark.parametrize("merged", [False, True])
def test_a_poll_links_copies_of_articles_stored_before_it(
    cli: Any, feeds: FeedServer, monkeypatch: Any, merged: bool
) -> None:
    import storage.dedup
    from worker.settings import get_settings

    if merged:  # the first poll's articles go to lsh_band: the second poll probes them
        monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 0)
    monkeypatch.setenv("NEWSWATCH_POLL_PROCESSES", "2")
    get_settings.cache_clear()
    feeds.put("/a.xml", feed_with(("x1", "Talks on troop costs", STORY + " " + LATER)))
    cli("init")
    cli("feeds", "add", feeds.url("/a.xml"))
    assert cli("poll").code == 0
    storage.dedup._indexes.clear()  # the next poll is a new process: no index in memory
    copy = "<p>READ ALSO: Markets rally</p><p>" + STORY + "</p><p>" + LATER + "</p>"
    for n in range(3):
        feeds.put(f"/b{n}.xml", feed_with((f"y{n}", "Allies discuss troop costs", copy)))
        cli("feeds", "add", feeds.url(f"/b{n}.xml"))
    reports = cli("poll", "--format", "json").json()
    assert sum(r["duplicates"] for r in reports) == 3
    articles = {
        a["guid"].rsplit("/", 1)[-1]: a for a in cli("articles", "list", "--format", "json").json()
    }
    assert {articles[f"y{n}"]["duplicate_of"] for n in range(3)} == {articles["x1"]["id"]}


def _harvest_feeds(feeds: FeedServer, count: int, version: int) -> None:
    """`count` one-entry feeds; each (feed, version) is a story of its own words."""
    for n in range(count):
        words = [
            hashlib.sha1(f"{n}-{version}-{k}".encode()).hexdigest()[:8].translate(_LETTERS)
            for k in range(16)
        ]
        feeds.put(
            f"/h{n}.xml",
            feed_with(
                (f"h{n}-v{version}", f"Harvest {n}, edition {version}", " ".join(words) + ".")
            ),
        )


_LETTERS = str.maketrans("0123456789", "ghijklmnop")


def _subscribe_harvest(
    cli: Any, feeds: FeedServer, monkeypatch: Any, count: int, *, concurrency: int, processes: int
) -> None:
    """A store subscribed to `count` harvest feeds, polled with these download threads
    and preparation processes."""
    from worker.settings import get_settings

    monkeypatch.setenv("NEWSWATCH_FETCH_CONCURRENCY", str(concurrency))
    monkeypatch.setenv("NEWSWATCH_POLL_PROCESSES", str(processes))
    get_settings.cache_clear()
    _harvest_feeds(feeds, count, version=1)
    cli("init")
    for n in range(count):
        cli("feeds", "add", feeds.url(f"/h{n}.xml"))


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The preparation pools polls fork (their sizes): observed, the real pool still runs."""
    import tasks.polling

    seen: list[int] = []
    real_pool = tasks.polling._preparation_pool

    def counted(matchers: Any, processes: int, probing: Any) -> Any:
        seen.append(processes)
        return real_pool(matchers, processes, probing)

    monkeypatch.setattr(tasks.polling, "_preparation_pool", counted)
    return seen


def test_unchanged_feeds_are_recorded_without_a_preparation_pool(
    cli: Any, feeds: FeedServer, monkeypatch: Any, forks: list[int]
) -> None:
    from worker.settings import get_settings

    monkeypatch.setenv("NEWSWATCH_POLL_PROCESSES", "2")
    get_settings.cache_clear()
    _harvest_feeds(feeds, 8, version=1)
    cli("init")
    for n in range(8):
        cli("feeds", "add", feeds.url(f"/h{n}.xml"), "--interval", "15m")
    cli("feeds", "add", feeds.url("/missing.xml"))
    first = cli("poll", "--format", "json").json()
    assert sorted(r["status"] for r in first) == [200] * 8 + [404]
    assert forks == [2]  # new feeds have no validator: the pool is forked up front

    forks.clear()
    second = cli("poll", "--feed", "1", "--feed", "2", "--feed", "3", "--format", "json").json()
    assert [r["status"] for r in second] == [304, 304, 304]
    assert forks == []  # every feed had an ETag and none changed: no pool
    listed = {f["id"]: f for f in cli("feeds", "list", "--format", "json").json()}
    for feed_id in (1, 2, 3):
        feed = listed[feed_id]
        assert feed["last_status"] == 304 and feed["error_count"] == 0
        assert feed["last_error"] is None and feed["entry_count"] == 1
        waited = datetime.fromisoformat(feed["next_poll_at"]) - datetime.fromisoformat(
            feed["last_polled_at"]
        )
        assert waited.total_seconds() == 15 * 60
    assert listed[9]["error_count"] == 1 and listed[9]["last_status"] == 404


def test_changed_feeds_with_validators_fork_the_pool_when_they_arrive(
    cli: Any, feeds: FeedServer, monkeypatch: Any, forks: list[int]
) -> None:
    from worker.settings import get_settings

    # One download thread: many feeds are still to fetch when the first changed one arrives.
    _subscribe_harvest(cli, feeds, monkeypatch, 20, concurrency=1, processes=1)
    assert cli("poll").code == 0
    assert forks == []  # one process: no pool

    # Every feed now has an ETag, and every document changed.
    _harvest_feeds(feeds, 20, version=2)
    monkeypatch.setenv("NEWSWATCH_POLL_PROCESSES", "2")
    get_settings.cache_clear()
    reports = _poll_all_due(cli)
    assert forks == [2]  # forked once, when the first changed feed arrived
    assert len(reports) == 20 and all(r["status"] == 200 for r in reports)
    assert sum(r["stored"] for r in reports) == 20
    assert all(
        f["entry_count"] == 2 and f["error_count"] == 0
        for f in cli("feeds", "list", "--format", "json").json()
    )
    stored = {a["title"] for a in cli("articles", "list", "--format", "json").json()}
    assert {f"Harvest {n}, edition 2" for n in range(20)} <= stored


def test_downloads_wait_while_fetched_documents_await_storing(
    cli: Any, feeds: FeedServer, monkeypatch: Any
) -> None:
    """Storing is the slowest stage: past MAX_UNSTORED_BYTES the downloads wait for it
    instead of holding every document (and its prepared articles) in memory."""
    import threading
    import time

    import tasks.polling

    _subscribe_harvest(cli, feeds, monkeypatch, 24, concurrency=3, processes=1)

    held = [0, 0]  # documents fetched and not yet stored: now, at most
    lock = threading.Lock()
    real_fetch, real_store = tasks.polling.fetch, tasks.polling.store_downloads

    def fetch(*args: Any, **kwargs: Any) -> Any:
        result = real_fetch(*args, **kwargs)
        with lock:
            held[0] += result.content is not None
            held[1] = max(held)
        return result

    def store_downloads(engine: Any, matchers: Any, items: list[Any], **kwargs: Any) -> Any:
        time.sleep(0.05)  # a slow store, so that the downloads would run ahead
        reports = real_store(engine, matchers, items, **kwargs)
        with lock:
            held[0] -= sum(1 for item in items if item.outcome.entries)
        return reports

    monkeypatch.setattr(tasks.polling, "fetch", fetch)
    monkeypatch.setattr(tasks.polling, "store_downloads", store_downloads)
    monkeypatch.setattr(tasks.polling, "MAX_UNSTORED_BYTES", 1)
    reports = cli("poll", "--format", "json").json()
    assert len(reports) == 24 and all(r["status"] == 200 for r in reports)
    assert sum(r["stored"] for r in reports) == 24
    # One document past the limit stops every thread before its next fetch: at most the
    # three in flight then are held.
    assert 1 <= held[1] <= 3

    _harvest_feeds(feeds, 24, version=2)
    monkeypatch.setattr(tasks.polling, "MAX_UNSTORED_BYTES", 10**9)
    held[1] = 0
    assert sum(r["stored"] for r in _poll_all_due(cli)) == 24
    assert held[1] > 3  # without the limit they run ahead of the slow store


def _poll_all_due(cli: Any) -> list[dict[str, Any]]:
    """Make every feed due now, then poll."""
    from sqlalchemy import text

    from storage.engine import get_engine
    from worker.settings import get_settings

    engine = get_engine(get_settings().resolved_database_url())
    with engine.begin() as conn:
        conn.execute(text("UPDATE feed SET next_poll_at = '2000-01-01 00:00:00'"))
    result = cli("poll", "--format", "json")
    assert result.code == 0, result.err
    reports: list[dict[str, Any]] = result.json()
    return reports


def test_preparation_processes_yield_the_cpu_to_the_storing_thread() -> None:
    import os

    import tasks.polling
    from tasks.polling import PREPARATION_NICENESS

    matchers: Any = None  # the children are only asked their niceness
    pool = tasks.polling._preparation_pool(matchers, 2, None)
    assert pool is not None
    try:
        niceness = {pool.submit(os.nice, 0).result() for _ in range(4)}
    finally:
        pool.shutdown()
    assert niceness == {min(19, os.nice(0) + PREPARATION_NICENESS)}


def test_preparation_processes_run_where_their_priority_cannot_be_lowered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    import tasks.polling

    def refused(increment: int) -> int:
        raise PermissionError("setpriority refused")

    monkeypatch.setattr(os, "nice", refused)  # forked children inherit the refusal
    matchers: Any = None
    pool = tasks.polling._preparation_pool(matchers, 2, None)
    assert pool is not None
    try:
        assert pool.submit(sum, [1, 2]).result(timeout=30) == 3
    finally:
        pool.shutdown()
