"""Near-duplicate look-up cost as the store grows, beside datasketch MinHashLSH.

    python benchmarks/lookup.py [--corpora PATH] [--sizes 10000,100000,1000000]
                                [--redis-sizes 10000] [--queries 400]
                                [--json benchmarks/results/lookup.json] [--quick]

``--quick`` measures 10k and 100k only: the 1M store alone takes 10-15 minutes to build.

For each size N a SQLite file store is created with the project's migrations and filled
(executemany) with N fingerprints: the 2,225 real BBC articles plus synthetic ones. The
synthetic signatures keep the corpus's chance overlaps, which are what produce false
candidates: each synthetic article draws its "common" shingles (those in >= 3 BBC
articles of one category) from that category's pool, weighted by document frequency,
and the rest are fresh shingles whose MinHash minimum is sampled directly.

Queries are copies of stored BBC articles: "light" (1-2% of words replaced, exact
Jaccard >= 0.8 to the original) and "syndicated" (benchmarks/dedup_quality.py's
variants). Measured per size: median / p95 time of `storage.dedup.find_original`
(the real SQL through SQLAlchemy, on an engine with the project's connection settings,
`storage.engine.create_engine_for`), recall of the original, false candidates per query
(signatures fetched that are not the original), and bytes per article on disk for the
index (article_signature + lsh_band pages). datasketch MinHashLSH with the same 32x2
banding runs on the same signatures in memory and, for the sizes in --redis-sizes, on a
redis-server started for the run.

After the look-ups, per size, the cost of one move of lsh_band_log into lsh_band
(`storage.dedup.merge_band_log`, as ingest makes it under the ingest lock, of as many
synthetic articles as the log then holds, `log_capacity` + 1): seconds including the
commit, and bytes the process wrote (Linux), also per 10,000 articles moved. The keys
are hashes, so a move touches pages all over lsh_band: its cost grows with the store.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from datasketch import MinHash

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dedup_quality import edit_words, load_bbc, make_variant  # noqa: E402
from sqlalchemy import create_engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from storage.dedup import (  # noqa: E402
    find_original,
    log_capacity,
    merge_band_log,
    near_duplicate_candidates,
    pack_band_keys,
)
from storage.engine import create_engine_for  # noqa: E402
from storage.schema import upgrade  # noqa: E402
from storage.statements import Statements  # noqa: E402
from tasks.fingerprint import (  # noqa: E402
    DEFAULT_PARAMS,
    fingerprint,
    index_keys_matrix,
    permuted,
    shingle_hashes,
    shingles,
    signatures,
    words,
)

SEED = 20240612
THRESHOLD = 0.5
CHUNK = 2000
_MAX = np.uint64(0xFFFFFFFF)


class SyntheticCorpus:
    """Generates MinHash signatures with the BBC corpus's shingle statistics."""

    def __init__(self, docs: Sequence[Any], rng: np.random.Generator) -> None:
        params = DEFAULT_PARAMS
        self.rng = rng
        token_lists = [words(d.body) for d in docs]
        categories = sorted({d.name.split("/")[0] for d in docs})
        self.sizes: list[int] = []
        self.generic_counts: list[int] = []
        self.doc_category: list[int] = []
        pool_index: dict[bytes, int] = {}
        self.pools: list[tuple[np.ndarray, np.ndarray]] = []
        sets = [shingles(t, params.shingle_size) for t in token_lists]
        for c, category in enumerate(categories):
            members = [i for i, d in enumerate(docs) if d.name.startswith(category + "/")]
            df = Counter(g for i in members for g in sets[i])
            # Sorted: a set of bytes iterates in a per-process (hash-seeded) order.
            generic = {g: n for g, n in sorted(df.items()) if n >= 3}
            ids = np.array([pool_index.setdefault(g, len(pool_index)) for g in generic])
            weights = np.array(list(generic.values()), dtype=np.float64)
            self.pools.append((ids, weights / weights.sum()))
            for i in members:
                self.sizes.append(len(sets[i]))
                self.generic_counts.append(sum(1 for g in sets[i] if g in generic))
                self.doc_category.append(c)
        # The permuted hash of every pool shingle, as fingerprint() computes it.
        hashes = np.empty(len(pool_index), dtype=np.uint64)
        for gram, k in pool_index.items():
            hashes[k] = shingle_hashes(gram.decode().split(" "), params.shingle_size)[0]
        self.table = permuted(hashes, params.num_perm, params).astype(np.uint64)

    def _fresh_min(self, counts: np.ndarray, width: int) -> np.ndarray:
        # The minimum of m uniform 32-bit values, sampled directly: 1 - U**(1/m).
        u = self.rng.random((len(counts), width))
        m = np.maximum(counts, 1)[:, None].astype(np.float64)
        values = np.floor((1.0 - u ** (1.0 / m)) * 4294967296.0).astype(np.uint64)
        return np.where(counts[:, None] > 0, values, _MAX)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """n synthetic (full values, lead values, shingle counts, lead counts)."""
        params = DEFAULT_PARAMS
        template = self.rng.integers(0, len(self.sizes), n)
        sizes = np.array(self.sizes)[template]
        generic = np.array(self.generic_counts)[template]
        cats = np.array(self.doc_category)[template]
        width = int(generic.max()) if n else 0
        draws = np.zeros((n, max(width, 1)), dtype=np.int64)
        for c, (ids, p) in enumerate(self.pools):
            rows = np.nonzero(cats == c)[0]
            if len(rows):
                draws[rows] = ids[self.rng.choice(len(ids), size=(len(rows), draws.shape[1]), p=p)]
        valid = np.arange(draws.shape[1])[None, :] < generic[:, None]
        lead_total = np.minimum(sizes, params.lead_words - params.shingle_size + 1)
        lead_generic = np.minimum(generic, np.round(lead_total * generic / np.maximum(sizes, 1)))
        lead_valid = np.arange(draws.shape[1])[None, :] < lead_generic[:, None]
        vals = self.table[draws]  # (n, width, num_perm)
        full = np.where(valid[:, :, None], vals, _MAX).min(axis=1)
        full = np.minimum(full, self._fresh_min(sizes - generic, params.num_perm))
        lead = np.where(lead_valid[:, :, None], vals[:, :, : params.lead_perm], _MAX).min(axis=1)
        lead = np.minimum(
            lead, self._fresh_min((lead_total - lead_generic).astype(np.int64), params.lead_perm)
        )
        return full.astype(np.uint32), lead.astype(np.uint32), sizes, lead_total


