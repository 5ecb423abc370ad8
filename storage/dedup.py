"""Near-duplicate look-ups: which stored article, if any, a new one copies.

The stored side of the MinHash LSH index (`tasks.fingerprint` computes the band keys):
ranked candidate queries over `lsh_band` (`candidates`, `candidates_of_many`), look-ups
made before the ingest lock (`probe_candidates`), the in-memory index of the articles
not merged into it yet (`recent_index`, `sync_recent_index`), the moves of their keys
from `lsh_band_log` into `lsh_band` (`merge_band_log`), and `DedupLookup`, which
`storage.articles.ingest` asks for each article of a batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage.models import LshBand
from storage.recentindex import RecentIndex
from storage.statements import Statements
from tasks.fingerprint import Fingerprint, best_match

if TYPE_CHECKING:
    from storage.articles import PreparedArticle

log = logging.getLogger(__name__)

# Never verify more than this many near-duplicate candidates for one article.
MAX_CANDIDATES = 200


@dataclass(frozen=True, slots=True)
class Probe:
    """Near-duplicate candidates looked up before the ingest lock (`probe_candidates`).

    `rows` are (shared bands, article id, signature) of the best-ranked stored articles
    sharing a band, among those up to article id `through` (the newest merged into
    `lsh_band` then). Ingest then looks only at the articles stored after `through`
    (`DedupLookup.find`), in memory (`RecentIndex`).
    """

    through: int
    rows: tuple[tuple[int, int, bytes], ...]


# Signatures are fetched by a scalar subquery, one primary-key probe per ranked
# candidate: as a join, PostgreSQL's generic plan hash-joined the whole signature table
# on every look-up. A band whose article is gone has no signature and is dropped. Only
# the winner's story is needed (`DedupLookup.find`): a story per candidate cost ~3 us
# each, a quarter of the query with the ~15 candidates of Ingest B's articles.
_CANDIDATES_SQL = (
    "SELECT r.article_id, r.shared, "
    "(SELECT s.signature FROM article_signature s WHERE s.article_id = r.article_id) FROM "
    "(SELECT article_id, count(*) AS shared FROM ({bands}) AS b "
    "GROUP BY article_id ORDER BY shared DESC LIMIT {limit}) AS r"
)

# `_CANDIDATES_SQL` for many key sets at once (PostgreSQL): the pairs (key set number,
# key) arrive as two arrays, and each key set is ranked in a LATERAL subquery.
_MANY_CANDIDATES_SQL = (
    "SELECT q.i, r.article_id, r.shared, "
    "(SELECT s.signature FROM article_signature s WHERE s.article_id = r.article_id) FROM "
    "(SELECT i, array_agg(key) AS keys FROM unnest(?::int[], ?::bigint[]) AS u(i, key) "
    "GROUP BY i) AS q CROSS JOIN LATERAL "
    "(SELECT article_id, count(*) AS shared FROM ({bands}) AS b "
    "GROUP BY article_id ORDER BY shared DESC LIMIT {limit}) AS r"
)


def _bands_sql(
    where: str, params: list[Any], after: int | None, upto: int | None
) -> tuple[str, list[Any]]:
    """The rows of lsh_band matching `where`, of the articles after `after` and up to
    `upto` if given."""
    if after is not None:
        where, params = f"{where} AND article_id > ?", [*params, after]
    if upto is not None:
        where, params = f"{where} AND article_id <= ?", [*params, upto]
    return f"SELECT article_id FROM lsh_band WHERE {where}", params


# Key sets ranked per statement by `candidates_of_many`, at most.
MANY_CANDIDATES_CHUNK = 200


def _array_literal(numbers: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers, e.g. ``{1,2,3}``."""
    return "{" + ",".join(map(str, numbers)) + "}"


def _shared_bands(row: tuple[int, int, bytes]) -> int:
    return row[0]


