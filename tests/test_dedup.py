"""Near-duplicate look-ups on real SQLite and real PostgreSQL: the band log and lsh_band,
probes made before the ingest lock, the in-memory index of the articles not merged yet,
and batched candidate queries."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from storage.article_queries import get_article
from storage.articles import ingest as ingest_prepared
from storage.dedup import (
    RECENT_BAND_ARTICLES,
    RECENT_BAND_GROWTH,
    log_capacity,
    probe_candidates,
    start_recent_index,
    sync_recent_index,
)
from storage.engine import session_scope
from storage.feeds import add_feed
from storage.recentindex import RecentIndex
from storage.statements import Statements
from tasks.models import RawEntry
from tasks.pipeline import prepare
from tests.test_fingerprint import OTHER
from tests.test_fingerprint import STORY as LONG_STORY
from tests.test_storage import COPY, STORY, ingest
from worker.runtime import get_runtime


def _band_rows(engine: Any) -> tuple[int, int, int]:
    """(rows in lsh_band, keys waiting in lsh_band_log, newest merged article id)."""
    with engine.connect() as conn:
        return (
            conn.execute(text("SELECT count(*) FROM lsh_band")).scalar_one(),
            conn.execute(
                text("SELECT coalesce(sum(length(keys)), 0) / 8 FROM lsh_band_log")
            ).scalar_one(),
            conn.execute(text("SELECT merged_through FROM lsh_band_state")).scalar_one(),
        )


def _new_process() -> None:
    """Forget this process's in-memory indexes, as a process starting now has none."""
    import storage.dedup

    storage.dedup._indexes.clear()


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


def test_the_log_holds_a_share_of_lsh_band_within_bounds() -> None:
    assert log_capacity(0) == RECENT_BAND_ARTICLES
    assert log_capacity(100_000) == RECENT_BAND_ARTICLES  # a 25th is less
    assert log_capacity(500_000) == 20_000
    assert log_capacity(1_000_000) == log_capacity(50_000_000) == 40_000


@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_the_log_capacity_grows_with_lsh_band_and_stays_bounded(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert log_capacity(low) <= log_capacity(high)
    assert RECENT_BAND_ARTICLES <= log_capacity(high) <= RECENT_BAND_GROWTH * RECENT_BAND_ARTICLES


def test_ingest_moves_the_log_once_it_holds_more_than_its_capacity(
    store: Any, monkeypatch: Any, caplog: Any
) -> None:
    import storage.dedup

    _, engine = store

    def notice(n: int) -> tuple[str, str, str]:
        words = " ".join(f"w{n}x{j}" for j in range(40))
        return (f"n{n}", f"Notice {n}", f"<p>{words}.</p>")

    monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 0)  # move at once
    [first] = ingest(store, "feed:a", notice(0)).stored
    assert _band_rows(engine)[1:] == (0, first)
    # Now the log holds min(3, max(1, articles in lsh_band)) = 3 articles before a move.
    monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 1)
    monkeypatch.setattr(storage.dedup, "RECENT_BAND_SHARE", 1.0)
    monkeypatch.setattr(storage.dedup, "RECENT_BAND_GROWTH", 3)
    assert storage.dedup.log_capacity(first) == 3
    for n in (1, 2, 3):
        ingest(store, "feed:a", notice(n))
        assert _band_rows(engine)[2] == first  # waiting
    before = _band_rows(engine)
    caplog.clear()
    with caplog.at_level("INFO", logger="storage.dedup"):
        [fourth] = ingest(store, "feed:a", notice(4)).stored
    rows, waiting, merged = _band_rows(engine)
    assert waiting == 0 and merged == fourth and rows > before[0] + before[1]
    # The move, which holds the ingest lock, is logged with what it moved.
    [moved] = [r.getMessage() for r in caplog.records if "into lsh_band" in r.getMessage()]
    assert f"of 4 articles into lsh_band (through article {fourth}) in " in moved


def _prepared(store: Any, guid: str, content: str) -> Any:
    settings, engine = store
    matchers = get_runtime(settings).matchers.get(engine)
    entry = RawEntry(guid=guid, url=f"https://x.example/{guid}", title="Talks", content=content)
    return prepare([entry], matchers)