def _pack(full: np.ndarray, lead: np.ndarray, sizes: np.ndarray, leads: np.ndarray) -> list[bytes]:
    header = np.stack([np.minimum(sizes, 0xFFFF), leads], axis=1).astype("<u2")
    body = np.concatenate([full, lead], axis=1) & 0xFFFF
    rows = np.concatenate([header, body.astype("<u2")], axis=1)
    return [r.tobytes() for r in rows]


def synthetic_rows(
    synth: SyntheticCorpus, first_id: int, count: int
) -> Iterator[tuple[np.ndarray, np.ndarray, list[bytes], np.ndarray]]:
    """`count` synthetic articles from id `first_id` on, CHUNK at a time: (ids, full
    values, packed signatures, band keys (one row per article))."""
    done = 0
    while done < count:
        n = min(CHUNK, count - done)
        full, lead, sizes, leads = synth.batch(n)
        ids = np.arange(first_id + done, first_id + done + n)
        yield ids, full, _pack(full, lead, sizes, leads), index_keys_matrix(full, lead)
        done += n


# One article row per stored fingerprint (see `filled_article_rows`).
FILLED_ARTICLE_COLUMNS = (
    "id",
    "origin",
    "guid",
    "title",
    "text",
    "text_hash",
    "created_at",
    "story_id",
)
FILLED_CREATED_AT = datetime(2024, 1, 1, tzinfo=UTC)
_FILLED_INSERT = (
    f"INSERT INTO article ({', '.join(FILLED_ARTICLE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(FILLED_ARTICLE_COLUMNS))})"
)


