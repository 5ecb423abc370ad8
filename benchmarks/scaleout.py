"""Ingest B through real Celery workers on a real Redis: entries/s, scaling, alert latency, RSS.

Starts ``/usr/bin/redis-server`` on a free loopback port and the feed server of
``benchmarks/_common.py`` (1,000 feeds x 50 entries, as in Ingest B of
``benchmarks/ingest.py``; ``--quick``: 100 feeds). For each database backend
(``--database``: SQLite, PostgreSQL on a throwaway cluster from ``tests/servers.py``, or
both, the default when PostgreSQL is installed) and each N in 1, 2, 4, on a fresh store
with one rule:

1. ``newswatch worker --concurrency N`` as a subprocess (NEWSWATCH_BROKER_URL=redis://...);
2. `tasks.jobs.schedule_due_feeds` is called once (in a subprocess, standing in for beat)
   and enqueues one ``fetch_feed`` per feed; entries/s = entries / (last feed's
   ``last_polled_at`` - the call's start);
3. alert latency: K feeds get a 2 s poll interval and a ticker calls
   ``schedule_due_feeds`` every second (beat's tick, shortened); every 0.5 s one feed's
   file is rewritten with a new entry matching the rule; latency = the alert row's
   ``created_at`` - the moment the file was replaced. It includes the wait for the next
   poll (<= 2 s) and the next tick (<= 1 s): that is what a user sees at that interval;
4. peak RSS of each worker process (psutil, sampled every 0.2 s) during step 2 (the
   database server's own processes are not counted).

The scaling factor is entries/s at N over entries/s at N=1 on the same backend, measured
in the same run.

Then, per backend, the same runs on a large store: one filled beforehand (untimed) with
``--large-store`` synthetic articles (default 1,000,000; ``--quick``: 100,000; 0 skips
it): the signatures and band keys of ``benchmarks/lookup.py``, all in ``lsh_band`` (on
SQLite by its `build_store`, on PostgreSQL by COPY), and article rows holding the BBC
articles' titles and texts in turn, so the store has the size of a real one (~2.2 KB of
text per article). Each concurrency of ``--large-store-workers`` (default 1 and 2) runs on
a fresh copy of it. The band log then grows to `storage.dedup.log_capacity` articles
(40,000 at 1M) in the workers before an ingest moves it into the large ``lsh_band``: each
run's time beside the fresh store's run at the same concurrency, its peak RSS, and the
moves the workers logged (articles, seconds under the ingest lock) are what a large store
costs.

    python benchmarks/scaleout.py [--corpora PATH] [--json PATH] [--quick] [--workers 1,2,4]
                                  [--database sqlite|postgresql|both] [--large-store N]
                                  [--large-store-workers 1,2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    DEFAULT_CORPORA,
    FeedServer,
    NewsArticle,
    backends,
    database_server,
    database_url,
    drop_database,
    epoch,
    fresh_database,
    load_bbc,
    machine,
    make_entries,
    newswatch_bin,
    newswatch_env,
    replace_file,
    rss_document,
    table,
    write_feeds,
    write_json,
)
from tests.servers import redis_server

MARKER = "zanzibarquux"
RULE_QUERY = f"{MARKER} OR election"
CHANGED_FEEDS = 20
CHANGE_EVERY = 0.5
FAST_INTERVAL = 2
TICK = 1.0

TICKER = """
import sys, time
import worker.app  # noqa: F401  (configures the Celery app the tasks use)
from tasks.jobs import schedule_due_feeds
ticks, every = int(sys.argv[1]), float(sys.argv[2])
for i in range(ticks):
    started = time.time()
    sent = schedule_due_feeds()
    print(started, sent, flush=True)
    if i + 1 < ticks:
        time.sleep(max(0.0, every - (time.time() - started)))
