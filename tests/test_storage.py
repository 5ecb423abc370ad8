"""Storage on real SQLite and real PostgreSQL: schema, seeds, dedup links, alerts, leases."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from storage.alerts import AlertFilter, list_alerts
from storage.article_queries import duplicate_clusters, get_article, list_articles
from storage.articles import ingest as ingest_prepared
from storage.dedup import probe_candidates, start_run_index
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
from storage.statements import _processed
from tasks.models import RawEntry
from tasks.pipeline import prepare, process_entries
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


def _band_rows(engine: Any) -> tuple[int, int, int]:
    """(rows in lsh_band, rows in lsh_band_recent, newest merged article id)."""
    with engine.connect() as conn:
        return (
            conn.execute(text("SELECT count(*) FROM lsh_band")).scalar_one(),
            conn.execute(text("SELECT count(*) FROM lsh_band_recent")).scalar_one(),
            conn.execute(text("SELECT merged_through FROM lsh_band_state")).scalar_one(),
        )


def test_near_copies_are_found_before_and_after_their_bands_are_merged(
    store: Any, monkeypatch: Any
) -> None:
    import storage.dedup

    _, engine = store
    before = _band_rows(engine)
    first = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY))
    [original] = first.stored
    waiting = _band_rows(engine)
    assert waiting[0] == before[0] and waiting[1] > before[1]  # new bands wait apart
    copy = ingest(store, "feed:b", ("b7", "Allies resume cost talks", COPY))
    assert get_article(engine, copy.duplicates[0])["duplicate_of"] == original

    # Past the limit, ingest moves every waiting band into lsh_band, none lost.
    pending = _band_rows(engine)
    monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 0)
    third = ingest(store, "feed:c", ("c3", "Cost talks", COPY.replace("morning", "afternoon")))
    [third_id] = third.duplicates
    assert get_article(engine, third_id)["duplicate_of"] == original
    main, recent, merged = _band_rows(engine)
    with engine.connect() as conn:
        own = conn.execute(
            text("SELECT count(*) FROM lsh_band WHERE article_id = :i"), {"i": third_id}
        ).scalar_one()
    assert own > 0 and recent == 0 and merged == third_id
    assert main == pending[0] + pending[1] + own

    # Below the limit again: the next copy's bands wait, and it finds the merged ones.
    monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 10_000)
    fourth = ingest(store, "feed:d", ("d4", "Cost talks", COPY.replace("morning", "evening")))
    assert get_article(engine, fourth.duplicates[0])["duplicate_of"] == original
    after = _band_rows(engine)
    assert after[0] == main and after[1] > 0 and after[2] == merged


def _prepared(store: Any, guid: str, content: str) -> Any:
    settings, engine = store
    matchers = get_runtime(settings).matchers.get(engine)
    entry = RawEntry(guid=guid, url=f"https://x.example/{guid}", title="Talks", content=content)
    return prepare([entry], matchers)


def _store_prepared(store: Any, origin: str, items: Any) -> Any:
    settings, engine = store
    threshold = settings.near_duplicate_threshold
    return ingest_prepared(engine, origin=origin, feed_id=None, items=items, threshold=threshold)


def test_a_probe_carries_the_stored_candidates_into_ingest(store: Any) -> None:
    _, engine = store
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    copy = probe_candidates(engine, _prepared(store, "b1", COPY))
    [probe] = [item.probe for item in copy]
    assert probe is not None and original in [article_id for _, article_id, _ in probe.rows]
    assert probe.through >= original
    # Ingest trusts the probe for the articles up to `through`: with the original's
    # bands gone from both tables, only the probe can still name it.
    with session_scope(engine) as session:
        for table in ("lsh_band", "lsh_band_recent"):
            session.execute(text(f"DELETE FROM {table} WHERE article_id = :i"), {"i": original})
    [duplicate] = _store_prepared(store, "feed:b", copy).duplicates
    assert get_article(engine, duplicate)["duplicate_of"] == original


def test_ingest_finds_what_was_stored_after_the_probe(store: Any, monkeypatch: Any) -> None:
    import storage.dedup

    _, engine = store
    copy = probe_candidates(engine, _prepared(store, "b1", COPY))
    later = probe_candidates(engine, _prepared(store, "c1", COPY.replace("morning", "noon")))
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    assert copy[0].probe is not None and copy[0].probe.through < original
    [duplicate] = _store_prepared(store, "feed:b", copy).duplicates
    assert get_article(engine, duplicate)["duplicate_of"] == original
    # Even once the original's bands were merged into lsh_band after the probe.
    monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 0)
    ingest(store, "feed:z", ("z1", "Other", "<p>An unrelated short notice about the weather.</p>"))
    assert _band_rows(engine)[1] == 0
    [third] = _store_prepared(store, "feed:c", later).duplicates
    assert get_article(engine, third)["duplicate_of"] == original


def test_a_probed_original_that_is_gone_is_not_linked(store: Any) -> None:
    _, engine = store
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    copy = probe_candidates(engine, _prepared(store, "b1", COPY))
    with session_scope(engine) as session:
        for table in ("lsh_band", "lsh_band_recent"):
            session.execute(text(f"DELETE FROM {table} WHERE article_id = :i"), {"i": original})
        session.execute(text("DELETE FROM article WHERE id = :i"), {"i": original})
    result = _store_prepared(store, "feed:b", copy)
    assert result.duplicates == [] and len(result.stored) == 1


def test_a_failed_probe_leaves_the_look_up_to_ingest(store: Any, tmp_path: Any) -> None:
    from storage.engine import create_engine_for

    items = _prepared(store, "b1", COPY)
    empty = create_engine_for(f"sqlite:///{tmp_path / 'no-schema.db'}")
    assert probe_candidates(empty, items) == items


WEATHER = "<p>An unrelated short notice about the weather on the coast this weekend.</p>"


def _forget_bands(engine: Any, article_id: int) -> None:
    """Remove an article's bands from both tables: only an in-memory index still has them."""
    with session_scope(engine) as session:
        for table in ("lsh_band", "lsh_band_recent"):
            session.execute(text(f"DELETE FROM {table} WHERE article_id = :i"), {"i": article_id})


