"""Full-text search over articles and alerts, and the SQLite index kept off the ingest path."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from storage.alerts import AlertFilter, list_alerts
from storage.article_queries import list_articles
from storage.engine import get_engine, session_scope
from storage.rules import add_rule
from storage.schema import upgrade
from storage.search import fts_terms, index_for_search
from tests.test_storage import STORY, ingest


def _fts_consistent(engine: Any) -> None:
    """FTS5's own check that the index matches its content table (raises if not)."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO article_fts(article_fts) VALUES ('integrity-check')"))


def test_fts_terms_are_lowercased_words() -> None:
    assert fts_terms("Cost-Sharing, HONOLULU!") == ["cost", "sharing", "honolulu"]
    assert fts_terms("  ,; ") == []


def test_new_articles_are_searchable_without_an_explicit_refresh(store: Any) -> None:
    _, engine = store
    ingest(store, "feed:a", ("a1", "Talks resume", STORY))
    found = list_articles(engine, search="honolulu negotiations")
    assert [a["guid"] for a in found] == ["a1"]
    assert list_articles(engine, search="honolulu bakery") == []
    ingest(store, "feed:a", ("a2", "Bakery opens", "<p>A bakery opened in Honolulu today.</p>"))
    assert {a["guid"] for a in list_articles(engine, search="honolulu")} == {"a1", "a2"}


def test_alerts_are_searched_through_their_article_text(store: Any) -> None:
    _, engine = store
    add_rule(engine, name="talks", query="negotiations", topics=[], channels=[])
    ingest(store, "feed:a", ("a1", "Talks resume", STORY))
    # "peninsula" is in the article's text, not in the alert's title.
    assert len(list_alerts(engine, AlertFilter(search="peninsula"))) == 1
    assert list_alerts(engine, AlertFilter(search="peninsula bakery")) == []


def test_index_for_search_indexes_each_article_once(store: Any) -> None:
    _, engine = store
    index_for_search(engine)
    assert index_for_search(engine) == 0
    result = ingest(
        store,
        "feed:a",
        ("a1", "Talks resume", STORY),
        ("a2", "Bakery opens", "<p>A bakery opened in Honolulu today.</p>"),
    )
    assert index_for_search(engine) == len(result.stored) + len(result.duplicates)
    assert index_for_search(engine) == 0
    if engine.dialect.name == "sqlite":
        _fts_consistent(engine)


def test_deleting_indexed_and_unindexed_articles_keeps_the_index_consistent(
    store: Any,
) -> None:
    _, engine = store
    first = ingest(store, "feed:a", ("a1", "Talks resume", STORY))
    index_for_search(engine)
    late = ingest(store, "feed:a", ("a2", "Bakery", "<p>A bakery opened in Honolulu.</p>"))
    with session_scope(engine) as session:
        for article_id in first.stored + late.stored:
            for bands in ("lsh_band", "lsh_band_log"):
                session.execute(
                    text(f"DELETE FROM {bands} WHERE article_id = :i"), {"i": article_id}
                )
            session.execute(
                text("DELETE FROM article_topic WHERE article_id = :i"), {"i": article_id}
            )
            session.execute(
                text("DELETE FROM article_signature WHERE article_id = :i"), {"i": article_id}
            )
            session.execute(text("DELETE FROM alert WHERE article_id = :i"), {"i": article_id})
            session.execute(text("DELETE FROM article WHERE id = :i"), {"i": article_id})
    if engine.dialect.name == "sqlite":
        _fts_consistent(engine)
    assert list_articles(engine, search="honolulu") == []


def test_upgrade_keeps_articles_indexed_before_0003(db_url: str) -> None:
    engine = get_engine(db_url)
    upgrade(engine, "0002")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO article (id, origin, guid, title, text, text_hash, created_at, "
                "story_id) VALUES (1, 'local', 'old', 'Old story', 'talks in honolulu', 'h', "
                "'2026-01-01 00:00:00.000000', 1)"
            )
        )
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO article (id, origin, guid, title, text, text_hash, created_at, "
                "story_id) VALUES (2, 'local', 'new', 'New story', 'honolulu bakery', 'g', "
                "'2026-01-02 00:00:00.000000', 2)"
            )
        )
    assert {a["guid"] for a in list_articles(engine, search="honolulu")} == {"old", "new"}
    _down_to_0002_and_up(engine)
    assert {a["guid"] for a in list_articles(engine, search="honolulu")} == {"old", "new"}
    if engine.dialect.name == "sqlite":
        _fts_consistent(engine)


def _down_to_0002_and_up(engine: Any) -> None:
    from alembic import command

    from storage.schema import alembic_config

    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
        connection.commit()
    upgrade(engine)