def candidates(
    sql: Statements,
    keys: Sequence[int],
    *,
    after: int | None = None,
    upto: int | None = None,
) -> list[tuple[int, int, bytes]]:
    """(shared bands, article_id, signature) of the top-ranked articles in lsh_band.

    With `after` (`upto`), among the articles with a greater (no greater) id only.
    This query of the large table is most of a look-up, and what a `Probe` saves the
    ingest lock. The articles not merged yet are in the `RecentIndex`.
    """
    bands, params = _bands_sql(*sql.among("key", keys), after, upto)
    query = _CANDIDATES_SQL.format(bands=bands, limit=MAX_CANDIDATES)
    rows = sql.rows(query, params)
    return [(int(r[1]), int(r[0]), bytes(r[2])) for r in rows if r[2] is not None]


def candidates_of_many(
    sql: Statements,
    key_sets: Sequence[Sequence[int]],
    *,
    after: int | None = None,
    upto: int | None = None,
) -> list[list[tuple[int, int, bytes]]]:
    """`candidates(keys, ...)` of each of `key_sets`: on PostgreSQL one statement per
    MANY_CANDIDATES_CHUNK of them.

    There a look-up's round trip and client-side work were most of its cost (~0.6 ms
    a query, of which the server's part was ~0.2), so a batch ranks the candidates
    of all its articles at once, each key set in its own LATERAL subquery. SQLite
    runs in-process: one query per key set costs no round trip.
    """
    if sql.qmark:
        return [candidates(sql, k, after=after, upto=upto) for k in key_sets]
    if len(key_sets) > MANY_CANDIDATES_CHUNK:
        return [
            rows
            for start in range(0, len(key_sets), MANY_CANDIDATES_CHUNK)
            for rows in candidates_of_many(
                sql,
                key_sets[start : start + MANY_CANDIDATES_CHUNK],
                after=after,
                upto=upto,
            )
        ]
    found: list[list[tuple[int, int, bytes]]] = [[] for _ in key_sets]
    if not key_sets:
        return found
    # The arrays go as text literals: psycopg's adaptation of Python lists chose a
    # type per element, ~6 ms for a 50-article batch's 4,000 numbers.
    numbers = _array_literal(i for i, keys in enumerate(key_sets) for _ in keys)
    keys = _array_literal(key for keys in key_sets for key in keys)
    bands, params = _bands_sql("key = ANY(q.keys)", [], after, upto)
    query = _MANY_CANDIDATES_SQL.format(bands=bands, limit=MAX_CANDIDATES)
    for i, article_id, shared, signature in sql.rows(query, [numbers, keys, *params]):
        if signature is not None:
            found[i].append((int(shared), int(article_id), bytes(signature)))
    for rows in found:
        rows.sort(key=_shared_bands, reverse=True)
    return found


# Articles whose keys wait in lsh_band_log (and in memory, `RecentIndex`) before ingest
# moves them into lsh_band, at least (`log_capacity`). Each move rewrites most pages of
# lsh_band, while waiting rows cost a commit nothing more: in a 1,000 x 50 poll, storing
# took 11.8 s with moves every 2,500 articles into a key-ordered recent table, 10.0 s
# with the log moved every 10,000, 9.1 s every 25,000 (one move, of 1M rows, at ~1.5 s
# under the lock). Each process holds the waiting articles in memory, ~1.3-1.6 KB each.
RECENT_BAND_ARTICLES = 10_000
# The log grows to this share of lsh_band's articles before a move, up to
# RECENT_BAND_GROWTH times RECENT_BAND_ARTICLES (see `log_capacity`).
RECENT_BAND_SHARE = 1 / 25
RECENT_BAND_GROWTH = 4
# Band rows inserted per statement when they are moved.
MERGE_CHUNK_ROWS = 20_000


def pack_band_keys(keys: Iterable[int]) -> bytes:
    """An article's distinct band keys as stored in lsh_band_log (int64, ascending)."""
    return np.array(sorted(set(keys)), dtype="<i8").tobytes()


def unpack_band_keys(packed: bytes) -> list[int]:
    """The keys `pack_band_keys` packed."""
    return np.frombuffer(packed, dtype="<i8").tolist()


