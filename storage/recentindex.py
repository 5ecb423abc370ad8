"""The near-duplicate bands of recently stored articles, in memory.

New articles' band keys go to `lsh_band_log`, one row per article, appended in id order,
so a commit writes a few pages there; only every 10,000 to 40,000 articles
(`storage.dedup.log_capacity`) are they merged into the large, key-ordered `lsh_band`.
Until then they are looked up here: each process keeps a `RecentIndex` of every article
stored after id `start` (the newest merged article when it was loaded), brought up to
date under the ingest lock by reading only the log rows added since
(`storage.dedup.sync_recent_index`).
A long run (`newswatch poll`) has an index of its own that keeps the articles it stored
even after a merge, so the candidates its preparation processes looked up before it
began (a `Probe`) and this index together cover every stored article, and its storing
thread runs no candidate query at all. The index a process shares among its ingests
empties itself after its own merge instead: a worker then holds at most the log's
articles.

Why (benchmarks/ingest.py, 1,000 x 50 poll): the earlier small key-ordered table for new
bands had every commit rewrite most of its pages, and each merge into `lsh_band` (every
2,500 articles) rewrite most of that table: band storage was ~4.2 s of the storing
thread's ~11.8 s.

Kept as a hash table in numpy arrays (~16 bytes per band row), the signatures, and the
rows added since the last `flush`: a 1,000 x 50 poll's peak memory grew by ~64 MB for
its 50,000 articles.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from itertools import chain

import numpy as np

# Past this many articles (~130 MB), the next sync starts again at the newest merged one.
RECENT_INDEX_ARTICLES = 100_000
# Distinct keys added since the last merge into the arrays, at most (~100 bytes each).
PENDING_ROWS = 200_000


class RecentIndex:
    """Bands and signatures of the stored articles after article id `start`.

    Made invalid (`valid=False`), it holds nothing until `reset`; `invalidate` makes it
    so again, e.g. when a transaction that added articles to it was rolled back. With
    `keeps_merged`, it keeps the articles its own ingests move into lsh_band (a long
    run's probes cover only those up to its start); otherwise such a move empties it.
    """

    def __init__(
        self,
        start: int = 0,
        *,
        max_articles: int = RECENT_INDEX_ARTICLES,
        valid: bool = True,
        keeps_merged: bool = False,
    ) -> None:
        self.start = start
        self.newest = start  # every article in (start, newest] is here
        self.valid = valid
        self.keeps_merged = keeps_merged
        self.max_articles = max_articles
        # Held while syncing and using the index: a process's threads share it.
        self.lock = threading.RLock()
        self.count = 0
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
        return self.valid and through >= self.start

    def reset(self, start: int) -> None:
        """Hold nothing, and be valid for the articles after `start` (to be added)."""
        self.invalidate()
        self.start = self.newest = start
        self.valid = True

    @property
    def last(self) -> tuple[int, bytes] | None:
        """(article id, signature) of the newest article held with bands, if any."""
        if not self._article_ids:
            return None
        return self._article_ids[-1], self._signatures[-1]

    def add(self, article_id: int, keys: Sequence[int], signature: bytes) -> None:
        """Hold a newly stored article (ids only grow)."""
        if not self.valid:
            return
        self.count += 1
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

    def candidates(
        self, keys: Sequence[int], limit: int, *, after: int | None = None
    ) -> list[tuple[int, int, bytes]]:
        """(shared bands, article id, signature) of the `limit` articles sharing most of
        `keys` (distinct), best first; with `after`, among those with a greater id."""
        return self.candidates_of_many([keys], limit, after=after)[0]

    def candidates_of_many(
        self, key_sets: Sequence[Sequence[int]], limit: int, *, after: int | None = None
    ) -> list[list[tuple[int, int, bytes]]]:
        """`candidates(keys, limit, after=after)` of each of `key_sets`, the arrays
        searched once for all: numpy's fixed cost per call was most of a single look-up
        (~64 us)."""
        if not self.valid:
            return [[] for _ in key_sets]
        # Slots are in id order: the articles after `after` are the slots from `first`.
        first = 0 if after is None else bisect_right(self._article_ids, after)
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
                if first:
                    hits &= self._slots[rows] >= first
                found = self._slots[rows[hits]].tolist()
                sets = np.repeat(owners, sizes)[hits].tolist()
                for number, slot in zip(sets, found, strict=True):
                    shared[number][slot] += 1
        if self._owner:
            owner, more = self._owner, self._more
            for counts, keys in zip(shared, key_sets, strict=True):
                for key in owner.keys() & keys:
                    if owner[key] >= first:
                        counts[owner[key]] += 1
                    if key in more:
                        counts.update(slot for slot in more[key] if slot >= first)
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
        """Stop answering (and free the memory) until the next `reset`."""
        self.valid = False
        self._keys, self._slots = np.empty(0, np.uint64), np.empty(0, np.int32)
        self._offsets = np.zeros(2, np.int32)
        self._owner, self._more = {}, {}
        self._article_ids, self._signatures = [], []
        self.count = 0