def filled_article_rows(count: int, texts: Sequence[tuple[str, str]]) -> Iterator[tuple[Any, ...]]:
    """Article rows for ids 1..`count` (`FILLED_ARTICLE_COLUMNS`), each its own story.

    Title and text are taken in turn from `texts` (real articles, so the store holds
    text of real size; none if empty). Guid and text hash are distinct per row, and the
    hash is never a real SHA-256: no fed article is an exact duplicate of a filled one,
    so what ingest finds in the store comes from the synthetic signatures alone.
    """
    for i in range(1, count + 1):
        title, text = texts[i % len(texts)] if texts else ("", "")
        yield (i, "local", f"filled-{i}", title, text, f"filled-{i}", FILLED_CREATED_AT, i)


def build_store(
    path: Path,
    size: int,
    real: list[tuple[np.ndarray, np.ndarray, bytes, tuple[int, ...]]],
    synth: SyntheticCorpus,
    *,
    keep_values: bool = True,
    article_texts: Sequence[tuple[str, str]] | None = None,
) -> tuple[float, list[np.ndarray]]:
    """Create the store with the migrations and fill it; returns (seconds, full values).

    The full values are kept for datasketch unless `keep_values` is false (they take
    256 MB at 1M articles). With `article_texts`, every fingerprint also gets an article
    row (`filled_article_rows`), so that ingest can run on the store: its next article
    ids then follow the filled ones.
    """
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    started = time.perf_counter()
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-1000000")
    kept: list[np.ndarray] = []
    article_id = 0
    for full, _, sig, keys in real[:size]:
        article_id += 1
        con.execute("INSERT INTO article_signature VALUES (?, ?)", (article_id, sig))
        con.executemany(
            "INSERT INTO lsh_band (key, article_id) VALUES (?, ?)",
            [(k, article_id) for k in set(keys)],
        )
        if keep_values:
            kept.append(full[None, :])
    for ids, full, sigs, key_matrix in synthetic_rows(synth, article_id + 1, size - article_id):
        con.executemany(
            "INSERT INTO article_signature VALUES (?, ?)", zip(ids.tolist(), sigs, strict=True)
        )
        band_rows = np.stack(
            [key_matrix.ravel(), np.repeat(ids, key_matrix.shape[1])], axis=1
        ).tolist()
        # Equal keys of one article (rare) are stored once, as ingest does.
        con.executemany("INSERT OR IGNORE INTO lsh_band (key, article_id) VALUES (?, ?)", band_rows)
        if keep_values:
            kept.append(full)
        article_id = int(ids[-1])
    if article_texts is not None:
        rows = filled_article_rows(article_id, article_texts)
        # Times as SQLAlchemy stores them on SQLite (text).
        con.executemany(
            _FILLED_INSERT, ((*r[:6], r[6].strftime("%Y-%m-%d %H:%M:%S.%f"), r[7]) for r in rows)
        )
    # Every article's keys are in lsh_band, as after ingest's moves from lsh_band_log.
    con.execute("UPDATE lsh_band_state SET merged_through = ? WHERE id = 1", (article_id,))
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return time.perf_counter() - started, kept


def _bytes_written() -> int | None:
    """Bytes this process has written to storage so far (Linux), else None."""
    try:
        io = Path("/proc/self/io").read_text()
    except OSError:
        return None
    return next(int(line.split()[1]) for line in io.splitlines() if line.startswith("write_"))


def measure_move(path: Path, size: int, synth: SyntheticCorpus) -> dict[str, Any]:
    """Log as many synthetic articles after the store's `size` as make ingest move them
    (`log_capacity` + 1), then time the move into lsh_band as ingest makes it: one
    transaction, with the project's connection settings (`create_engine_for`)."""
    count = log_capacity(size) + 1
    logged: list[tuple[int, bytes]] = []
    # In chunks, as the store was built: one batch of 40,000 took over 20 GB.
    for ids, _, _, key_matrix in synthetic_rows(synth, size + 1, count):
        logged += zip(ids.tolist(), map(pack_band_keys, key_matrix.tolist()), strict=True)
    con = sqlite3.connect(path)  # no foreign keys: the store has no article rows
    con.executemany("INSERT INTO lsh_band_log (article_id, keys) VALUES (?, ?)", logged)
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    engine = create_engine_for(f"sqlite:///{path}")
    try:
        written = _bytes_written()
        started = time.perf_counter()
        with engine.begin() as conn:
            moved = merge_band_log(Statements(conn.dialect, conn.connection), newest=size + count)
        seconds = time.perf_counter() - started
        after = _bytes_written()
    finally:
        engine.dispose()
    assert moved, "the log was not moved"
    return {
        "articles": count,
        "seconds": seconds,
        "mb_written": None if written is None or after is None else (after - written) / 1e6,
    }