class DedupLookup:
    """Finds the story a fingerprint duplicates, in the store and in the current batch.

    The stored articles are in lsh_band up to the `index`'s start, and in the `index`
    after it (synced under the ingest lock, `sync_recent_index`). The batch's own
    articles are written once, after the loop, so a copy later in the same batch is
    found here in memory instead of in the tables.
    """

    def __init__(self, sql: Statements, threshold: float, index: RecentIndex) -> None:
        self._sql = sql
        self._threshold = threshold
        self._index = index
        self._stored_hashes: dict[str, int] = {}
        self._batch_hashes: dict[str, int] = {}
        # Band key -> the first batch article with it; later ones (rare) in _more_bands.
        self._band_owner: dict[int, int] = {}
        self._more_bands: dict[int, list[int]] = {}
        self._batch: dict[int, tuple[bytes, int, str]] = {}  # id -> (signature, story, text)
        # (probe's through or None, sorted distinct band keys) -> the stored candidates,
        # ranked ahead (`prefetch`).
        self._ranked: dict[tuple[int | None, tuple[int, ...]], list[tuple[int, int, bytes]]] = {}

    def prefetch(self, items: Sequence[PreparedArticle]) -> None:
        """Rank ahead, all at once, the stored candidates the batch's look-ups will need.

        The index searches its arrays once for the whole batch, and lsh_band is queried
        through `candidates_of_many` (on PostgreSQL one statement instead of one per
        article). The batch's own articles are written (and added to the index) after
        the loop, so what is stored does not change in between. Call after
        `preload_hashes`: exact copies need no candidates.
        """
        wanted: dict[int | None, dict[tuple[int, ...], None]] = {}  # probe's through -> keys
        for item in items:
            fp = item.fingerprint
            if not fp.shingle_count or not fp.band_keys or fp.text_hash in self._stored_hashes:
                continue
            through = None if item.probe is None else item.probe.through
            wanted.setdefault(through, {})[tuple(sorted(set(fp.band_keys)))] = None
        for through, key_sets in wanted.items():
            ranked = self._rank(list(key_sets), through)
            self._ranked.update(zip([(through, keys) for keys in key_sets], ranked, strict=True))

    def _rank(
        self, key_sets: Sequence[Sequence[int]], through: int | None
    ) -> list[list[tuple[int, int, bytes]]]:
        """The stored candidates of each key set, among every stored article or, after a
        probe, among those stored after its `through`: in the index, and in lsh_band
        for those up to the index's start."""
        index = self._index
        if through is not None and index.covers(through):
            return index.candidates_of_many(key_sets, MAX_CANDIDATES, after=through)
        recent = index.candidates_of_many(key_sets, MAX_CANDIDATES)
        if index.start == 0:  # nothing merged before the index: lsh_band has none of them
            return recent
        merged = candidates_of_many(self._sql, key_sets, after=through, upto=index.start)
        return [
            sorted(a + b, key=_shared_bands, reverse=True)[:MAX_CANDIDATES]
            for a, b in zip(merged, recent, strict=True)
        ]

    def preload_hashes(self, hashes: Sequence[str]) -> None:
        """Exact-copy look-up for a whole batch in one query."""
        if not hashes:
            return
        where, params = self._sql.among("text_hash", sorted(set(hashes)))
        rows = self._sql.rows(
            f"SELECT text_hash, story_id FROM article WHERE {where} ORDER BY id DESC", params
        )
        # Descending ids: the oldest article with the hash is written last and wins.
        self._stored_hashes.update({h: story for h, story in rows})

    def find(
        self, fp: Fingerprint, text: str | None = None, probe: Probe | None = None
    ) -> tuple[int, float] | None:
        """(story id, similarity) of the story `fp` copies, if any.

        One indexed query ranks the articles in lsh_band sharing a band by how many bands
        they share and returns their signatures (the later ones are ranked in memory, by
        the `RecentIndex`); only those are verified, so the cost stays flat as the store
        grows (benchmarks/lookup.py). Given the article's `text`, borderline estimates are
        settled on the exact shingles of the few candidates. Given a `probe` made before
        the lock, only the articles after it are looked up, in memory when the index
        holds them all.
        """
        exact = self._batch_hashes.get(fp.text_hash) or self._stored_hashes.get(fp.text_hash)
        if exact is not None:
            return exact, 1.0
        if fp.shingle_count == 0 or not fp.band_keys:
            return None
        keys = sorted(set(fp.band_keys))
        ranked = self.stored_candidates(keys, probe)
        hits = self._band_owner.keys() & keys
        shared = Counter(self._band_owner[key] for key in hits)
        for key in hits & self._more_bands.keys():
            shared.update(self._more_bands[key])
        ranked += [(n, aid, self._batch[aid][0]) for aid, n in shared.items()]
        ranked.sort(reverse=True)
        best = best_match(
            fp.signature,
            [(aid, sig) for _, aid, sig in ranked[:MAX_CANDIDATES]],
            self._threshold,
            text=text,
            texts_of=self._texts_of,
        )
        if best is None:
            return None
        article_id, score = best
        if article_id in self._batch:
            return self._batch[article_id][1], score
        story = self._sql.value("SELECT story_id FROM article WHERE id = ?", [article_id])
        if story is None and probe is not None:
            return self.find(fp, text)  # the probe's article is gone: look up afresh
        return (story if story is not None else article_id), score

    def stored_candidates(
        self, keys: list[int], probe: Probe | None = None
    ) -> list[tuple[int, int, bytes]]:
        """(shared bands, article id, signature) of the best-ranked stored articles
        sharing a band with `keys` (sorted, distinct), those of `probe` included."""
        through = None if probe is None else probe.through
        ranked = self._ranked.get((through, tuple(keys)))
        if ranked is None:  # not ranked ahead (a look-up without `prefetch`)
            [ranked] = self._rank([keys], through)
        if probe is None:
            return list(ranked)
        # An article committed while the probe ran can be in both.
        known = {aid for _, aid, _ in ranked}
        return ranked + [row for row in probe.rows if row[1] not in known]

    def add(self, article_id: int, story_id: int, fp: Fingerprint, text: str) -> None:
        """Make an article of this batch findable before it is written."""
        self._batch_hashes.setdefault(fp.text_hash, story_id)
        self._batch[article_id] = (fp.signature, story_id, text)
        if fp.shingle_count:
            keys = set(fp.band_keys)
            taken = keys & self._band_owner.keys()
            for key in taken:
                self._more_bands.setdefault(key, []).append(article_id)
            self._band_owner.update(dict.fromkeys(keys - taken, article_id))

    def _texts_of(self, ids: list[int]) -> dict[int, str]:
        texts = {i: self._batch[i][2] for i in ids if i in self._batch}
        stored = [i for i in ids if i not in texts]
        if stored:
            where, params = self._sql.among("id", stored)
            rows = self._sql.rows(f"SELECT id, text FROM article WHERE {where}", params)
            texts.update({int(i): str(t) for i, t in rows})
        return texts


