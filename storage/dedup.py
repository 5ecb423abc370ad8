"""Near-duplicate look-ups: which stored article, if any, a new one copies.

The stored side of the MinHash LSH index (`tasks.fingerprint` computes the band keys):
ranked candidate queries over the band tables (`candidates`, `candidates_of_many`),
look-ups made before the ingest lock (`probe_candidates`), the in-memory index of a
long run's own articles (`start_run_index`), the moves of new bands into the large
table (`merge_recent_bands`), and `DedupLookup`, which `storage.articles.ingest` asks
for each article of a batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage.runindex import RunIndex
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
    sharing a band, among those up to article id `through` at least. Ingest then looks
    only at the articles stored after `through` (`DedupLookup.find`).
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
    large: bool = True,
) -> list[tuple[int, int, bytes]]:
    """(shared bands, article_id, signature) of the top-ranked stored articles.

    With `after` (`upto`), among the articles with a greater (no greater) id only;
    `large=False` leaves lsh_band out, for when none of those was merged into it.
    That probe of the large table is most of a look-up, and what a `Probe` saves the
    ingest lock.
    """
    bands, params = _bands_sql(*sql.among("key", keys), after, upto, large)
    query = _CANDIDATES_SQL.format(bands=bands, limit=MAX_CANDIDATES)
    rows = sql.rows(query, params)
    return [(int(r[1]), int(r[0]), bytes(r[2])) for r in rows if r[2] is not None]


def candidates_of_many(
    sql: Statements,
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
    if sql.qmark:
        return [candidates(sql, k, after=after, upto=upto, large=large) for k in key_sets]
    if len(key_sets) > MANY_CANDIDATES_CHUNK:
        return [
            rows
            for start in range(0, len(key_sets), MANY_CANDIDATES_CHUNK)
            for rows in candidates_of_many(
                sql,
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
    query = _MANY_CANDIDATES_SQL.format(bands=bands, limit=MAX_CANDIDATES)
    for i, article_id, shared, signature in sql.rows(query, [numbers, keys, *params]):
        if signature is not None:
            found[i].append((int(shared), int(article_id), bytes(signature)))
    for rows in found:
        rows.sort(key=_shared_bands, reverse=True)
    return found


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

    def __init__(self, sql: Statements, threshold: float, index: RunIndex | None = None) -> None:
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
        self._ranked: dict[tuple[int | None, tuple[int, ...]], list[tuple[int, int, bytes]]] = {}

    def prefetch(self, items: Sequence[PreparedArticle]) -> None:
        """Rank ahead, all at once, the stored candidates the batch's look-ups will need.

        The run's index searches its arrays once for the whole batch, and the band tables
        are queried through `candidates_of_many` (on PostgreSQL one statement instead of
        one per article). The batch's own articles are written (and added to the index)
        after the loop, so what is stored does not change in between. Call after
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
        """The stored candidates of each key set: among every stored article, or, after a
        probe, among those stored after its `through` (in the run's index if it has them)."""
        if through is not None and self._index is not None and self._index.covers(through):
            return self._index.candidates_of_many(key_sets, MAX_CANDIDATES)
        large = through is None or self._merged_after(through)
        return candidates_of_many(self._sql, key_sets, after=through, large=large)

    def _merged_after(self, through: int) -> bool:
        """Whether lsh_band holds bands of articles stored after `through`."""
        if self._merged_through is None:
            self._merged_through = merged_through(self._sql)
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
    lookup = DedupLookup(Statements.of(session), threshold)
    lookup.preload_hashes([fp.text_hash])
    return lookup.find(fp, text)


def near_duplicate_candidates(
    session: Session, band_keys: Sequence[int]
) -> list[tuple[int, bytes]]:
    """(article_id, signature) of the stored articles sharing most bands with `band_keys`.

    Ranking by shared bands keeps a true copy (which shares many) inside MAX_CANDIDATES
    even when a common band value brings in many unrelated articles.
    """
    rows = candidates(Statements.of(session), sorted(set(band_keys)))
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
            sql = Statements(engine.dialect, connection)
            # First: ids are taken under the ingest lock and committed in order, so the
            # queries below see every article up to `seen` (and maybe a few more).
            seen = through
            if seen is None:
                seen = newest_article(sql)
            key_sets = [sorted(set(items[i].fingerprint.band_keys)) for i in wanted]
            found = candidates_of_many(sql, key_sets, upto=through)
            for i, rows in zip(wanted, found, strict=True):
                out[i] = replace(items[i], probe=Probe(seen, tuple(rows)))
        finally:
            connection.close()
    except Exception as exc:  # never worse than no probe
        log.warning("near-duplicate probe failed, looking up under the lock instead: %s", exc)
        return list(items)
    return out


def newest_article(sql: Statements) -> int:
    """The id of the newest stored article (0 for none), as `sql`'s transaction sees it."""
    return int(sql.value("SELECT coalesce(max(id), 0) FROM article") or 0)


def newest_article_id(engine: Engine) -> int:
    """The id of the newest stored article (0 for none): a `RunIndex` starts there."""
    with engine.connect() as conn:
        return newest_article(Statements(conn.dialect, conn.connection))


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


def load_run_index(sql: Statements, index: RunIndex) -> None:
    """Give `index` every stored article (see `start_run_index`), under the ingest lock."""
    signatures = sql.rows("SELECT article_id, signature FROM article_signature ORDER BY article_id")
    bands = sql.rows(
        "SELECT article_id, key FROM lsh_band UNION ALL SELECT article_id, key FROM lsh_band_recent"
    )
    index.load(signatures, bands, newest_article(sql))


def merged_through(sql: Statements) -> int:
    """The newest article whose bands were merged into lsh_band (0: none yet)."""
    return int(sql.value("SELECT merged_through FROM lsh_band_state WHERE id = 1") or 0)


def merge_recent_bands(sql: Statements, *, newest: int) -> None:
    """Move lsh_band_recent into lsh_band once it holds more than RECENT_BAND_ARTICLES'.

    `newest` is the newest article id stored. Key order lets the insert fill each page of
    the large index once; the caller's transaction (which holds the ingest lock) makes
    the move atomic.
    """
    merged = merged_through(sql)
    if newest - merged <= RECENT_BAND_ARTICLES:
        return
    sql.execute(
        "INSERT INTO lsh_band (key, article_id) "
        "SELECT key, article_id FROM lsh_band_recent ORDER BY key, article_id"
    )
    sql.execute("DELETE FROM lsh_band_recent")
    sql.execute("UPDATE lsh_band_state SET merged_through = ? WHERE id = 1", [newest])
