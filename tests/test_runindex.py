"""The in-memory index of a run's articles answers exactly what the band tables would."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.runindex import RunIndex

# A few keys, extremes of int64 included, so that articles share bands and buckets.
KEYS = st.sampled_from([-(2**63), -7, -1, 0, 1, 2, 3, 99, 2**40, 2**62, 2**63 - 1])
ARTICLES = st.lists(
    st.tuples(st.lists(KEYS, max_size=8), st.booleans()),  # (keys, flush after it)
    max_size=30,
)


def _shared(articles: dict[int, list[int]], keys: list[int]) -> Counter[int]:
    wanted = set(keys)
    return Counter(
        {aid: len(wanted & set(own)) for aid, own in articles.items() if wanted & set(own)}
    )


@settings(max_examples=200, deadline=None)
@given(ARTICLES, st.lists(st.lists(KEYS, max_size=8), min_size=1, max_size=4))
def test_candidates_count_the_shared_bands_like_the_tables(
    articles: list[tuple[list[int], bool]], queries: list[list[int]]
) -> None:
    index = RunIndex(10)
    stored: dict[int, list[int]] = {}
    for article_id, (keys, flush) in enumerate(articles, start=11):
        index.add(article_id, keys, b"sig%d" % article_id)
        if keys:
            stored[article_id] = keys
        if flush:
            index.flush()
    # Several look-ups at once answer as each would alone.
    batch = index.candidates_of_many([sorted(set(query)) for query in queries], limit=100)
    assert len(batch) == len(queries)
    for query, found in zip(queries, batch, strict=True):
        expected = _shared(stored, query)
        assert {aid: n for n, aid, _ in found} == dict(expected)
        assert [n for n, _, _ in found] == sorted(expected.values(), reverse=True)
        assert all(signature == b"sig%d" % aid for _, aid, signature in found)
        assert index.candidates(sorted(set(query)), limit=100) == found
        assert len(index.candidates(sorted(set(query)), limit=1)) == min(1, len(expected))


@settings(max_examples=100, deadline=None)
@given(ARTICLES, st.lists(KEYS, max_size=8), st.integers(0, 30))
def test_loading_stored_articles_answers_like_adding_them(
    articles: list[tuple[list[int], bool]], query: list[int], loaded: int
) -> None:
    stored = {aid: keys for aid, (keys, _) in enumerate(articles, start=1) if keys}
    index = RunIndex(0, loaded=False)
    assert not index.covers(0)  # not before it is loaded
    first = {aid: keys for aid, keys in stored.items() if aid <= loaded}
    index.load(
        [(aid, b"sig%d" % aid) for aid in sorted(first)],
        [(aid, key) for aid, keys in first.items() for key in set(keys)],
        newest=min(loaded, len(articles)),
    )
    for aid in range(loaded + 1, len(articles) + 1):
        index.add(aid, stored.get(aid, []), b"sig%d" % aid)
    index.check(len(articles))
    assert index.valid and index.covers(0)
    found = index.candidates(sorted(set(query)), limit=100)
    assert {aid: n for n, aid, _ in found} == dict(_shared(stored, query))
    assert all(signature == b"sig%d" % aid for _, aid, signature in found)


def test_it_answers_only_for_what_follows_its_start() -> None:
    index = RunIndex(100)
    index.add(101, [1, 2], b"a")
    index.check(101)
    assert index.covers(100) and index.covers(150)
    assert not index.covers(99)  # articles 100 and before are the probes' part


def test_another_writer_switches_it_off() -> None:
    index = RunIndex(100)
    index.add(101, [1, 2], b"a")
    index.check(102)  # article 102 came from elsewhere
    assert not index.valid and not index.covers(100)
    assert index.candidates([1, 2], limit=10) == []
    index.add(103, [1], b"b")  # stays off
    assert index.candidates([1], limit=10) == []


def test_a_deletion_switches_it_off() -> None:
    index = RunIndex(0)
    index.add(1, [5], b"a")
    index.add(2, [5], b"b")
    index.check(1)  # article 2 is gone
    assert not index.valid


def test_past_its_size_it_switches_off_and_frees_its_memory() -> None:
    index = RunIndex(0, max_articles=3)
    for article_id in (1, 2, 3):
        index.add(article_id, [article_id], b"s")
    index.flush()
    assert index.valid and len(index.candidates([1, 2, 3], limit=10)) == 3
    index.add(4, [4], b"s")
    assert not index.valid and index.candidates([1], limit=10) == []


def test_articles_without_bands_still_advance_the_newest() -> None:
    index = RunIndex(0)
    index.add(1, [], b"")
    index.check(1)
    assert index.valid and index.newest == 1 and index.candidates([1], limit=5) == []