def find_original(
    session: Session, fp: Fingerprint, threshold: float, text: str | None = None
) -> tuple[int, float] | None:
    """The story id a fingerprint duplicates among stored articles (exact, then LSH)."""
    sql = Statements.of(session)
    index = recent_index(session.get_bind().engine)
    with index.lock:
        sync_recent_index(sql, index)
        lookup = DedupLookup(sql, threshold, index)
        lookup.preload_hashes([fp.text_hash])
        return lookup.find(fp, text)


def near_duplicate_candidates(
    session: Session, band_keys: Sequence[int]
) -> list[tuple[int, bytes]]:
    """(article_id, signature) of the stored articles sharing most bands with `band_keys`.

    Ranking by shared bands keeps a true copy (which shares many) inside MAX_CANDIDATES
    even when a common band value brings in many unrelated articles.
    """
    sql = Statements.of(session)
    index = recent_index(session.get_bind().engine)
    with index.lock:
        sync_recent_index(sql, index)
        rows = DedupLookup(sql, 0.0, index).stored_candidates(sorted(set(band_keys)))
    return [(article_id, signature) for _, article_id, signature in rows]


def probe_candidates(
    engine: Engine, items: Sequence[PreparedArticle], *, through: int | None = None
) -> list[PreparedArticle]:
    """`items` with their near-duplicate candidates among the articles in lsh_band, or
    among those up to id `through` only.

    Meant to run before `ingest`, without its lock (`tasks.polling`). The ranked query
    over the large band table, most of a look-up, then leaves the critical section,
    which looks up only the articles after the probe's `through`, in memory
    (`DedupLookup.find`). Reads committed rows and holds no transaction. A probe is only
    a head start: if it fails, the items go on without one.
    """
    wanted = [i for i, item in enumerate(items) if item.fingerprint.band_keys]
    if not wanted:
        return list(items)
    out = list(items)
    if through == 0:  # nothing in lsh_band: nothing to look up
        for i in wanted:
            out[i] = replace(items[i], probe=Probe(0, ()))
        return out
    try:
        connection = engine.raw_connection()
        try:
            sql = Statements(engine.dialect, connection)
            # Merges only add to lsh_band: every article up to `merged` stays there.
            merged = merged_through(sql) if through is None else through
            found: list[list[tuple[int, int, bytes]]] = [[] for _ in wanted]
            if merged:
                key_sets = [sorted(set(items[i].fingerprint.band_keys)) for i in wanted]
                found = candidates_of_many(sql, key_sets, upto=merged)
            for i, rows in zip(wanted, found, strict=True):
                out[i] = replace(items[i], probe=Probe(merged, tuple(rows)))
        finally:
            connection.close()
    except Exception as exc:  # never worse than no probe
        log.warning("near-duplicate probe failed, looking up under the lock instead: %s", exc)
        return list(items)
    return out