def _store_prepared(store: Any, origin: str, items: Any) -> Any:
    settings, engine = store
    threshold = settings.near_duplicate_threshold
    return ingest_prepared(engine, origin=origin, feed_id=None, items=items, threshold=threshold)


def test_a_probe_carries_the_stored_candidates_into_ingest(store: Any, monkeypatch: Any) -> None:
    import storage.dedup

    _, engine = store
    monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 0)  # into lsh_band at once
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    copy = probe_candidates(engine, _prepared(store, "b1", COPY))
    [probe] = [item.probe for item in copy]
    assert probe is not None and original in [article_id for _, article_id, _ in probe.rows]
    assert probe.through >= original
    # Ingest trusts the probe for the articles up to `through`: with the original's
    # bands gone from lsh_band, only the probe can still name it.
    _forget_bands(engine, original)
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
    # Even once the original's bands were merged into lsh_band after the probe, and by
    # a process whose index never held them: the new index starts after the merge, and
    # the articles between the probe and that start are queried in lsh_band.
    monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 0)
    ingest(store, "feed:z", ("z1", "Other", "<p>An unrelated short notice about the weather.</p>"))
    assert _band_rows(engine)[1] == 0
    _new_process()
    [third] = _store_prepared(store, "feed:c", later).duplicates
    assert get_article(engine, third)["duplicate_of"] == original


def test_a_probed_original_that_is_gone_is_not_linked(store: Any) -> None:
    _, engine = store
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    copy = probe_candidates(engine, _prepared(store, "b1", COPY))
    _forget_bands(engine, original)
    with session_scope(engine) as session:
        session.execute(
            text("DELETE FROM article_signature WHERE article_id = :i"), {"i": original}
        )
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
        for table in ("lsh_band", "lsh_band_log"):
            session.execute(text(f"DELETE FROM {table} WHERE article_id = :i"), {"i": article_id})


def _store_in_run(store: Any, origin: str, items: Any, index: Any) -> Any:
    settings, engine = store
    probed = probe_candidates(engine, items, through=index.start)
    threshold = settings.near_duplicate_threshold
    return ingest_prepared(
        engine, origin=origin, feed_id=None, items=probed, threshold=threshold, index=index
    )


def _private_index(engine: Any) -> RecentIndex:
    """A synced index of the store apart from this process's own, as another process's."""
    index = RecentIndex(valid=False)
    with engine.connect() as conn:
        sync_recent_index(Statements(conn.dialect, conn.connection), index)
    return index


def test_the_index_finds_what_the_run_stored_without_the_band_tables(store: Any) -> None:
    _, engine = store
    index = start_recent_index(engine)
    [original] = _store_in_run(store, "feed:a", _prepared(store, "a1", STORY), index).stored
    _forget_bands(engine, original)
    [duplicate] = _store_in_run(store, "feed:b", _prepared(store, "b1", COPY), index).duplicates
    assert get_article(engine, duplicate)["duplicate_of"] == original
    assert index.valid and index.newest == duplicate


def test_a_new_index_loads_the_articles_not_merged_yet(store: Any) -> None:
    _, engine = store
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    index = start_recent_index(engine)
    assert index.start == 0 and index.valid and index.newest == 0  # loaded when used
    with engine.connect() as conn:
        sync_recent_index(Statements(conn.dialect, conn.connection), index)
    assert index.newest == original and index.last is not None
    _forget_bands(engine, original)  # from the log too: only the loaded index has them
    [duplicate] = _store_in_run(store, "feed:b", _prepared(store, "b1", COPY), index).duplicates
    assert get_article(engine, duplicate)["duplicate_of"] == original


def test_the_merged_articles_are_left_to_the_probes(store: Any, monkeypatch: Any) -> None:
    import storage.dedup

    _, engine = store
    monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 0)
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    _new_process()
    index = start_recent_index(engine)
    assert index.start == original and index.last is None
    [duplicate] = _store_in_run(store, "feed:b", _prepared(store, "b1", COPY), index).duplicates
    assert get_article(engine, duplicate)["duplicate_of"] == original


