"""Storing articles: exact and near-duplicate resolution, tags and alerts in one transaction.

`ingest` is the critical section of the pipeline. It runs under a lock that serializes
concurrent writers (SQLite's write lock via BEGIN IMMEDIATE, a transaction-scoped
advisory lock on PostgreSQL), so two workers racing on copies of one story still
produce exactly one original, and the unique (rule, story) constraint makes an alert
impossible to store twice.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from itertools import repeat
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.orm import Session

from storage.engine import lock_for_ingest, session_scope
from storage.models import (
    Alert,
    Article,
    ArticleSignature,
    ArticleTopic,
    LshBand,
    RecentLshBand,
    utcnow,
)
from storage.runindex import RunIndex
from tasks.fingerprint import Fingerprint, best_match
from tasks.models import Article as ArticleData
from tasks.models import Match, TopicTag

log = logging.getLogger(__name__)

# Never verify more than this many near-duplicate candidates for one article.
MAX_CANDIDATES = 200


@dataclass(frozen=True, slots=True)
class Probe:
    """Near-duplicate candidates looked up before the ingest lock (`probe_candidates`).

    `rows` are (shared bands, article id, signature) of the best-ranked stored articles
    sharing a band, among those up to article id `through` at least. Ingest then looks
    only at the articles stored after `through` (`DedupLookup.find`).
    """

    through: int
    rows: tuple[tuple[int, int, bytes], ...]


@dataclass(frozen=True, slots=True)
class PreparedArticle:
    """An article with everything computed before the transaction."""

    article: ArticleData
    fingerprint: Fingerprint
    tags: tuple[TopicTag, ...] = ()
    matches: tuple[Match, ...] = ()
    probe: Probe | None = None


@dataclass(slots=True)
class IngestResult:
    """What a batch did to the store."""

    stored: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    skipped: int = 0
    alerts: list[int] = field(default_factory=list)
    # The new alerts to send now: pending, of a rule with channels and no digest. Only
    # these need a delivery task; the others are stored or wait for their digest.
    to_send: list[int] = field(default_factory=list)


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


class _Sql:
    """Plain DBAPI statements on the session's own connection (same transaction).

    The ingest loop runs a handful of statements per article; through SQLAlchemy's
    execution layer each cost ~60-100 µs of Python, several times the indexed SQL
    itself (benchmarks/pipeline.py). SQL is written with ``?`` and rewritten for
    psycopg's ``%s``; values pass through the columns' own bind processors, so rows
    are stored exactly as the ORM would store them.
    """

    def __init__(self, dialect: Any, dbapi_connection: Any) -> None:
        self.dialect = dialect
        self._qmark = self.dialect.paramstyle == "qmark"
        self._cursor = dbapi_connection.cursor()

    @classmethod
    def of(cls, session: Session) -> _Sql:
        """Statements in the session's transaction."""
        conn = session.connection()
        return cls(conn.dialect, conn.connection)

    def _sql(self, sql: str) -> str:
        return sql if self._qmark else sql.replace("?", "%s")

    def among(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """A `column IN values` condition and its parameters.

        PostgreSQL gets one array parameter (``= ANY(%s)``): the statement text is then
        the same whatever the number of values, so psycopg prepares it once instead of
        PostgreSQL planning every look-up (~0.8 ms each).
        """
        if self._qmark:
            return f"{column} IN ({_placeholders(len(values))})", list(values)
        return f"{column} = ANY(?)", [list(values)]

    def candidates(
        self,
        keys: Sequence[int],
        *,
        after: int | None = None,
        upto: int | None = None,
        large: bool = True,
    ) -> list[tuple[int, int, bytes]]:
        """(shared bands, article_id, signature) of the top-ranked stored articles.

        With `after` (`upto`), among the articles with a greater (no greater) id only;
        `large=False` leaves lsh_band out, for when none of those was merged into it.
        That probe of the large table is most of a look-up, and what a `Probe` saves the
        ingest lock.
        """
        bands, params = _bands_sql(*self.among("key", keys), after, upto, large)
        sql = _CANDIDATES_SQL.format(bands=bands, limit=MAX_CANDIDATES)
        rows = self.rows(sql, params)
        return [(int(r[1]), int(r[0]), bytes(r[2])) for r in rows if r[2] is not None]

    def candidates_of_many(
        self,
        key_sets: Sequence[Sequence[int]],
        *,
        after: int | None = None,
        upto: int | None = None,
        large: bool = True,
    ) -> list[list[tuple[int, int, bytes]]]:
        """`candidates(keys, ...)` of each of `key_sets`: on PostgreSQL one statement per
        MANY_CANDIDATES_CHUNK of them.

        There a look-up's round trip and client-side work were most of its cost (~0.6 ms
        a query, of which the server's part was ~0.2), so a batch ranks the candidates
        of all its articles at once, each key set in its own LATERAL subquery. SQLite
        runs in-process: one query per key set costs no round trip.
        """
        if self._qmark:
            return [self.candidates(k, after=after, upto=upto, large=large) for k in key_sets]
        if len(key_sets) > MANY_CANDIDATES_CHUNK:
            return [
                rows
                for start in range(0, len(key_sets), MANY_CANDIDATES_CHUNK)
                for rows in self.candidates_of_many(
                    key_sets[start : start + MANY_CANDIDATES_CHUNK],
                    after=after,
                    upto=upto,
                    large=large,
                )
            ]
        found: list[list[tuple[int, int, bytes]]] = [[] for _ in key_sets]
        if not key_sets:
            return found
        # The arrays go as text literals: psycopg's adaptation of Python lists chose a
        # type per element, ~6 ms for a 50-article batch's 4,000 numbers.
        numbers = _array_literal(i for i, keys in enumerate(key_sets) for _ in keys)
        keys = _array_literal(key for keys in key_sets for key in keys)
        bands, params = _bands_sql("key = ANY(q.keys)", [], after, upto, large)
        sql = _MANY_CANDIDATES_SQL.format(bands=bands, limit=MAX_CANDIDATES)
        for i, article_id, shared, signature in self.rows(sql, [numbers, keys, *params]):
            if signature is not None:
                found[i].append((int(shared), int(article_id), bytes(signature)))
        for rows in found:
            rows.sort(key=_shared_bands, reverse=True)
        return found

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of a query."""
        self._cursor.execute(self._sql(sql), tuple(params))
        return list(self._cursor.fetchall())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement for its effect."""
        self._cursor.execute(self._sql(sql), tuple(params))

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row, or None."""
        self._cursor.execute(self._sql(sql), tuple(params))
        row = self._cursor.fetchone()
        return None if row is None else row[0]

    def insert_many(
        self,
        table: Any,
        columns: Sequence[str],
        rows: list[tuple[Any, ...]],
        *,
        skip_conflicts: bool = False,
    ) -> None:
        """INSERT `rows` (tuples in `columns` order), skipping unique conflicts if asked.

        SQLite: one executemany (in-process, nothing to batch). PostgreSQL: COPY, since
        executemany pays a round trip per row (~30 µs); COPY has no ON CONFLICT, so rows
        that may conflict are copied into a temporary table and inserted from there.
        """
        if not rows:
            return
        processors = _bind_processors(table, tuple(columns), self.dialect.name)
        if any(processors):
            rows = _processed(rows, processors)
        names = ", ".join(columns)
        if self._qmark:
            conflict = " ON CONFLICT DO NOTHING" if skip_conflicts else ""
            sql = f"INSERT INTO {table.name} ({names}) VALUES ({_placeholders(len(columns))})"
            self._cursor.executemany(sql + conflict, rows)
            return
        if not skip_conflicts:
            self._copy(f"{table.name} ({names})", rows)
            return
        staging = f"incoming_{table.name}"
        self._cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
            f"SELECT {names} FROM {table.name} WITH NO DATA"
        )
        self._copy(f"{staging} ({names})", rows)
        self._cursor.execute(
            f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {staging} "
            "ON CONFLICT DO NOTHING"
        )
        self._cursor.execute(f"TRUNCATE {staging}")

    def _copy(self, target: str, rows: list[tuple[Any, ...]]) -> None:
        with self._cursor.copy(f"COPY {target} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _processed(rows: list[tuple[Any, ...]], processors: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Rows with each value passed through its column's bind processor.

    Column by column, memoized per column: a batch repeats the same timestamp, topic
    lists and matched terms many times, and JSON encoding them again each time was most
    of the cost.
    """
    columns = list(zip(*rows, strict=True))
    for index, processor in enumerate(processors):
        if processor is not None:
            columns[index] = _processed_column(columns[index], processor)
    return list(zip(*columns, strict=True))


def _processed_column(values: tuple[Any, ...], processor: Any) -> tuple[Any, ...]:
    memo: dict[Any, Any] = {None: None}
    out = []
    for value in values:
        key = tuple(value) if type(value) is list else value
        done = memo.get(key, memo)
        if done is memo:
            done = memo[key] = processor(value)
        out.append(done)
    return tuple(out)


@lru_cache(maxsize=32)
def _bind_processors(table: Any, columns: tuple[str, ...], dialect_name: str) -> tuple[Any, ...]:
    dialect = _dialect(dialect_name)
    return tuple(
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
    )


@lru_cache(maxsize=4)
def _dialect(name: str) -> Any:
    return psycopg.dialect() if name == "postgresql" else sqlite.dialect()


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
    where: str, params: list[Any], after: int | None, upto: int | None, large: bool
) -> tuple[str, list[Any]]:
    """The band rows matching `where` in both band tables (or the recent one only, when
    not `large`), of the articles after `after` and up to `upto` if given."""
    if after is not None:
        where, params = f"{where} AND article_id > ?", [*params, after]
    if upto is not None:
        where, params = f"{where} AND article_id <= ?", [*params, upto]
    tables = ("lsh_band", "lsh_band_recent") if large else ("lsh_band_recent",)
    bands = " UNION ALL ".join(f"SELECT article_id FROM {t} WHERE {where}" for t in tables)
    return bands, params * len(tables)