def newest_article(sql: Statements) -> int:
    """The id of the newest stored article (0 for none), as `sql`'s transaction sees it."""
    return int(sql.value("SELECT coalesce(max(id), 0) FROM article") or 0)


def merged_through(sql: Statements) -> int:
    """The newest article whose bands were merged into lsh_band (0: none yet)."""
    return int(sql.value("SELECT merged_through FROM lsh_band_state WHERE id = 1") or 0)


_indexes: dict[str, RecentIndex] = {}
_indexes_lock = threading.Lock()


def recent_index(engine: Engine) -> RecentIndex:
    """This process's `RecentIndex` of `engine`'s store: sync it before use, holding
    its `lock` (`sync_recent_index`)."""
    key = engine.url.render_as_string(hide_password=False)
    with _indexes_lock:
        index = _indexes.get(key)
        if index is None:
            index = _indexes[key] = RecentIndex(valid=False)
        return index


def start_recent_index(engine: Engine) -> RecentIndex:
    """A `RecentIndex` of `engine`'s store for a long run of ingests, starting at the
    newest article in lsh_band: the run's probes cover the articles up to there
    (`probe_candidates`), so it keeps the articles it moves into lsh_band itself.

    Empty: the first ingest's sync reads the log's articles, so a run that stores
    nothing (every feed unchanged) costs one query, not a load of up to `log_capacity`
    articles (~0.15 s per 10,000).
    """
    with engine.connect() as conn:
        merged = merged_through(Statements(conn.dialect, conn.connection))
    return RecentIndex(merged, keeps_merged=True)


# Every stored article has a signature row: the newest of those is the newest article.
_STATE_SQL = (
    "SELECT (SELECT coalesce(max(article_id), 0) FROM article_signature), "
    "(SELECT merged_through FROM lsh_band_state WHERE id = 1), "
    "(SELECT signature FROM article_signature WHERE article_id = ?)"
)
_LOG_SQL = (
    "SELECT l.article_id, l.keys, s.signature FROM lsh_band_log l "
    "JOIN article_signature s ON s.article_id = l.article_id "
    "WHERE l.article_id > ? AND l.article_id <= ? ORDER BY l.article_id"
)


