"""Storage on real SQLite and real PostgreSQL: schema, seeds, dedup links, alerts, leases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from storage.alerts import AlertFilter, list_alerts
from storage.article_queries import duplicate_clusters, get_article, list_articles
from storage.engine import session_scope
from storage.feeds import (
    MAX_UNFINISHED_CLAIMS,
    FetchOutcome,
    add_feed,
    claim_feeds,
    list_feeds,
    record_fetch,
)
from storage.models import Alert, Article, utcnow
from storage.rules import add_rule
from tasks.models import RawEntry
from tasks.pipeline import process_entries
from tests.test_fingerprint import OPENING, OTHER
from tests.test_fingerprint import STORY as LONG_STORY
from worker.bootstrap import initialize
from worker.runtime import get_runtime

STORY = (
    "<p>Washington and Seoul resumed negotiations on Tuesday over the cost-sharing agreement that "
    "decides how much South Korea pays toward the 28,500 US troops stationed on the peninsula.</p>"
    "<p>The talks in Honolulu are the first since the two allies failed to agree last year, "
    "officials said, adding that the gap between the two sides remained wide.</p>"
)
COPY = (
    "<p>READ ALSO: Stocks slide in Asia</p>"
    + STORY.replace("Tuesday", "Tuesday morning")
    + "<p>Disclaimer: This post has been auto-published from an agency feed.</p>"
)


def ingest(store: Any, origin: str, *entries: tuple[str, str, str]) -> Any:
    settings, engine = store
    runtime = get_runtime(settings)
    raw = [
        RawEntry(guid=g, url=f"https://news.example/{g}", title=t, content=c) for g, t, c in entries
    ]
    return process_entries(
        engine,
        runtime.matchers.get(engine),
        raw,
        origin=origin,
        feed_id=None,
        threshold=settings.near_duplicate_threshold,
    )


def test_init_is_idempotent_and_links_only_the_syndicated_seed_pair(store: Any) -> None:
    settings, engine = store
    again = initialize(settings, engine)
    assert again["stored"] == 0 and again["duplicates"] == 0 and again["skipped"] == 5
    articles = {a["guid"]: a for a in list_articles(engine)}
    assert sorted(articles) == sorted(
        f"seeds/{name}"
        for name in (
            "000_e5c05f6d49f3312a.txt",
            "001_15245b5447730f35.txt",
            "002_3dab73a8f7022311.txt",
            "003_a9ab1902cf3b1920.txt",
            "004_a4c9f0348441b866.txt",
        )
    )
    linked = {guid: a["duplicate_of"] for guid, a in articles.items() if a["duplicate_of"]}
    assert linked == {
        "seeds/002_3dab73a8f7022311.txt": articles["seeds/001_15245b5447730f35.txt"]["id"]
    }
    [cluster] = duplicate_clusters(engine)
    assert cluster["original"]["guid"].startswith("seeds/001")


def test_seed_topics(store: Any) -> None:
    _, engine = store
    topics = {a["guid"][6:9]: set(a["topics"]) for a in list_articles(engine)}
    assert {k for k, t in topics.items() if "troop-cost-sharing" in t} == {"000", "003", "004"}
    assert {k for k, t in topics.items() if "trilateral-drills" in t} == {
        "000",
        "001",
        "002",
        "003",
    }


def test_one_alert_per_rule_and_story_across_copies(store: Any) -> None:
    _, engine = store
    add_rule(engine, name="costs", query='"cost sharing" AND troops', topics=[], channels=[])
    first = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY))
    second = ingest(store, "feed:b", ("b7", "Allies resume cost talks", COPY))
    assert len(first.stored) == 1 and len(first.alerts) == 1
    assert len(second.duplicates) == 1 and second.alerts == []
    copy = get_article(engine, second.duplicates[0])
    assert copy["duplicate_of"] == first.stored[0]
    assert len(list_alerts(engine, AlertFilter())) == 1
    # Re-ingesting the same entries changes nothing.
    again = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY))
    assert again.skipped == 1 and again.stored == [] and again.alerts == []


def test_copies_within_one_batch_link_to_the_first_and_alert_once(store: Any) -> None:
    _, engine = store
    add_rule(engine, name="costs", query='"cost sharing" AND troops', topics=[], channels=[])
    result = ingest(
        store,
        "feed:a",
        ("a1", "Cost-sharing talks resume", STORY),
        ("a2", "Allies resume cost talks", COPY),  # near copy, same batch
        ("a3", "Cost-sharing talks resume", STORY),  # exact copy under another guid
        ("a1", "Cost-sharing talks resume", STORY),  # same guid again: skipped
    )
    assert len(result.stored) == 1 and len(result.duplicates) == 2 and result.skipped == 1
    original = result.stored[0]
    for copy_id in result.duplicates:
        assert get_article(engine, copy_id)["duplicate_of"] == original
    [alert] = list_alerts(engine, AlertFilter())
    assert result.alerts == [alert["id"]] and alert["article_id"] == original
    later = ingest(store, "feed:b", ("b1", "Cost talks", STORY.replace("Tuesday", "Monday")))
    assert later.duplicates and get_article(engine, later.duplicates[0])["duplicate_of"] == original


def test_rule_added_after_a_story_alerts_once_on_its_next_copy(store: Any) -> None:
    _, engine = store
    original = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY))
    add_rule(engine, name="late", query="honolulu", topics=[], channels=[])
    copy = ingest(store, "feed:b", ("b7", "Allies resume cost talks", COPY))
    third = ingest(store, "feed:c", ("c3", "Cost talks", COPY.replace("morning", "afternoon")))
    alerts = list_alerts(engine, AlertFilter(rule="late"))
    assert len(alerts) == 1 and alerts[0]["article_id"] == copy.duplicates[0]
    assert alerts[0]["story_id"] == original.stored[0]
    assert third.alerts == []


def test_copy_alerts_a_rule_its_original_did_not_match_once(store: Any) -> None:
    _, engine = store
    add_rule(engine, name="peninsula", query="peninsula AND officials", topics=[], channels=[])
    original = ingest(
        store, "feed:a", ("a1", "Talks", STORY.replace("officials said", "they said"))
    )
    assert original.stored and original.alerts == []
    copy = ingest(store, "feed:b", ("b7", "Talks", COPY))
    third = ingest(store, "feed:c", ("c3", "Talks", COPY.replace("morning", "afternoon")))
    assert copy.duplicates and third.duplicates
    [alert] = list_alerts(engine, AlertFilter(rule="peninsula"))
    assert copy.alerts == [alert["id"]] and third.alerts == []
    assert alert["article_id"] == copy.duplicates[0]
    assert alert["story_id"] == original.stored[0]


def test_different_story_is_not_a_duplicate(store: Any) -> None:
    _, _engine = store
    ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY))
    other = ingest(
        store,
        "feed:b",
        (
            "z1",
            "Drills",
            (
                "<p>South Korea and the United States will hold their annual Freedom Shield exercise next "
                "month with an expanded field training program, the Joint Chiefs of Staff said Thursday.</p>"
            ),
        ),
    )
    assert len(other.stored) == 1 and other.duplicates == []


def test_items_behind_one_standing_opening_stay_separate_stories(store: Any) -> None:
    _, engine = store
    add_rule(engine, name="agency", query='"development agency"', topics=[], channels=[])
    result = ingest(
        store,
        "feed:wire",
        ("w1", "Talks resume", f"<p>{OPENING}</p><p>{LONG_STORY}</p>"),
        ("w2", "Rates on hold", f"<p>{OPENING}</p><p>{OTHER}</p>"),
    )
    assert len(result.stored) == 2 and result.duplicates == []
    assert len(result.alerts) == 2  # one per story, though both open alike


def test_only_alerts_to_send_now_are_handed_to_delivery(store: Any) -> None:
    _, engine = store
    hook = "json://127.0.0.1:9/hook"
    add_rule(engine, name="stored", query="honolulu", topics=[], channels=[])
    add_rule(engine, name="now", query="honolulu", topics=[], channels=[hook])
    add_rule(engine, name="daily", query="honolulu", topics=[], channels=[hook], digest="daily")
    result = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY))
    by_rule = {a["rule"]: a["id"] for a in list_alerts(engine, AlertFilter())}
    assert sorted(result.alerts) == sorted(by_rule.values()) and len(by_rule) == 3
    assert result.to_send == [by_rule["now"]]


def test_postgresql_sessions_run_without_parallel_plans_or_jit(store: Any) -> None:
    _, engine = store
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL setting")
    # Kept through the transactions a pooled connection goes through, rollbacks included.
    for _ in range(3):
        with engine.connect() as conn:
            assert conn.execute(text("SHOW max_parallel_workers_per_gather")).scalar() == "0"
            assert conn.execute(text("SHOW jit")).scalar() == "off"
            conn.rollback()


def test_postgresql_compresses_new_article_texts_with_lz4(store: Any) -> None:
    from alembic import command

    from storage.schema import alembic_config, upgrade

    _, engine = store
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL setting")
    with engine.connect() as conn:
        offered = conn.execute(
            text(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                "WHERE name = 'default_toast_compression'"
            )
        ).scalar()
    if not offered:
        pytest.skip("this PostgreSQL server has no lz4")

    def compression(guid: str) -> str | None:
        # Long enough to pass the TOAST threshold, so that it is stored compressed; words
        # of its own, so that it is no near-duplicate of the others.
        words = " ".join(f"{guid}w{j}" for j in range(60))
        paragraphs = "".join(f"<p>{words} in part {i}.</p>" for i in range(8))
        [article_id] = ingest(store, "feed:z", (guid, "Long report", paragraphs)).stored
        with engine.connect() as conn:
            return conn.execute(
                text("SELECT pg_column_compression(text) FROM article WHERE id = :i"),
                {"i": article_id},
            ).scalar()

    assert compression("z1") == "lz4"
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
        connection.commit()
    assert compression("z2") == "pglz"
    upgrade(engine)
    assert compression("z3") == "lz4"


def test_alert_search_and_topic_filter(store: Any) -> None:
    _, engine = store
    add_rule(engine, name="costs", query="cost sharing", topics=[], channels=[])
    ingest(store, "feed:a", ("a1", "Cost-sharing talks resume in Honolulu", STORY))
    assert len(list_alerts(engine, AlertFilter(search="honolulu"))) == 1
    assert list_alerts(engine, AlertFilter(search="bakery")) == []
    assert len(list_alerts(engine, AlertFilter(topic="troop-cost-sharing"))) == 1
    assert list_alerts(engine, AlertFilter(topic="trilateral-drills")) == []
    assert list_alerts(engine, AlertFilter(since=utcnow() + timedelta(minutes=1))) == []


def test_claims_lease_feeds_and_park_poison_feeds(store: Any) -> None:
    _, engine = store
    feed = add_feed(engine, "https://feeds.example/a.xml", interval_seconds=60)
    now = utcnow()
    claimed, _ = claim_feeds(engine, now=now, lease_seconds=300)
    assert [c.id for c in claimed] == [feed["id"]]
    # A second scheduler (beat started twice) gets nothing while the lease holds.
    assert claim_feeds(engine, now=now, lease_seconds=300)[0] == []
    # The fetch was lost (worker killed): after the lease expires the feed is due again,
    # and after MAX_UNFINISHED_CLAIMS lost fetches it is parked.
    when = now
    for _ in range(MAX_UNFINISHED_CLAIMS - 1):
        when += timedelta(seconds=301)
        assert len(claim_feeds(engine, now=when, lease_seconds=300)[0]) == 1
    when += timedelta(seconds=301)
    claimed, parked = claim_feeds(engine, now=when, lease_seconds=300)
    assert claimed == [] and parked == [feed["id"]]
    [state] = list_feeds(engine)
    assert state["active"] is False and "parked" in state["last_error"]


def test_fetch_outcomes_back_off_and_recover(store: Any) -> None:
    _, engine = store
    feed = add_feed(engine, "https://feeds.example/b.xml", interval_seconds=60)
    now = utcnow()
    for n in (1, 2, 3):
        with session_scope(engine) as s:
            record_fetch(
                s, feed["id"], FetchOutcome(status=500, error="HTTP 500"), max_backoff=3600, now=now
            )
        state = list_feeds(engine)[0]
        assert state["error_count"] == n and state["last_error"] == "HTTP 500"
        delay = (state["next_poll_at"] - now).total_seconds()
        assert 60 * 2 ** (n - 1) * 0.79 <= delay <= 60 * 2 ** (n - 1) * 1.21
    with session_scope(engine) as s:
        record_fetch(
            s, feed["id"], FetchOutcome(status=200, etag='"v2"'), max_backoff=3600, now=now
        )
    state = list_feeds(engine)[0]
    assert state["error_count"] == 0 and state["last_error"] is None and state["active"] is True
    with session_scope(engine) as s:
        record_fetch(
            s,
            feed["id"],
            FetchOutcome(status=410, error="gone", gone=True),
            max_backoff=3600,
            now=now,
        )
    assert list_feeds(engine)[0]["active"] is False


def test_articles_table_counts(store: Any) -> None:
    _, engine = store
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Article)) == 5
        assert s.scalar(select(func.count()).select_from(Alert)) == 0


def test_sqlite_connections_get_the_project_settings(tmp_path: Any) -> None:
    """Every SQLite connection: WAL, foreign keys, a busy timeout, a larger WAL checkpoint."""
    from storage.engine import (
        SQLITE_BUSY_TIMEOUT_MS,
        SQLITE_WAL_AUTOCHECKPOINT_PAGES,
        create_engine_for,
    )

    engine = create_engine_for(f"sqlite:///{tmp_path}/settings.db")
    try:
        with engine.connect() as conn:
            names = ("journal_mode", "foreign_keys", "busy_timeout", "wal_autocheckpoint")
            values = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names}
        assert values == {
            "journal_mode": "wal",
            "foreign_keys": 1,
            "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
            "wal_autocheckpoint": SQLITE_WAL_AUTOCHECKPOINT_PAGES,
        }
    finally:
        engine.dispose()