def _store_in_run(store: Any, origin: str, items: Any, index: Any) -> Any:
    settings, engine = store
    probed = probe_candidates(engine, items, through=index.start)
    threshold = settings.near_duplicate_threshold
    return ingest_prepared(
        engine, origin=origin, feed_id=None, items=probed, threshold=threshold, index=index
    )


def test_a_run_index_finds_what_the_run_stored_without_the_band_tables(store: Any) -> None:
    _, engine = store
    index = start_run_index(engine)
    [original] = _store_in_run(store, "feed:a", _prepared(store, "a1", STORY), index).stored
    _forget_bands(engine, original)
    [duplicate] = _store_in_run(store, "feed:b", _prepared(store, "b1", COPY), index).duplicates
    assert get_article(engine, duplicate)["duplicate_of"] == original
    assert index.valid and index.newest == duplicate


def test_a_run_index_of_a_small_store_holds_its_articles(store: Any) -> None:
    _, engine = store
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    index = start_run_index(engine)  # the seeds and the original: few, to be loaded
    assert index.start == 0 and not index.loaded
    _store_in_run(store, "feed:z", _prepared(store, "z1", WEATHER), index)  # loads them
    assert index.loaded and index.valid
    _forget_bands(engine, original)
    [duplicate] = _store_in_run(store, "feed:b", _prepared(store, "b1", COPY), index).duplicates
    assert get_article(engine, duplicate)["duplicate_of"] == original


def test_a_run_index_of_a_large_store_leaves_its_articles_to_the_probes(
    store: Any, monkeypatch: Any
) -> None:
    import storage.dedup

    _, engine = store
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    monkeypatch.setattr(storage.dedup, "PRELOAD_ARTICLES", 0)
    index = start_run_index(engine)
    assert index.start == original
    [duplicate] = _store_in_run(store, "feed:b", _prepared(store, "b1", COPY), index).duplicates
    assert get_article(engine, duplicate)["duplicate_of"] == original


def test_another_writer_during_a_run_is_still_seen(store: Any) -> None:
    _, engine = store
    index = start_run_index(engine)
    _store_in_run(store, "feed:z", _prepared(store, "z1", WEATHER), index)
    assert index.valid
    # Stored by someone else (another worker) during the run: not in the index.
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    [duplicate] = _store_in_run(store, "feed:b", _prepared(store, "b1", COPY), index).duplicates
    assert get_article(engine, duplicate)["duplicate_of"] == original
    assert not index.valid  # the look-ups of the rest of the run go to the database