def sync_recent_index(sql: Statements, index: RecentIndex) -> None:
    """Bring `index` up to what `sql`'s transaction sees of the store.

    It reads only the articles logged since it was last synced, or loads every article
    of lsh_band_log afresh when it cannot: another process merged articles it never
    saw into lsh_band, a rolled-back transaction left it articles that are not stored
    (its newest one is gone or differs), or it holds too many. Call under the ingest
    lock, or in a transaction that only reads.
    """
    last = index.last
    newest, merged, signature = sql.rows(_STATE_SQL, [last[0] if last else 0])[0]
    newest, merged = int(newest), int(merged or 0)
    stale = (
        not index.valid
        or newest < index.newest
        or not index.start <= merged <= index.newest
        or index.count > index.max_articles
        or (last is not None and (signature is None or bytes(signature) != last[1]))
    )
    if stale:
        index.reset(merged)
    if newest > index.newest:
        for article_id, keys, stored in sql.rows(_LOG_SQL, [index.newest, newest]):
            index.add(int(article_id), unpack_band_keys(bytes(keys)), bytes(stored))
        index.newest = newest


def log_capacity(merged: int) -> int:
    """How many articles lsh_band_log holds before a move, when lsh_band holds the
    articles up to id `merged`: RECENT_BAND_ARTICLES, or RECENT_BAND_SHARE of lsh_band's
    when more, up to RECENT_BAND_GROWTH times RECENT_BAND_ARTICLES.

    A move touches most leaf pages of lsh_band whatever it brings, so on a large store
    its cost is the table's size, not the move's: into a store of 1M articles, a move of
    10,000 articles took 2.6-2.8 s and wrote 1.5 GB, one of 40,000 took 4.4-4.5 s and
    wrote 1.6 GB (benchmarks/lookup.py's move, two pairs). A log that grows with the
    table keeps the cost per article moved about flat up to ~1M articles; the cap bounds
    what each process holds (40,000 articles: ~65 MB).
    """
    grown = int(merged * RECENT_BAND_SHARE)
    return min(RECENT_BAND_GROWTH * RECENT_BAND_ARTICLES, max(RECENT_BAND_ARTICLES, grown))


def merge_band_log(sql: Statements, *, newest: int) -> bool:
    """Move lsh_band_log into lsh_band once it holds more than `log_capacity` articles;
    whether it did.

    `newest` is the newest article id stored. Key order lets the insert fill each page of
    the large index once; the caller's transaction (which holds the ingest lock) makes
    the move atomic.
    """
    merged = merged_through(sql)
    if newest - merged <= log_capacity(merged):
        return False
    started = time.perf_counter()
    logged = sql.rows(
        "SELECT article_id, keys FROM lsh_band_log WHERE article_id <= ? ORDER BY article_id",
        [newest],
    )
    if logged:
        packed = [bytes(keys) for _, keys in logged]
        keys = np.frombuffer(b"".join(packed), dtype="<i8")
        ids = np.repeat(
            np.array([int(article_id) for article_id, _ in logged], dtype=np.int64),
            [len(p) // 8 for p in packed],
        )
        order = np.lexsort((ids, keys))
        table = cast(Any, LshBand).__table__
        # In chunks: the rows of 10,000 articles as Python tuples at once took ~50 MB.
        for start in range(0, len(order), MERGE_CHUNK_ROWS):
            chunk = order[start : start + MERGE_CHUNK_ROWS]
            rows = list(zip(keys[chunk].tolist(), ids[chunk].tolist(), strict=True))
            sql.insert_many(table, ("key", "article_id"), rows)
    sql.execute("DELETE FROM lsh_band_log WHERE article_id <= ?", [newest])
    sql.execute("UPDATE lsh_band_state SET merged_through = ? WHERE id = 1", [newest])
    # The ingest lock is held meanwhile: operators see how long other ingests waited.
    log.info(
        "moved the band keys of %d articles into lsh_band (through article %d) in %.2f s",
        len(logged),
        newest,
        time.perf_counter() - started,
    )
    return True