"""


def _setup_store(env: dict[str, str], urls: list[str]) -> None:
    """A fresh store with the feeds and the rule, through the library (untimed)."""
    code = (
        "import sys, json\n"
        "from worker.runtime import get_runtime\n"
        "from worker.bootstrap import initialize\n"
        "from storage.feeds import add_feeds\n"
        "from storage.rules import add_rule\n"
        "rt = get_runtime(); initialize(rt.settings, rt.engine)\n"
        "urls = json.load(sys.stdin)\n"
        "add_feeds(rt.engine, [(u, None) for u in urls], interval_seconds=900)\n"
        f"add_rule(rt.engine, name='bench', query={RULE_QUERY!r}, topics=[], channels=[])\n"
    )
    import json

    subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(urls),
        text=True,
        env=env,
        check=True,
    )


class _Probe:
    """The benchmark's own queries on a store, on either backend."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine

        args = {"timeout": 60} if url.startswith("sqlite") else {}
        self._engine = create_engine(url, connect_args=args)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of a query."""
        from sqlalchemy import text

        with self._engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]

    def one(self, sql: str) -> tuple[Any, ...]:
        """The first row of a query."""
        return self.rows(sql)[0]

    def run(self, sql: str) -> None:
        """Execute and commit a statement."""
        from sqlalchemy import text

        with self._engine.begin() as conn:
            conn.execute(text(sql))

    def close(self) -> None:
        """Close its connections."""
        self._engine.dispose()


def _tree_rss(proc: Any) -> list[int]:
    import psutil

    out = []
    try:
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                out.append(p.memory_info().rss)
    except psutil.Error:
        pass
    return out


_MOVE = re.compile(
    r"moved the band keys of (\d+) articles into lsh_band \(through article \d+\) "
    r"in ([\d.]+) s"
)


def _moves(log: Path) -> list[dict[str, float]]:
    """The band-log moves a worker logged: articles moved and seconds under the lock."""
    text = log.read_text(errors="replace")
    return [{"articles": int(n), "seconds": float(s)} for n, s in _MOVE.findall(text)]


def fill_store(backend: str, url: str, articles: int, corpora: Path) -> float:
    """Fill the empty store at `url` with `articles` synthetic articles, all in lsh_band:
    `benchmarks/lookup.py`'s signatures and band keys, and article rows with the BBC
    articles' titles and texts in turn (`filled_article_rows`). Returns the seconds it
    took."""
    import numpy as np

    from benchmarks.lookup import (
        FILLED_ARTICLE_COLUMNS,
        SEED,
        SyntheticCorpus,
        build_store,
        filled_article_rows,
        synthetic_rows,
    )
    from benchmarks.lookup import load_bbc as load_docs

    docs = load_docs(corpora)
    texts = [(doc.title, doc.body) for doc in docs]
    synth = SyntheticCorpus(docs, np.random.default_rng(SEED))
    if backend == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        seconds, _ = build_store(path, articles, [], synth, keep_values=False, article_texts=texts)
        return seconds
    from sqlalchemy import create_engine

    from storage.models import Article, ArticleSignature, LshBand
    from storage.schema import upgrade
    from storage.statements import Statements

    engine = create_engine(url)
    upgrade(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        sql = Statements(conn.dialect, conn.connection)
        # First: signatures refer to them.
        article_rows = filled_article_rows(articles, texts)
        while chunk := list(islice(article_rows, 20_000)):
            sql.insert_many(Article.__table__, FILLED_ARTICLE_COLUMNS, chunk)  # type: ignore[attr-defined]
        sql.execute("SELECT setval(pg_get_serial_sequence('article', 'id'), ?)", [articles])
        for ids, _, sigs, key_matrix in synthetic_rows(synth, 1, articles):
            sql.insert_many(
                ArticleSignature.__table__,  # type: ignore[attr-defined]
                ("article_id", "signature"),
                list(zip(ids.tolist(), sigs, strict=True)),
            )
            rows = {  # equal keys of one article (rare) are stored once, as ingest does
                (key, article_id)
                for keys, article_id in zip(key_matrix.tolist(), ids.tolist(), strict=True)
                for key in keys
            }
            sql.insert_many(LshBand.__table__, ("key", "article_id"), list(rows))  # type: ignore[attr-defined]
        sql.execute("UPDATE lsh_band_state SET merged_through = ? WHERE id = 1", [articles])
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    return time.perf_counter() - started


@contextlib.contextmanager
def store_copy(backend: str, filled_url: str, name: str, pg_url: str | None) -> Iterator[str]:
    """A copy of the filled store at `filled_url`, for one run; removed afterwards."""
    if backend == "sqlite":
        source = Path(filled_url.removeprefix("sqlite:///"))
        target = source.with_name(f"{name}.db")
        shutil.copyfile(source, target)
        try:
            yield f"sqlite:///{target}"
        finally:
            for path in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
                path.unlink(missing_ok=True)
        return
    if pg_url is None:
        raise ValueError("PostgreSQL run without a PostgreSQL server")
    template = filled_url.rsplit("/", 1)[1]
    url = fresh_database(pg_url, name, template=template)
    try:
        yield url
    finally:
        drop_database(pg_url, name)


def _wait_ready(log: Path, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and " ready." in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"worker not ready after {timeout} s; see {log}")


def run_one(
    n: int,
    backend: str,
    tmp: Path,
    server: FeedServer,
    names: list[str],
    entries: list[NewsArticle],
    redis_url: str,
    pg_url: str | None,
    timeout: float,
    filled: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """One worker with concurrency n on a fresh `backend` store: Ingest B, then alert latency.

    With `filled` (the URL of a store filled by `fill_store` and its article count), on
    that store instead.
    """
    import psutil
    import redis

    redis.Redis.from_url(redis_url).flushall()
    data_dir = tmp / (f"nw-{backend}-{n}" + ("-filled" if filled else ""))
    if filled is None:
        store_url = database_url(backend, data_dir, pg_url, f"scaleout_{n}")
    else:
        store_url = filled[0]
    urls = [server.url(x) for x in names]
    env = newswatch_env(data_dir, NEWSWATCH_BROKER_URL=redis_url, NEWSWATCH_DATABASE_URL=store_url)
    _setup_store(env, urls)
    log = tmp / f"worker-{backend}-{n}.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [newswatch_bin(), "worker", "--concurrency", str(n), "--loglevel", "INFO"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(log)
        wproc = psutil.Process(worker.pid)
        ticker = subprocess.run(
            [sys.executable, "-c", TICKER, "1", "0"],
            env=env,
            capture_output=True,
            text=True,
        )
        if ticker.returncode:
            raise RuntimeError(f"schedule_due_feeds failed: {ticker.stderr[-2000:]}")
        started = float(ticker.stdout.split()[0])
        peak_proc = peak_total = 0
        db = _Probe(store_url)
        deadline = time.time() + timeout
        while time.time() < deadline:
            rss = _tree_rss(wproc)
            if rss:
                peak_proc, peak_total = max(peak_proc, *rss), max(peak_total, sum(rss))
            done = db.one("SELECT count(*) FROM feed WHERE last_polled_at IS NOT NULL")
            if done[0] >= len(names):
                break
            time.sleep(0.2)
        last, polled = db.one("SELECT max(last_polled_at), count(last_polled_at) FROM feed")
        seconds = epoch(last) - started
        stored = db.one("SELECT count(*) FROM article WHERE origin LIKE 'feed:%'")[0]
        errors = db.one("SELECT count(*) FROM feed WHERE last_error IS NOT NULL")[0]
        merged, logged = db.one(
            "SELECT (SELECT merged_through FROM lsh_band_state WHERE id = 1), "
            "(SELECT count(*) FROM lsh_band_log)"
        )
        result: dict[str, Any] = {
            "database": backend,
            "workers": n,
            "filled_articles": filled[1] if filled else 0,
            "merged_through": merged,
            "band_log_articles": logged,
            "moves": _moves(log),
            "feeds_polled": polled,
            "seconds": seconds,
            "entries": len(names) * 50,
            "entries_per_s": len(names) * 50 / seconds,
            "stored": stored,
            "feed_errors": errors,
            "peak_rss_mb_per_process": peak_proc / 2**20,
            "peak_rss_mb_all_processes": peak_total / 2**20,
        }
        result["latency"] = _latency(db, env, server, names, entries)
        db.close()
        return result
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)


def _latency(
    db: _Probe,
    env: dict[str, str],
    server: FeedServer,
    names: list[str],
    entries: list[NewsArticle],
) -> dict[str, Any]:
    """Change CHANGED_FEEDS feeds one by one; time from each change to its alert row."""
    step = max(1, len(names) // CHANGED_FEEDS)
    chosen = list(range(0, len(names), step))[:CHANGED_FEEDS]
    ids = [i + 1 for i in chosen]  # feeds were added in order: id = index + 1
    marks = ",".join(str(i) for i in ids)
    db.run(
        f"UPDATE feed SET interval_seconds = {FAST_INTERVAL}, "
        f"next_poll_at = '2000-01-01 00:00:00' WHERE id IN ({marks})"
    )
    duration = CHANGED_FEEDS * CHANGE_EVERY + 15
    ticker = subprocess.Popen(
        [sys.executable, "-c", TICKER, str(int(duration / TICK)), str(TICK)],
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    changed: dict[str, float] = {}
    try:
        for k, i in enumerate(chosen):
            fresh = NewsArticle(
                f"change/{k}",
                f"{MARKER.title()} update {k}",
                (
                    f"A {MARKER} report, number {k}.",
                    *entries[-1 - k].paragraphs,
                ),
            )
            items = [(f"change-{k}", fresh)] + [
                (f"b{i}-{j}", entries[i * 50 + j]) for j in range(49)
            ]
            doc = rss_document(f"Feed {i}", f"http://bench/{i}", items, i)
            replace_file(server.folder / names[i], doc)
            changed[f"change-{k}"] = time.time()
            time.sleep(CHANGE_EVERY)
        deadline = time.time() + 20
        rows: list[tuple[Any, ...]] = []
        while time.time() < deadline:
            rows = db.rows(
                "SELECT article.guid, alert.created_at FROM alert JOIN article "
                "ON article.id = alert.article_id WHERE article.guid LIKE 'change-%'"
            )
            if len(rows) >= len(changed):
                break
            time.sleep(0.2)
    finally:
        ticker.terminate()
        ticker.wait(10)
    lat = sorted(epoch(created) - changed[guid] for guid, created in rows if guid in changed)
    return {
        "changed": len(changed),
        "alerted": len(lat),
        "poll_interval_s": FAST_INTERVAL,
        "tick_s": TICK,
        "p50_s": statistics.median(lat) if lat else None,
        "p95_s": lat[min(len(lat) - 1, int(len(lat) * 0.95))] if lat else None,
        "max_s": lat[-1] if lat else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the scale-out benchmark, print the table, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    ap.add_argument("--quick", action="store_true", help="100 feeds instead of 1,000")
    ap.add_argument("--workers", default="1,2,4", help="worker concurrencies to run")
    ap.add_argument("--timeout", type=float, default=300.0, help="per run, seconds")
    ap.add_argument(
        "--database",
        choices=["sqlite", "postgresql", "both"],
        default="both",
        help="store backend(s); both = SQLite, then PostgreSQL if installed (default)",
    )
    ap.add_argument(
        "--large-store",
        type=int,
        default=None,
        help="articles filled into the store of each backend's large-store run; 0 skips "
        "them (default 1,000,000; with --quick 100,000)",
    )
    ap.add_argument(
        "--large-store-workers",
        default="1,2",
        help="worker concurrencies run on the large store, each on a fresh copy of it",
    )
    args = ap.parse_args(argv)
    large = args.large_store
    large_workers = [int(x) for x in args.large_store_workers.split(",") if x.strip()]
    if large is None:
        large = 100_000 if args.quick else 1_000_000
    if not shutil.which("redis-server"):
        print("scaleout: redis-server not installed; skipped", file=sys.stderr)
        return 0
    databases = backends(args.database)

    feeds = 100 if args.quick else 1000
    articles = load_bbc(args.corpora)
    # The last CHANGED_FEEDS mixes are never served at first: they are the new stories.
    entries = make_entries(articles, feeds * 50 + CHANGED_FEEDS)
    results: dict[str, Any] = {
        "benchmark": "scaleout",
        "machine": machine(),
        "quick": args.quick,
        "databases": databases,
    }
    runs = []
    with tempfile.TemporaryDirectory(prefix="nw-scaleout-") as tmpname:
        tmp = Path(tmpname)
        with redis_server() as redis_url, database_server(databases) as pg_url:
            names = write_feeds(tmp / "feeds", entries, feeds, 50, prefix="b")
            with FeedServer(tmp / "feeds") as server:
                for backend in databases:
                    for n in (int(x) for x in args.workers.split(",")):
                        print(
                            f"scaleout: {feeds} feeds x 50 entries, {backend}, "
                            f"worker --concurrency {n} ...",
                            flush=True,
                        )
                        run = run_one(
                            n, backend, tmp, server, names, entries, redis_url, pg_url, args.timeout
                        )
                        # The latency phase rewrote some feeds: restore them for the next run.
                        names = write_feeds(tmp / "feeds", entries, feeds, 50, prefix="b")
                        runs.append(run)
                        print(f"  {run['seconds']:.1f} s, {run['entries_per_s']:,.0f} entries/s")
                for backend in databases if large else []:
                    filled = database_url(backend, tmp / "filled", pg_url, "scaleout_filled")
                    print(f"scaleout: filling a {backend} store with {large:,} articles ...")
                    fill_s = fill_store(backend, filled, large, args.corpora)
                    print(f"  {fill_s:.0f} s", flush=True)
                    for n in large_workers:
                        print(f"  worker --concurrency {n} on a copy of it ...", flush=True)
                        with store_copy(backend, filled, f"scaleout_filled_{n}", pg_url) as url:
                            run = run_one(
                                n,
                                backend,
                                tmp,
                                server,
                                names,
                                entries,
                                redis_url,
                                pg_url,
                                args.timeout,
                                filled=(url, large),
                            )
                        run["fill_seconds"] = fill_s
                        runs.append(run)
                        names = write_feeds(tmp / "feeds", entries, feeds, 50, prefix="b")
                        print(f"  {run['seconds']:.1f} s, {run['entries_per_s']:,.0f} entries/s")
    for backend in databases:
        mine = [r for r in runs if r["database"] == backend]
        for r in mine:
            # A filled store's run is compared with the fresh store's at its concurrency.
            peer = next(
                (m for m in mine if not m["filled_articles"] and m["workers"] == r["workers"]),
                None,
            )
            if r["filled_articles"]:
                r["scaling"] = None
                r["seconds_vs_fresh"] = r["seconds"] / peer["seconds"] if peer else None
            else:
                r["scaling"] = r["entries_per_s"] / mine[0]["entries_per_s"]
    results["runs"] = runs
    print()
    print(
        table(
            [
                "database",
                "store before",
                "workers",
                "seconds",
                "entries/s",
                "scaling",
                "alert p50 s",
                "alert p95 s",
                "peak RSS/proc MB",
                "RSS all MB",
                "errors",
            ],
            [
                (
                    r["database"],
                    f"{r['filled_articles']:,} articles" if r["filled_articles"] else "empty",
                    r["workers"],
                    r["seconds"],
                    r["entries_per_s"],
                    r["scaling"] if r["scaling"] is not None else "-",
                    r["latency"]["p50_s"],
                    r["latency"]["p95_s"],
                    r["peak_rss_mb_per_process"],
                    r["peak_rss_mb_all_processes"],
                    r["feed_errors"],
                )
                for r in runs
            ],
        )
    )
    print(
        f"alert latency: {CHANGED_FEEDS} changed feeds polled every {FAST_INTERVAL} s, "
        f"scheduler tick {TICK} s; goal: peak RSS < 300 MB per worker process"
    )
    for r in runs:
        if r["filled_articles"] and r.get("seconds_vs_fresh"):
            moves = ", ".join(f"{m['articles']:,} in {m['seconds']:.2f} s" for m in r["moves"])
            print(
                f"large {r['database']} store ({r['filled_articles']:,} articles): "
                f"{r['seconds_vs_fresh']:.2f}x the fresh store's time with "
                f"--concurrency {r['workers']}; "
                f"band-log moves under the lock: {moves or 'none'}"
            )
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