def test_a_failed_commit_switches_the_run_index_off(store: Any, monkeypatch: Any) -> None:
    import tasks.polling
    from storage.feeds import FeedTarget, FetchOutcome

    settings, engine = store
    runtime = get_runtime(settings)
    feed = add_feed(engine, "https://x.example/feed.xml", interval_seconds=600)
    index = start_run_index(engine)
    download = tasks.polling.Download(
        FeedTarget(feed["id"], feed["url"], None, None),
        FetchOutcome(status=200, entries=1),
    )

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(tasks.polling, "record_fetches", broken)
    before = _article_count(engine)
    with pytest.raises(RuntimeError, match="disk full"):
        tasks.polling.store_downloads(
            engine,
            runtime.matchers.get(engine),
            [download],
            threshold=settings.near_duplicate_threshold,
            max_backoff=3600,
            prepared=[_prepared(store, "a1", STORY)],
            index=index,
        )
    assert _article_count(engine) == before  # rolled back
    assert not index.valid  # and the index no longer claims the rolled-back article


def _article_count(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM article")).scalar_one())


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


def test_postgresql_ranks_a_batch_of_look_ups_in_one_statement(
    store: Any, monkeypatch: Any
) -> None:
    import storage.dedup

    _, engine = store
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one look-up query per article, in process")
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    [weather] = ingest(store, "feed:z", ("z1", "Weather", WEATHER)).stored

    def one_query_per_article(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a look-up queried on its own")

    monkeypatch.setattr(storage.dedup, "candidates", one_query_per_article)
    result = ingest(
        store,
        "feed:b",
        ("b1", "Allies resume cost talks", COPY),
        ("b2", "Weather", WEATHER.replace("weekend", "week")),
        ("b3", "Rates", f"<p>{OTHER}</p>"),
    )
    links = {
        get_article(engine, a)["guid"]: get_article(engine, a)["duplicate_of"]
        for a in result.stored + result.duplicates
    }
    assert links == {"b1": original, "b2": weather, "b3": None}
    # A probe ranks its batch at once too, and so does ingest for what was stored since.
    later = COPY.replace("morning", "noon")
    probed = probe_candidates(engine, _prepared(store, "c1", later))
    [probe] = [item.probe for item in probed]
    assert probe is not None and original in [article_id for _, article_id, _ in probe.rows]
    [copy] = _store_prepared(store, "feed:c", probed).duplicates
    assert get_article(engine, copy)["duplicate_of"] == original


def test_batched_candidates_rank_like_one_query_each(store: Any, monkeypatch: Any) -> None:
    import storage.dedup
    from storage.dedup import candidates, candidates_of_many
    from storage.statements import Statements

    _, engine = store
    ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY))
    ingest(store, "feed:z", ("z1", "Weather", WEATHER), ("z2", "Rates", f"<p>{OTHER}</p>"))
    key_sets = [
        sorted(set(item.fingerprint.band_keys))
        for content in (COPY, WEATHER, f"<p>{LONG_STORY}</p>", STORY)
        for item in _prepared(store, "q", content)
    ]
    key_sets.append([1, 2, 3])  # keys no article has
    with session_scope(engine) as session:
        sql = Statements.of(session)
        one_each = [candidates(sql, keys) for keys in key_sets]
        batched = candidates_of_many(sql, key_sets)
        monkeypatch.setattr(storage.dedup, "MANY_CANDIDATES_CHUNK", 2)
        chunked = candidates_of_many(sql, key_sets)
    assert [sorted(rows) for rows in batched] == [sorted(rows) for rows in one_each]
    assert [sorted(rows) for rows in chunked] == [sorted(rows) for rows in one_each]
    assert all(rows for rows in one_each[:2]) and one_each[-1] == []
    # Best-ranked first, as the single query returns them.
    assert all(
        [r[0] for r in rows] == sorted((r[0] for r in rows), reverse=True) for rows in batched
    )


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


_CELLS = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=5),
    st.lists(st.text(max_size=3), max_size=3),
)


@given(st.lists(st.tuples(_CELLS, _CELLS, _CELLS), min_size=1, max_size=20))
def test_batch_values_go_through_their_column_processors(rows: list[tuple[Any, ...]]) -> None:
    """The memoized, column-wise processing equals a processor call per non-null cell."""
    processors = (None, json.dumps, lambda v: f"<{v}>")
    expected = [
        tuple(v if p is None or v is None else p(v) for p, v in zip(processors, row, strict=True))
        for row in rows
    ]
    assert _processed(rows, processors) == expected