def test_another_writer_during_a_run_is_caught_up_from_the_log(store: Any) -> None:
    _, engine = store
    index = _private_index(engine)
    _store_in_run(store, "feed:z", _prepared(store, "z1", WEATHER), index)
    # Stored by another process during the run: not in this index until it syncs.
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    assert index.newest < original
    [duplicate] = _store_in_run(store, "feed:b", _prepared(store, "b1", COPY), index).duplicates
    assert get_article(engine, duplicate)["duplicate_of"] == original
    assert index.valid and index.start == 0 and index.newest == duplicate


def test_a_merge_by_another_writer_reloads_the_index(store: Any, monkeypatch: Any) -> None:
    import storage.dedup

    _, engine = store
    index = _private_index(engine)
    _store_in_run(store, "feed:z", _prepared(store, "z1", WEATHER), index)
    monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 0)
    # Another process stores and merges: the log rows this index never read are gone.
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    assert _band_rows(engine)[1:] == (0, original)
    monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 10_000)
    [duplicate] = _store_prepared_with(store, "feed:b", _prepared(store, "b1", COPY), index)
    assert get_article(engine, duplicate)["duplicate_of"] == original
    assert index.start == original  # reloaded after the merge: lsh_band has the rest


def _store_prepared_with(store: Any, origin: str, items: Any, index: RecentIndex) -> list[int]:
    settings, engine = store
    threshold = settings.near_duplicate_threshold
    result = ingest_prepared(
        engine, origin=origin, feed_id=None, items=items, threshold=threshold, index=index
    )
    return list(result.duplicates)


def test_an_index_holding_articles_that_are_not_stored_is_reloaded(store: Any) -> None:
    _, engine = store
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    index = _private_index(engine)
    stored_copy = _prepared(store, "b1", COPY)[0].fingerprint
    # As if a rolled-back transaction had added the copy with the next id: it is not
    # stored, and another batch then takes that id.
    index.add(original + 1, stored_copy.band_keys, stored_copy.signature)
    [weather] = ingest(store, "feed:z", ("z1", "Weather", WEATHER)).stored
    assert weather == original + 1
    [later] = _store_prepared_with(store, "feed:c", _prepared(store, "c1", COPY), index)
    # Linked to the original, not to the phantom copy the index held under id `weather`.
    assert get_article(engine, later)["duplicate_of"] == original
    assert index.last is not None and index.last[0] != weather


def test_a_failed_commit_invalidates_the_index(store: Any, monkeypatch: Any) -> None:
    import tasks.polling
    from storage.feeds import FeedTarget, FetchOutcome

    settings, engine = store
    runtime = get_runtime(settings)
    feed = add_feed(engine, "https://x.example/feed.xml", interval_seconds=600)
    index = start_recent_index(engine)
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
    [original] = _store_in_run(store, "feed:b", _prepared(store, "b1", STORY), index).stored
    assert index.valid and index.newest == original  # reloaded by the next ingest


def test_a_move_empties_a_shared_index_but_not_a_runs(store: Any, monkeypatch: Any) -> None:
    import storage.dedup
    from storage.dedup import recent_index

    _, engine = store
    monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 0)  # every ingest moves
    # A worker's ingest moves the log into lsh_band: its shared index is emptied.
    [weather] = ingest(store, "feed:z", ("z1", "Weather", WEATHER)).stored
    shared = recent_index(engine)
    assert shared.valid and shared.start == weather and shared.last is None
    # A run's own index keeps what it moved itself: its probes stop at its start.
    run = start_recent_index(engine)
    [original] = _store_in_run(store, "feed:a", _prepared(store, "a1", STORY), run).stored
    assert _band_rows(engine)[1:] == (0, original)
    assert run.start == weather and run.last is not None and run.last[0] == original
    _forget_bands(engine, original)  # only the run's index has it now
    [copy] = _store_in_run(store, "feed:b", _prepared(store, "b1", COPY), run).duplicates
    assert get_article(engine, copy)["duplicate_of"] == original