# Key sets ranked per statement by `_Sql.candidates_of_many`, at most.
MANY_CANDIDATES_CHUNK = 200


def _array_literal(numbers: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers, e.g. ``{1,2,3}``."""
    return "{" + ",".join(map(str, numbers)) + "}"


def _shared_bands(row: tuple[int, int, bytes]) -> int:
    return row[0]


# Bands of at most about this many articles wait in lsh_band_recent (40 rows each)
# before they are merged into lsh_band (migration 0004). With one commit per feed of
# 50 entries, storing a band cost ~3.5x less at 50,000 stored articles than writing
# straight into lsh_band; merging every 1,250 articles measured about the same.
RECENT_BAND_ARTICLES = 2500


class DedupLookup:
    """Finds the story a fingerprint duplicates, in the store and in the current batch.

    The batch's own articles are written once, after the loop, so a copy later in
    the same batch is found here in memory instead of in the tables.
    """

    def __init__(self, sql: _Sql, threshold: float, index: RunIndex | None = None) -> None:
        self._sql = sql
        self._threshold = threshold
        self._index = index
        self._stored_hashes: dict[str, int] = {}
        self._batch_hashes: dict[str, int] = {}
        # Band key -> the first batch article with it; later ones (rare) in _more_bands.
        self._band_owner: dict[int, int] = {}
        self._more_bands: dict[int, list[int]] = {}
        self._batch: dict[int, tuple[bytes, int, str]] = {}  # id -> (signature, story, text)
        self._merged_through: int | None = None
        # (probe's through or None, sorted distinct band keys) -> the stored candidates,
        # ranked ahead (`prefetch`).
        self._prefetched: dict[
            tuple[int | None, tuple[int, ...]], list[tuple[int, int, bytes]]
        ] = {}
        # Sorted distinct band keys -> the candidates the run's index ranked ahead.
        self._indexed: dict[tuple[int, ...], list[tuple[int, int, bytes]]] = {}

    def prefetch(self, items: Sequence[PreparedArticle]) -> None:
        """Rank ahead the stored candidates that the batch's look-ups will query.

        The run's index searches its arrays once for the whole batch. On PostgreSQL one
        statement ranks MANY_CANDIDATES_CHUNK articles instead of one each
        (`_Sql.candidates_of_many`); SQLite keeps its query per look-up. The batch's own
        articles are written (and added to the index) after the loop, so what is stored
        does not change in between. Call after `preload_hashes`: exact copies need no
        candidates.
        """
        postgresql = self._sql.dialect.name == "postgresql"
        indexed: dict[tuple[int, ...], None] = {}
        wanted: dict[int | None, dict[tuple[int, ...], None]] = {}  # probe's through -> keys
        for item in items:
            fp, probe = item.fingerprint, item.probe
            if not fp.shingle_count or not fp.band_keys or fp.text_hash in self._stored_hashes:
                continue
            keys = tuple(sorted(set(fp.band_keys)))
            if probe is not None and self._index is not None and self._index.covers(probe.through):
                indexed[keys] = None
            elif postgresql:
                wanted.setdefault(None if probe is None else probe.through, {})[keys] = None
        if indexed and self._index is not None:
            found = self._index.candidates_of_many(list(indexed), MAX_CANDIDATES)
            self._indexed.update(zip(indexed, found, strict=True))
        for through, key_sets in wanted.items():
            large = through is None or self._merged_after(through)
            found = self._sql.candidates_of_many(list(key_sets), after=through, large=large)
            self._prefetched.update(zip([(through, k) for k in key_sets], found, strict=True))

    def _merged_after(self, through: int) -> bool:
        """Whether lsh_band holds bands of articles stored after `through`."""
        if self._merged_through is None:
            self._merged_through = _merged_through(self._sql)
        return self._merged_through > through

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

        One indexed query ranks the stored articles sharing a band by how many bands they
        share and returns their signatures; only those are verified, so the cost stays
        flat as the store grows (benchmarks/lookup.py). Given the article's `text`,
        borderline estimates are settled on the exact shingles of the few candidates.
        Given a `probe` made before the lock, only the articles stored since are queried,
        or none at all when this process's `RunIndex` holds them.
        """
        exact = self._batch_hashes.get(fp.text_hash) or self._stored_hashes.get(fp.text_hash)
        if exact is not None:
            return exact, 1.0
        if fp.shingle_count == 0 or not fp.band_keys:
            return None
        keys = sorted(set(fp.band_keys))
        ranked = self._stored_candidates(keys, probe)
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

    def _stored_candidates(
        self, keys: list[int], probe: Probe | None
    ) -> list[tuple[int, int, bytes]]:
        """(shared bands, article id, signature) of the best-ranked stored candidates."""
        through = None if probe is None else probe.through
        ahead = self._prefetched.get((through, tuple(keys)))
        if probe is None:
            return list(ahead) if ahead is not None else self._sql.candidates(keys)
        if self._index is not None and self._index.covers(probe.through):
            ranked = self._indexed.get(tuple(keys))
            since = (
                list(ranked) if ranked is not None else self._index.candidates(keys, MAX_CANDIDATES)
            )
        elif ahead is not None:
            since = list(ahead)
        else:
            large = self._merged_after(probe.through)
            since = self._sql.candidates(keys, after=probe.through, large=large)
        # An article committed while the probe ran can be in both.
        known = {aid for _, aid, _ in since}
        return since + [row for row in probe.rows if row[1] not in known]

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
    lookup = DedupLookup(_Sql.of(session), threshold)
    lookup.preload_hashes([fp.text_hash])
    return lookup.find(fp, text)


def near_duplicate_candidates(
    session: Session, band_keys: Sequence[int]
) -> list[tuple[int, bytes]]:
    """(article_id, signature) of the stored articles sharing most bands with `band_keys`.

    Ranking by shared bands keeps a true copy (which shares many) inside MAX_CANDIDATES
    even when a common band value brings in many unrelated articles.
    """
    rows = _Sql.of(session).candidates(sorted(set(band_keys)))
    return [(article_id, signature) for _, article_id, signature in rows]


def probe_candidates(
    engine: Engine, items: Sequence[PreparedArticle], *, through: int | None = None
) -> list[PreparedArticle]:
    """`items` with their near-duplicate candidates among the articles stored so far,
    or among those up to id `through` only.

    Meant to run before `ingest`, without its lock (`tasks.polling`). The ranked query
    over the large band table, most of a look-up, then leaves the critical section,
    which queries only what was stored since (`DedupLookup.find`). Reads committed rows
    and holds no transaction. A probe is only a head start: if it fails, the items go
    on without one.
    """
    wanted = [i for i, item in enumerate(items) if item.fingerprint.band_keys]
    if not wanted:
        return list(items)
    out = list(items)
    if through == 0:  # an empty store: nothing to look up
        for i in wanted:
            out[i] = replace(items[i], probe=Probe(0, ()))
        return out
    try:
        connection = engine.raw_connection()
        try:
            sql = _Sql(engine.dialect, connection)
            # First: ids are taken under the ingest lock and committed in order, so the
            # queries below see every article up to `seen` (and maybe a few more).
            seen = through
            if seen is None:
                seen = _newest_article(sql)
            key_sets = [sorted(set(items[i].fingerprint.band_keys)) for i in wanted]
            found = sql.candidates_of_many(key_sets, upto=through)
            for i, rows in zip(wanted, found, strict=True):
                out[i] = replace(items[i], probe=Probe(seen, tuple(rows)))
        finally:
            connection.close()
    except Exception as exc:  # never worse than no probe
        log.warning("near-duplicate probe failed, looking up under the lock instead: %s", exc)
        return list(items)
    return out


_ARTICLE_COLUMNS = (
    "id",
    "origin",
    "feed_id",
    "guid",
    "url",
    "canonical_url",
    "title",
    "text",
    "text_hash",
    "source",
    "author",
    "dateline",
    "language",
    "published_at",
    "created_at",
    "duplicate_of",
    "story_id",
    "similarity",
)
_ALERT_COLUMNS = (
    "rule_id",
    "story_id",
    "article_id",
    "title",
    "url",
    "topics",
    "matched",
    "snippet",
    "created_at",
    "status",
    "attempts",
)


def _newest_article(sql: _Sql) -> int:
    return int(sql.value("SELECT coalesce(max(id), 0) FROM article") or 0)


def newest_article_id(engine: Engine) -> int:
    """The id of the newest stored article (0 for none): a `RunIndex` starts there."""
    with engine.connect() as conn:
        return _newest_article(_Sql(conn.dialect, conn.connection))


# A run starting on a store of at most this many articles loads their bands into its
# `RunIndex` (~0.1 s for 2,000 on SQLite, at its first ingest), so that nothing needs a
# probe.
PRELOAD_ARTICLES = 2000


def start_run_index(engine: Engine) -> RunIndex:
    """A `RunIndex` for a run of ingests starting now.

    It holds the stored articles themselves when they are few (a new store, its seeds):
    then no look-up of the run needs a probe. They are loaded by the run's first ingest,
    so a run that stores nothing costs one query. Otherwise it starts after the newest
    article, and the articles stored so far are the probes' part (`probe_candidates`).
    """
    newest = newest_article_id(engine)
    if newest > PRELOAD_ARTICLES:
        return RunIndex(newest)
    return RunIndex(0, loaded=False)


def _load_run_index(sql: _Sql, index: RunIndex) -> None:
    """Give `index` every stored article (see `start_run_index`), under the ingest lock."""
    signatures = sql.rows("SELECT article_id, signature FROM article_signature ORDER BY article_id")
    bands = sql.rows(
        "SELECT article_id, key FROM lsh_band UNION ALL SELECT article_id, key FROM lsh_band_recent"
    )
    index.load(signatures, bands, _newest_article(sql))


def _reserve_article_ids(sql: _Sql, count: int) -> list[int]:
    """Ids for the batch's articles, taken while the ingest lock is held."""
    if sql.dialect.name == "postgresql":
        rows = sql.rows(
            "SELECT nextval(pg_get_serial_sequence('article', 'id')) FROM generate_series(1, ?)",
            [count],
        )
        return [int(r[0]) for r in rows]
    # SQLite: the write lock is held (BEGIN IMMEDIATE) and ids are max + 1 anyway.
    first = _newest_article(sql) + 1
    return list(range(first, first + count))


def ingest(
    engine: Engine,
    *,
    origin: str,
    feed_id: int | None,
    items: Sequence[PreparedArticle],
    threshold: float,
    session: Session | None = None,
    index: RunIndex | None = None,
) -> IngestResult:
    """Store a batch: skip entries already seen, link duplicates, tag, create alerts.

    A duplicate alerts only the rules that have not alerted on its story yet: an alert
    is unique per (rule, story), so a copy that matches a rule its original did not (an
    added paragraph naming a watched name) still alerts, once.
    Runs in the given session's transaction, or in its own.

    Per batch, not per article: one query for guids and URLs already stored, one for
    exact copies, then one ranked band query per article (`DedupLookup`; on
    PostgreSQL one for the batch), and one executemany (COPY) per table at the end.
    Articles of the batch are looked up in memory, so a copy later in the same batch
    still finds its original. Given the run's `index`, the stored articles are added
    to it; the caller invalidates it if the transaction is not committed.
    """
    if session is None:
        with session_scope(engine) as own:
            return ingest(
                engine,
                origin=origin,
                feed_id=feed_id,
                items=items,
                threshold=threshold,
                session=own,
                index=index,
            )
    result = IngestResult()
    if not items:
        return result
    lock_for_ingest(session)
    sql = _Sql.of(session)
    fresh = _unseen(sql, origin, feed_id, items)
    result.skipped = len(items) - len(fresh)
    if not fresh:
        return result
    rules = _rules(sql)
    if index is not None:
        if not index.loaded:
            _load_run_index(sql, index)
        index.check(_newest_article(sql))
    lookup = DedupLookup(sql, threshold, index)
    lookup.preload_hashes([item.fingerprint.text_hash for item in fresh])
    lookup.prefetch(fresh)
    now = utcnow()
    article_rows: list[tuple[Any, ...]] = []
    signature_rows: list[tuple[int, bytes]] = []
    band_rows: list[tuple[int, int]] = []
    tag_rows: list[tuple[Any, ...]] = []
    placed: list[tuple[PreparedArticle, int, int]] = []  # item, article id, story id
    for item, article_id in zip(fresh, _reserve_article_ids(sql, len(fresh)), strict=True):
        data, fp = item.article, item.fingerprint
        original = lookup.find(fp, data.text or data.title, item.probe)
        story_id = original[0] if original else article_id
        lookup.add(article_id, story_id, fp, data.text or data.title)
        article_rows.append(
            (
                article_id,
                origin,
                feed_id,
                data.guid,
                data.url,
                data.canonical_url,
                data.title,
                data.text,
                fp.text_hash,
                data.source,
                data.author,
                data.dateline,
                data.language,
                data.published_at,
                now,
                original[0] if original else None,
                story_id,
                original[1] if original else None,
            )
        )
        signature_rows.append((article_id, fp.signature))
        if fp.shingle_count:
            band_rows.extend(zip(set(fp.band_keys), repeat(article_id)))
        tag_rows.extend((article_id, t.slug, t.score, list(t.phrases)) for t in item.tags)
        placed.append((item, article_id, story_id))
        (result.duplicates if original else result.stored).append(article_id)
    if index is not None:
        for item, article_id, _ in placed:
            fp = item.fingerprint
            index.add(article_id, fp.band_keys if fp.shingle_count else (), fp.signature)
    tables = _tables()
    sql.insert_many(tables["article"], _ARTICLE_COLUMNS, article_rows)
    sql.insert_many(tables["article_signature"], ("article_id", "signature"), signature_rows)
    if band_rows:
        # In key order, each insert lands next to the previous one in the B-tree instead
        # of on a random page: 47 -> 34 us per article for 40 rows (benchmarks/pipeline.py).
        band_rows.sort()
        sql.insert_many(tables["lsh_band_recent"], ("key", "article_id"), band_rows)
        _merge_recent_bands(sql, newest=placed[-1][1])
    sql.insert_many(tables["article_topic"], ("article_id", "slug", "score", "phrases"), tag_rows)
    alert_rows = _alert_rows(placed, rules, now)
    if alert_rows:
        # A (rule, story) pair stored by an earlier batch or another worker is skipped
        # by the unique constraint (ON CONFLICT DO NOTHING). Alert ids only grow and
        # only ingest inserts alerts, under the lock: the new ones are above the mark.
        mark = int(sql.value("SELECT coalesce(max(id), 0) FROM alert") or 0)
        sql.insert_many(tables["alert"], _ALERT_COLUMNS, alert_rows, skip_conflicts=True)
        new_alerts = sql.rows(
            "SELECT a.id, a.status, r.digest FROM alert a JOIN rule r ON r.id = a.rule_id "
            "WHERE a.id > ? ORDER BY a.id",
            [mark],
        )
        result.alerts = [int(r[0]) for r in new_alerts]
        result.to_send = [
            int(r[0]) for r in new_alerts if r[1] == "pending" and r[2] == "immediate"
        ]
    return result


def _rules(sql: _Sql) -> dict[int, bool]:
    """Rule id -> whether it has channels (its alerts are to be sent).

    Plain rows, decoded only as far as needed: decoding every rule's row in every batch
    cost ~10-50 us per article with 1,000 rules.
    """
    rows = sql.rows("SELECT id, CAST(channels AS TEXT) FROM rule")
    return {int(i): channels not in (None, "[]", "null") for i, channels in rows}


def _unseen(
    sql: _Sql, origin: str, feed_id: int | None, items: Sequence[PreparedArticle]
) -> list[PreparedArticle]:
    """The items whose guid (per origin) or canonical URL (per feed) is not stored yet."""
    where, params = sql.among("guid", sorted({item.article.guid for item in items}))
    query = f"SELECT guid FROM article WHERE origin = ? AND {where}"
    seen = {str(r[0]) for r in sql.rows(query, [origin, *params])}
    urls = sorted({i.article.canonical_url for i in items if i.article.canonical_url})
    seen_urls: set[str] = set()
    if feed_id is not None and urls:
        where, params = sql.among("canonical_url", urls)
        seen_urls = {
            str(r[0])
            for r in sql.rows(
                f"SELECT canonical_url FROM article WHERE feed_id = ? AND {where}",
                [feed_id, *params],
            )
        }
    fresh = []
    for item in items:
        data = item.article
        if data.guid in seen or (data.canonical_url and data.canonical_url in seen_urls):
            continue
        seen.add(data.guid)
        if data.canonical_url and feed_id is not None:
            seen_urls.add(data.canonical_url)
        fresh.append(item)
    return fresh


def _merged_through(sql: _Sql) -> int:
    """The newest article whose bands were merged into lsh_band (0: none yet)."""
    return int(sql.value("SELECT merged_through FROM lsh_band_state WHERE id = 1") or 0)


def _merge_recent_bands(sql: _Sql, *, newest: int) -> None:
    """Move lsh_band_recent into lsh_band once it holds more than RECENT_BAND_ARTICLES'.

    `newest` is the newest article id stored. Key order lets the insert fill each page of
    the large index once; the caller's transaction (which holds the ingest lock) makes
    the move atomic.
    """
    merged = _merged_through(sql)
    if newest - merged <= RECENT_BAND_ARTICLES:
        return
    sql.execute(
        "INSERT INTO lsh_band (key, article_id) "
        "SELECT key, article_id FROM lsh_band_recent ORDER BY key, article_id"
    )
    sql.execute("DELETE FROM lsh_band_recent")
    sql.execute("UPDATE lsh_band_state SET merged_through = ? WHERE id = 1", [newest])


def _alert_rows(
    placed: list[tuple[PreparedArticle, int, int]],
    rules: dict[int, bool],
    now: datetime,
) -> list[tuple[Any, ...]]:
    """One alert per (rule, story) matched in this batch; the earliest article of the
    batch carries it. Pairs already stored are skipped by the insert (the unique key)."""
    rows_out: dict[tuple[int, int], tuple[Any, ...]] = {}
    for item, article_id, story_id in placed:
        topics = [t.slug for t in item.tags]
        for match in item.matches:
            has_channels = rules.get(match.rule_id)
            if has_channels is None or (match.rule_id, story_id) in rows_out:
                continue
            rows_out[(match.rule_id, story_id)] = (
                match.rule_id,
                story_id,
                article_id,
                item.article.title,
                item.article.url,
                topics,
                list(match.matched),
                match.snippet,
                now,
                # An alert of a rule without channels is only stored, never sent.
                "pending" if has_channels else "none",
                0,
            )
    return list(rows_out.values())


@lru_cache(maxsize=1)
def _tables() -> dict[str, Any]:
    models: tuple[Any, ...] = (
        Article,
        ArticleSignature,
        LshBand,
        RecentLshBand,
        ArticleTopic,
        Alert,
    )
    return {str(model.__tablename__): model.__table__ for model in models}