def index_bytes(path: Path) -> dict[str, int]:
    """Bytes of the index tables' pages (dbstat), or of the file if dbstat is missing."""
    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "SELECT name, SUM(pgsize) FROM dbstat "
            "WHERE name IN ('article_signature', 'lsh_band') GROUP BY name"
        ).fetchall()
        return {name: int(total) for name, total in rows}
    except sqlite3.OperationalError:
        return {"file": path.stat().st_size}
    finally:
        con.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[int | None]:
    """A private redis-server on a free port, or None when none is installed."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        yield None
        return
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="lookup-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def bench_datasketch(
    values: list[np.ndarray],
    queries: list[tuple[int, np.ndarray]],
    storage_config: dict[str, Any] | None,
) -> dict[str, Any]:
    """Insert every signature into MinHashLSH(32 bands x 2 rows); time the queries."""
    from datasketch import MinHashLSH

    params = DEFAULT_PARAMS
    kwargs: dict[str, Any] = {"num_perm": params.num_perm, "params": (params.bands, params.rows)}
    if storage_config:
        kwargs["storage_config"] = storage_config
    lsh = MinHashLSH(**kwargs)
    started = time.perf_counter()
    with lsh.insertion_session(buffer_size=50_000) as session:
        article_id = 0
        for chunk in values:
            for row in chunk:
                article_id += 1
                session.insert(
                    article_id,
                    MinHash(num_perm=params.num_perm, hashvalues=row, scheme="affine32"),
                    check_duplication=False,
                )
    build = time.perf_counter() - started
    times, hits, cands = [], 0, 0
    for original, q in queries:
        m = MinHash(num_perm=params.num_perm, hashvalues=q, scheme="affine32")
        t0 = time.perf_counter()
        found = lsh.query(m)
        times.append(time.perf_counter() - t0)
        hits += original in found
        cands += len(found) - (original in found)
    return {
        "build_s": build,
        "median_ms": statistics.median(times) * 1e3,
        "p95_ms": float(np.quantile(times, 0.95)) * 1e3,
        "candidate_recall": hits / len(queries),
        "false_candidates_per_query": cands / len(queries),
    }


def run(
    corpora: Path, sizes: Sequence[int], redis_sizes: Sequence[int], n_queries: int
) -> dict[str, Any]:
    """Every size: build, measure the SQL look-up and datasketch beside it."""
    rng = random.Random(SEED)
    docs = load_bbc(corpora)
    vocabulary = [w for d in docs[::7] for w in words(d.body)]
    real = []
    for d in docs:
        fp = fingerprint(d.body)
        # The in-memory 32-bit values, for datasketch; the store keeps 16-bit ones.
        sigs = signatures(d.body)
        real.append((sigs.full, sigs.lead, fp.signature, fp.band_keys))
    picks = rng.sample(range(len(docs)), n_queries)
    light, syndicated = [], []
    for i in picks:
        body = edit_words(docs[i].body, rng.uniform(0.01, 0.02), rng, vocabulary)
        light.append((i + 1, body))
        syndicated.append((i + 1, make_variant(docs[i], rng, vocabulary)[1]))
    # Duplicates inside the corpus (byte-identical pairs) are right answers too.
    sig_of = {i + 1: r[2] for i, r in enumerate(real)}
    synth = SyntheticCorpus(docs, np.random.default_rng(SEED))
    results = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="lookup-") as tmp:
            path = Path(tmp) / "store.sqlite"
            build_s, values = build_store(path, size, real, synth)
            disk = index_bytes(path)
            # The project's own connection settings (page cache, WAL, locking).
            engine = create_engine_for(f"sqlite:///{path}")
            row: dict[str, Any] = {
                "size": size,
                "build_s": build_s,
                "index_bytes": disk,
                "bytes_per_article": sum(disk.values()) / size,
            }
            with Session(engine) as session:
                for label, queries in (("light", light), ("syndicated", syndicated)):
                    fps = [(orig, fingerprint(body)) for orig, body in queries]
                    for _, fp in fps[:20]:  # warm the page cache and statement cache
                        find_original(session, fp, THRESHOLD)
                    times, right, false_cands = [], 0, 0
                    for orig, fp in fps:
                        t0 = time.perf_counter()
                        found = find_original(session, fp, THRESHOLD)
                        times.append(time.perf_counter() - t0)
                        ok = {orig} | {
                            j for j, s in sig_of.items() if j != orig and s == sig_of[orig]
                        }
                        right += bool(found and found[0] in ok)
                        cands = {r[0] for r in near_duplicate_candidates(session, fp.band_keys)}
                        false_cands += len(cands - ok)
                    row[label] = {
                        "queries": len(fps),
                        "median_ms": statistics.median(times) * 1e3,
                        "p95_ms": float(np.quantile(times, 0.95)) * 1e3,
                        "recall": right / len(fps),
                        "false_candidates_per_query": false_cands / len(fps),
                    }
                plan = (
                    session.connection()
                    .exec_driver_sql(
                        "EXPLAIN QUERY PLAN SELECT article_id FROM lsh_band WHERE key IN (1, 2)"
                    )
                    .all()
                )
                row["plan"] = [str(p[-1]) for p in plan]
            engine.dispose()
            # Before datasketch: its 1M-article index in memory pushed the store out of
            # the OS page cache, and the move read it back from disk (10.8 s, not 4.5).
            row["move"] = measure_move(path, size, synth)
            light_values = [(orig, signatures(body).full) for orig, body in light]
            row["datasketch_memory"] = bench_datasketch(values, light_values, None)
            if size in redis_sizes:
                with redis_server() as port:
                    if port is not None:
                        config = {
                            "type": "redis",
                            "basename": f"lookup{size}".encode(),
                            "redis": {"host": "127.0.0.1", "port": port},
                        }
                        row["datasketch_redis"] = bench_datasketch(values, light_values, config)
            results.append(row)
            print_row(row)
    return {"threshold": THRESHOLD, "seed": SEED, "sizes": results}


def print_row(row: dict[str, Any]) -> None:
    """One size's figures as table lines."""
    disk = row["index_bytes"]
    n = row["size"]
    parts = ", ".join(f"{k} {v / n:.0f}" for k, v in disk.items())
    print(
        f"\nN={n:>9,}  build {row['build_s']:.1f} s  "
        f"index {row['bytes_per_article']:.0f} B/article ({parts})"
    )
    print(f"  {'engine':<26} {'median ms':>9} {'p95 ms':>8} {'recall':>7} {'false cand/q':>12}")
    for label in ("light", "syndicated"):
        r = row[label]
        print(
            f"  {'sqlite find_original ' + label:<26} {r['median_ms']:>9.3f} {r['p95_ms']:>8.3f} "
            f"{r['recall']:>7.4f} {r['false_candidates_per_query']:>12.2f}"
        )
    for label in ("datasketch_memory", "datasketch_redis"):
        if label in row:
            r = row[label]
            print(
                f"  {label + ' (light)':<26} {r['median_ms']:>9.3f} {r['p95_ms']:>8.3f} "
                f"{r['candidate_recall']:>7.4f} {r['false_candidates_per_query']:>12.2f}"
                f"  (build {r['build_s']:.1f} s; recall = candidate found)"
            )
    move = row["move"]
    written = "" if move["mb_written"] is None else f", {move['mb_written']:,.0f} MB written"
    per = move["seconds"] / move["articles"] * 10_000
    moved = f"{move['articles']:,} logged articles"
    print(
        f"  move of {moved} into lsh_band: {move['seconds']:.2f} s{written}"
        f" ({per:.2f} s per 10,000 articles)"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry point; returns the result so a run-all script can collect it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--redis-sizes", default="10000")
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--quick", action="store_true", help="sizes 10000,100000 only")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.quick:
        sizes = [size for size in sizes if size <= 100_000]
    redis_sizes = [int(s) for s in args.redis_sizes.split(",") if s]
    result = run(args.corpora, sizes, redis_sizes, args.queries)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