def _article_count(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM article")).scalar_one())


def test_a_batch_ranks_its_look_ups_at_once(store: Any, monkeypatch: Any) -> None:
    import storage.dedup

    _, engine = store
    monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 0)  # into lsh_band at once
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    [weather] = ingest(store, "feed:z", ("z1", "Weather", WEATHER)).stored
    _new_process()  # an index starting after them: lsh_band has them
    ranked: list[int] = []  # key sets per call
    rank = storage.dedup.candidates_of_many

    def recorded(sql: Any, key_sets: Any, **kwargs: Any) -> Any:
        ranked.append(len(key_sets))
        return rank(sql, key_sets, **kwargs)

    monkeypatch.setattr(storage.dedup, "candidates_of_many", recorded)
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
    assert ranked == [3]
    # A probe ranks its batch at once too; ingest finds what was stored since in memory.
    ranked.clear()
    probed = probe_candidates(
        engine,
        _prepared(store, "c1", COPY.replace("morning", "noon"))
        + _prepared(store, "c2", COPY.replace("morning", "evening")),
    )
    assert ranked == [2]
    assert all(
        item.probe is not None and original in [aid for _, aid, _ in item.probe.rows]
        for item in probed
    )
    copies = _store_prepared(store, "feed:c", probed).duplicates
    assert ranked == [2]
    assert [get_article(engine, c)["duplicate_of"] for c in copies] == [original, original]


def test_batched_candidates_rank_like_one_query_each(store: Any, monkeypatch: Any) -> None:
    import storage.dedup
    from storage.dedup import candidates, candidates_of_many
    from storage.statements import Statements

    _, engine = store
    monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 0)  # into lsh_band at once
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
        statements: list[str] = []
        run = sql.rows

        def counted(query: str, params: Any = ()) -> Any:
            statements.append(query)
            return run(query, params)

        monkeypatch.setattr(sql, "rows", counted)
        batched = candidates_of_many(sql, key_sets)
        in_one = len(statements)
        monkeypatch.setattr(storage.dedup, "MANY_CANDIDATES_CHUNK", 2)
        chunked = candidates_of_many(sql, key_sets)
    # PostgreSQL: one statement per chunk of key sets; SQLite (in process): one each.
    postgresql = engine.dialect.name == "postgresql"
    assert in_one == (1 if postgresql else len(key_sets))
    assert len(statements) - in_one == (3 if postgresql else len(key_sets))
    assert [sorted(rows) for rows in batched] == [sorted(rows) for rows in one_each]
    assert [sorted(rows) for rows in chunked] == [sorted(rows) for rows in one_each]
    assert all(rows for rows in one_each[:2]) and one_each[-1] == []
    # Best-ranked first, as the single query returns them.
    assert all(
        [r[0] for r in rows] == sorted((r[0] for r in rows), reverse=True) for rows in batched
    )


@pytest.mark.parametrize("merged", [False, True])
def test_find_original_looks_in_the_log_and_in_lsh_band(
    store: Any, monkeypatch: Any, merged: bool
) -> None:
    import storage.dedup
    from storage.dedup import find_original, near_duplicate_candidates

    settings, engine = store
    if merged:
        monkeypatch.setattr(storage.dedup, "RECENT_BAND_ARTICLES", 0)
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    assert (_band_rows(engine)[1] == 0) is merged
    _new_process()
    fp = _prepared(store, "b1", COPY)[0].fingerprint
    with session_scope(engine) as session:
        found = find_original(session, fp, settings.near_duplicate_threshold)
        candidates = near_duplicate_candidates(session, fp.band_keys)
    assert found is not None and found[0] == original
    assert original in [article_id for article_id, _ in candidates]


def test_logged_keys_survive_a_downgrade_and_upgrade(store: Any) -> None:
    from alembic import command

    from storage.schema import alembic_config, upgrade

    _, engine = store
    [original] = ingest(store, "feed:a", ("a1", "Cost-sharing talks resume", STORY)).stored
    logged = _band_rows(engine)[1]
    assert logged > 0
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")  # the log's keys move into lsh_band
        connection.commit()
        moved = connection.execute(
            text("SELECT count(*) FROM lsh_band WHERE article_id = :i"), {"i": original}
        ).scalar_one()
    assert moved > 0
    upgrade(engine)
    assert _band_rows(engine)[1:] == (0, original)  # all of it in lsh_band, marked merged
    _new_process()
    [copy] = ingest(store, "feed:b", ("b7", "Allies resume cost talks", COPY)).duplicates
    assert get_article(engine, copy)["duplicate_of"] == original
