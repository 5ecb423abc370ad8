"""The near-duplicate bands of the articles one process stored during a long run.

`newswatch poll` stores thousands of articles in a row, and each look-up asked the
database for candidates among everything stored: the ranked band query was ~40% of the
storing thread's time in a 1,000 x 50 poll (benchmarks/ingest.py). The articles stored
before the poll began are looked up once, in the preparation processes (a `Probe`);
the ones the poll stored itself are here, in memory, and found without a query.

Kept as a hash table in numpy arrays (~16 bytes per band row), the signatures, and the
rows added since the last `flush`: a 1,000 x 50 poll's peak memory grew by ~64 MB for
its 50,000 articles. The index only answers for what it holds: ingest checks under its
lock that the newest article in the store is the newest one here (`check`); anything
else (another writer, a deletion, a failed commit, too many articles) switches it off,
and the look-ups go back to SQL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import chain

import numpy as np

# At most this many articles are held (~130 MB); past it the look-ups use SQL again.
RUN_INDEX_ARTICLES = 100_000
# Distinct keys added since the last merge into the arrays, at most (~100 bytes each).
PENDING_ROWS = 200_000


class RunIndex:
    """Bands and signatures of the articles stored after article id `start`.

    Made with `loaded=False`, it is to hold every stored article (start 0): its owner
    calls `load` with them before the first look-up (`storage.articles.ingest`).
    """

    def __init__(
        self, start: int, *, max_articles: int = RUN_INDEX_ARTICLES, loaded: bool = True
    ) -> None:
        self.start = start
        self.newest = start  # every article in (start, newest] is here
        self.valid = True
        self.loaded = loaded
        self._max_articles = max_articles
        self._count = 0
        # Articles with bands get a slot: their id and signature, in the order added.
        self._article_ids: list[int] = []
        self._signatures: list[bytes] = []
        # Merged rows, as a hash table: sorted keys (as unsigned, so that the top bits
        # name the bucket), their slots, and where each bucket starts.
        self._keys = np.empty(0, np.uint64)
        self._slots = np.empty(0, np.int32)
        self._shift = 64
        self._offsets = np.zeros(2, np.int32)
        # Rows added since the last flush: key -> its first slot, and the rare others.
        self._owner: dict[int, int] = {}
        self._more: dict[int, list[int]] = {}

    def covers(self, through: int) -> bool:
        """Whether this index holds every article stored after id `through`."""
        return self.valid and self.loaded and through >= self.start

    def check(self, newest_stored: int) -> None:
        """Switch off unless `newest_stored` (the store's max id, under the ingest lock)
        is the newest article here: someone else stored or deleted articles meanwhile."""
        if newest_stored != self.newest:
            self.invalidate()

    def load(
        self,
        signatures: Sequence[tuple[int, bytes]],
        bands: Sequence[tuple[int, int]],
        newest: int,
    ) -> None:
        """Take the stored articles at once: (article id, signature) in id order, their
        (article id, band key) rows, and the newest article id in the store."""
        self.loaded = True
        if len(signatures) > self._max_articles:
            self.invalidate()
            return
        self._article_ids = [int(aid) for aid, _ in signatures]
        self._signatures = [bytes(signature) for _, signature in signatures]
        self._count = len(signatures)
        self.newest = newest
        if not bands:
            return
        rows = np.array(bands, np.int64).reshape(-1, 2)
        known = np.array(self._article_ids, np.int64)
        slots = np.searchsorted(known, rows[:, 0])
        has_signature = (slots < len(known)) & (
            known[np.minimum(slots, len(known) - 1)] == rows[:, 0]
        )
        self._merge(rows[has_signature, 1].view(np.uint64), slots[has_signature].astype(np.int32))

    def add(self, article_id: int, keys: Sequence[int], signature: bytes) -> None:
        """Hold a newly stored article (ids only grow)."""
        if not self.valid:
            return
        if self._count >= self._max_articles:
            self.invalidate()
            return
        self._count += 1
        self.newest = article_id
        if not keys:
            return
        slot = len(self._article_ids)
        self._article_ids.append(article_id)
        self._signatures.append(signature)
        distinct = set(keys)
        taken = distinct & self._owner.keys()
        for key in taken:
            self._more.setdefault(key, []).append(slot)
        self._owner.update(dict.fromkeys(distinct - taken, slot))
        if len(self._owner) >= PENDING_ROWS:
            self.flush()

    def candidates(self, keys: Sequence[int], limit: int) -> list[tuple[int, int, bytes]]:
        """(shared bands, article id, signature) of the `limit` articles sharing most of
        `keys` (distinct), best first."""
        return self.candidates_of_many([keys], limit)[0]

    def candidates_of_many(
        self, key_sets: Sequence[Sequence[int]], limit: int
    ) -> list[list[tuple[int, int, bytes]]]:
        """`candidates(keys, limit)` of each of `key_sets`, the arrays searched once for
        all: numpy's fixed cost per call was most of a single look-up (~64 us)."""
        if not self.valid:
            return [[] for _ in key_sets]
        shared: list[Counter[int]] = [Counter() for _ in key_sets]  # slot -> bands shared
        lengths = [len(keys) for keys in key_sets]
        if len(self._keys) and sum(lengths):
            wanted = np.fromiter(chain.from_iterable(key_sets), np.int64, sum(lengths))
            wanted = wanted.view(np.uint64)
            owners = np.repeat(np.arange(len(key_sets)), lengths)
            buckets = (wanted >> np.uint64(self._shift)).astype(np.intp)
            lo, hi = self._offsets[buckets], self._offsets[buckets + 1]
            sizes = hi - lo
            total = int(sizes.sum())
            if total:
                # Every row of the keys' buckets, then those whose key is the one wanted.
                rows = np.arange(total) + np.repeat(lo - (np.cumsum(sizes) - sizes), sizes)
                hits = self._keys[rows] == np.repeat(wanted, sizes)
                found = self._slots[rows[hits]].tolist()
                sets = np.repeat(owners, sizes)[hits].tolist()
                for number, slot in zip(sets, found, strict=True):
                    shared[number][slot] += 1
        if self._owner:
            owner, more = self._owner, self._more
            for counts, keys in zip(shared, key_sets, strict=True):
                for key in owner.keys() & keys:
                    counts[owner[key]] += 1
                    if key in more:
                        counts.update(more[key])
        ids, signatures = self._article_ids, self._signatures
        return [
            [(n, ids[slot], signatures[slot]) for slot, n in counts.most_common(limit)]
            for counts in shared
        ]

    def flush(self) -> None:
        """Merge the rows added since the last flush into the hash table.

        Only every PENDING_ROWS keys (~5,000 articles): each merge copies the table.
        """
        if not self._owner:
            return
        keys = list(self._owner)
        slots = list(self._owner.values())
        for key, others in self._more.items():
            keys += [key] * len(others)
            slots += others
        self._owner, self._more = {}, {}
        self._merge(np.array(keys, np.int64).view(np.uint64), np.array(slots, np.int32))

    def _merge(self, keys: np.ndarray, slots: np.ndarray) -> None:
        # Insert (key, slot) rows into the sorted arrays and rebuild the bucket offsets.
        order = np.argsort(keys, kind="stable")
        keys, slots = keys[order], slots[order]
        at = np.searchsorted(self._keys, keys, "right")
        self._keys = np.insert(self._keys, at, keys)
        self._slots = np.insert(self._slots, at, slots)
        # One to two rows per bucket: 2**bits > rows / 2.
        bits = max(1, (len(self._keys) // 2).bit_length())
        self._shift = 64 - bits
        counts = np.bincount(
            (self._keys >> np.uint64(self._shift)).astype(np.intp), minlength=1 << bits
        )
        self._offsets = np.zeros(len(counts) + 1, np.int32)
        np.cumsum(counts, out=self._offsets[1:])

    def invalidate(self) -> None:
        """Stop answering (and free the memory): look-ups go back to the database."""
        self.valid = False
        self._keys, self._slots = np.empty(0, np.uint64), np.empty(0, np.int32)
        self._offsets = np.zeros(2, np.int32)
        self._owner, self._more = {}, {}
        self._article_ids, self._signatures = [], []
        self._count = 0
