"""The in-memory index of recent articles answers exactly what the band tables would."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.recentindex import RecentIndex

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
@given(
    ARTICLES,
    st.lists(st.lists(KEYS, max_size=8), min_size=1, max_size=4),
    st.none() | st.integers(0, 45),
)
def test_candidates_count_the_shared_bands_like_the_tables(
    articles: list[tuple[list[int], bool]], queries: list[list[int]], after: int | None
) -> None:
    index = RecentIndex(10)
    stored: dict[int, list[int]] = {}
    for article_id, (keys, flush) in enumerate(articles, start=11):
        index.add(article_id, keys, b"sig%d" % article_id)
        if keys and (after is None or article_id > after):
            stored[article_id] = keys
        if flush:
            index.flush()
    # Several look-ups at once answer as each would alone.
    key_sets = [sorted(set(query)) for query in queries]
    batch = index.candidates_of_many(key_sets, limit=100, after=after)
    assert len(batch) == len(queries)
    for query, found in zip(key_sets, batch, strict=True):
        expected = _shared(stored, query)
        assert {aid: n for n, aid, _ in found} == dict(expected)
        assert [n for n, _, _ in found] == sorted(expected.values(), reverse=True)
        assert all(signature == b"sig%d" % aid for _, aid, signature in found)
        assert index.candidates(query, limit=100, after=after) == found
        assert len(index.candidates(query, limit=1, after=after)) == min(1, len(expected))


def test_it_answers_only_for_what_follows_its_start() -> None:
    index = RecentIndex(100)
    index.add(101, [1, 2], b"a")
    assert index.covers(100) and index.covers(150)
    assert not index.covers(99)  # articles 100 and before are in lsh_band


def test_it_knows_its_newest_article_with_bands() -> None:
    index = RecentIndex(0)
    assert index.last is None
    index.add(1, [5], b"a")
    index.add(2, [], b"")  # no bands: not a candidate, but the newest id moves
    assert index.last == (1, b"a") and index.newest == 2 and index.count == 2


def test_invalidated_it_answers_nothing_until_reset() -> None:
    index = RecentIndex(0)
    index.add(1, [5], b"a")
    index.invalidate()
    assert not index.valid and not index.covers(0)
    assert index.candidates([5], limit=10) == []
    index.add(2, [5], b"b")  # ignored while invalid
    assert index.candidates([5], limit=10) == [] and index.count == 0
    index.reset(7)
    assert index.valid and index.start == index.newest == 7 and index.last is None
    index.add(8, [5], b"c")
    assert index.candidates([5], limit=10) == [(1, 8, b"c")]
