"""End-to-end ingest over local HTTP: `newswatch poll` beside lemon24/reader, same feeds, same run.

Ingest A: 200 feeds x 10 entries, the real BBC News articles of ``corpora/news/bbc``
(entry ``i*10+j`` is article ``i*10+j`` in category/file order), each feed an RSS 2.0
file with the article as HTML paragraphs, served by a local ThreadingHTTPServer (own
process, HTTP/1.1 keep-alive, strong ETags). From a fresh store with one rule, timed:

- newswatch in-process: ``worker.bootstrap.poll_now`` with the collector thresholds set
  (what ``newswatch poll`` runs);
- newswatch CLI: ``newswatch poll`` in a subprocess (interpreter start included);
- reader 3.26: ``make_reader(path)``, ``add_feed`` each, ``update_feeds(workers=4)``.

Ingest B: 1,000 feeds x 50 entries: the 2,225 real articles, then 47,775 generated
*mixes* (sentences drawn with a seeded RNG from the whole corpus; see
``benchmarks/_common.py``), so that each entry is a new story for the
near-duplicate detector instead of a repeat of one of the 2,225 (a repeat would be a
duplicate to newswatch, cheaper than new content and not what reader sees). Timed: the
first pass (all new) and an unchanged pass (every feed made due again; all 304).

Both scenarios also run ``newswatch poll`` as a subprocess on a store of its own, and
report that process's peak resident memory (VmHWM, read while it runs; its preparation
processes are separate processes, not counted). ``--no-cli`` skips those runs.

newswatch does more than reader per entry: normalize, exact and near-duplicate look-up,
topic tagging, rule matching, alerts; reader fetches, parses and stores. The ratio is
newswatch time / reader time in this run (goal <= 1.0).
Beside wall time, each run reports its CPU time: user + system time of all its processes
(newswatch's preparation processes included), the feed server's apart, printed on its own
per run. It says what a system would cost on cores of its own, and divided by this
machine's cores, the least wall time it could take here. (A PostgreSQL server's CPU is not
counted: compare CPU on SQLite.)

newswatch's store is SQLite by default; ``--database postgresql`` runs it on a throwaway
PostgreSQL cluster (``tests/servers.py``), ``both`` on each in turn. reader stays on SQLite.

    python benchmarks/ingest.py [--corpora PATH] [--json PATH] [--quick] [--only A|B]
                                [--database sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    DEFAULT_CORPORA,
    FeedServer,
    backends,
    cpu_seconds,
    database_server,
    database_url,
    load_bbc,
    machine,
    make_entries,
    newswatch_bin,
    newswatch_env,
    table,
    write_feeds,
    write_json,
)

RULE_NAME = "bench"
RULE_QUERY = '"prime minister" OR election OR (profits AND NOT football)'


def _newswatch_store(data_dir: Path, urls: list[str], db_url: str) -> tuple[Any, Any]:
    """A fresh newswatch store with the feeds and one rule; returns (settings, engine)."""
    from storage.engine import get_engine
    from storage.feeds import add_feeds
    from storage.rules import add_rule
    from worker.bootstrap import initialize
    from worker.runtime import reset_runtime
    from worker.settings import Settings

    reset_runtime()
    settings = Settings(data_dir=data_dir, database_url=db_url, allow_private_addresses=True)
    engine = get_engine(settings.resolved_database_url())
    initialize(settings, engine)
    add_feeds(engine, [(u, None) for u in urls], interval_seconds=900)
    add_rule(engine, name=RULE_NAME, query=RULE_QUERY, topics=[], channels=[])
    return settings, engine


def _counts(engine: Any) -> dict[str, int]:
    from sqlalchemy import text

    with engine.connect() as conn:
        return {
            "articles": conn.execute(text("SELECT count(*) FROM article")).scalar_one(),
            "duplicates": conn.execute(
                text("SELECT count(*) FROM article WHERE duplicate_of IS NOT NULL")
            ).scalar_one(),
            "alerts": conn.execute(text("SELECT count(*) FROM alert")).scalar_one(),
            "feed_errors": conn.execute(
                text("SELECT count(*) FROM feed WHERE last_error IS NOT NULL")
            ).scalar_one(),
        }


def _make_due(engine: Any) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("UPDATE feed SET next_poll_at = '2000-01-01 00:00:00'"))


def newswatch_inprocess(
    data_dir: Path, urls: list[str], unchanged: bool, db_url: str
) -> dict[str, Any]:
    """Time poll_now from a fresh store (and, if asked, a second, unchanged pass)."""
    from worker.bootstrap import poll_now
    from worker.gcpolicy import tune_garbage_collector

    tune_garbage_collector()  # as `newswatch poll` does

    settings, engine = _newswatch_store(data_dir, urls, db_url)
    t0, cpu0, children0 = time.perf_counter(), cpu_seconds(), cpu_seconds(own=False)
    thread0 = time.thread_time()
    reports, _ = poll_now(settings, engine, [])
    first, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    out: dict[str, Any] = {"seconds": first, "cpu_seconds": cpu, "feeds": len(reports)}
    # The calling thread stores (and hands work out); download threads fetch; the
    # preparation processes parse, normalize, fingerprint, tag and match.
    out["storing_thread_cpu_seconds"] = time.thread_time() - thread0
    out["preparation_cpu_seconds"] = cpu_seconds(own=False) - children0
    out.update(_counts(engine), entries=sum(r.entries for r in reports))
    if unchanged:
        _make_due(engine)
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        reports, _ = poll_now(settings, engine, [])
        out["unchanged_seconds"] = time.perf_counter() - t0
        out["unchanged_cpu_seconds"] = cpu_seconds() - cpu0
        out["unchanged_statuses"] = sorted({str(r.status) for r in reports})
    engine.dispose()
    return out


def peak_rss_mb(pid: int) -> float | None:
    """The peak resident memory of a running process (VmHWM), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def newswatch_cli(data_dir: Path, urls: list[str], db_url: str) -> dict[str, Any]:
    """Time `newswatch poll` in a subprocess (setup through the CLI, untimed), and read
    the peak memory of that process (its preparation processes apart) while it runs."""
    env = newswatch_env(data_dir, NEWSWATCH_DATABASE_URL=db_url)
    exe = newswatch_bin()
    opml = data_dir.parent / f"{data_dir.name}.opml"
    body = "".join(f'<outline type="rss" text="f{i}" xmlUrl="{u}"/>' for i, u in enumerate(urls))
    opml.write_text(f'<?xml version="1.0"?><opml version="2.0"><body>{body}</body></opml>')
    run = {"env": env, "check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    subprocess.run([exe, "init"], **run)  # type: ignore[call-overload]
    subprocess.run([exe, "feeds", "import", str(opml)], **run)  # type: ignore[call-overload]
    subprocess.run([exe, "rules", "add", RULE_NAME, "--query", RULE_QUERY], **run)  # type: ignore[call-overload]
    t0, cpu0 = time.perf_counter(), cpu_seconds(own=False)
    poll = subprocess.Popen([exe, "poll", "--format", "json"], env=env, stdout=subprocess.DEVNULL)
    peak = None
    while poll.poll() is None:
        peak = max(peak or 0.0, peak_rss_mb(poll.pid) or 0.0)
        time.sleep(0.05)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds(own=False) - cpu0
    if poll.returncode != 0:
        raise SystemExit(f"newswatch poll failed with exit code {poll.returncode}")
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": round(peak, 1) if peak else None}


def reader_run(path: Path, urls: list[str], unchanged: bool, workers: int = 4) -> dict[str, Any]:
    """Time reader's update_feeds(workers=4) on the same feeds."""
    from reader import make_reader

    reader = make_reader(str(path))
    for url in urls:
        reader.add_feed(url)
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    reader.update_feeds(workers=workers, scheduled=False)
    out: dict[str, Any] = {"seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds() - cpu0}
    out["entries"] = reader.get_entry_counts().total
    if unchanged:
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        reader.update_feeds(workers=workers, scheduled=False)
        out["unchanged_seconds"] = time.perf_counter() - t0
        out["unchanged_cpu_seconds"] = cpu_seconds() - cpu0
    reader.close()
    return out


def _figures(
    run: dict[str, Any], reader: dict[str, Any], entries: int | None, prefix: str = ""
) -> tuple[Any, ...]:
    """Table cells of one run: seconds, entries/s, ratio vs reader, CPU s, CPU ratio
    (CPU time as the module docstring defines it)."""
    seconds, cpu = run[f"{prefix}seconds"], run[f"{prefix}cpu_seconds"]
    rate = entries / seconds if entries else None
    return (
        seconds,
        rate,
        seconds / reader[f"{prefix}seconds"],
        cpu,
        cpu / reader[f"{prefix}cpu_seconds"],
    )


def _server_share(result: dict[str, Any]) -> str:
    """How much CPU the feed server, on the same cores, took during each system's run."""
    runs = [("reader", result["reader"])]
    for db, nw in result["newswatch_by_database"].items():
        runs.append((f"newswatch ({db})", nw))
        if "cli" in nw:
            runs.append((f"newswatch CLI ({db})", nw["cli"]))
    shares = ", ".join(f"{name} {run['server_cpu_seconds']:.1f} s" for name, run in runs)
    return f"feed server CPU during each system's passes: {shares}"


def _timed(label: str, server: FeedServer, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one timed system; adds the CPU time the feed server spent meanwhile."""
    print(f"  {label} ...", end="", flush=True)
    served = server.cpu_seconds()
    result = fn()
    result["server_cpu_seconds"] = server.cpu_seconds() - served
    print(f" {result['seconds']:.2f} s, {result['cpu_seconds']:.1f} CPU s", flush=True)
    return result


def scenario(
    name: str,
    tmp: Path,
    entries: list[Any],
    feeds: int,
    per_feed: int,
    *,
    unchanged: bool,
    cli: bool,
    databases: list[str],
    pg_url: str | None,
) -> dict[str, Any]:
    """Serve `feeds` x `per_feed` entries and time newswatch (on each database) and reader.

    `newswatch` holds the first database's result (with its `database`), and
    `newswatch_by_database` every database's.
    """
    folder = tmp / f"feeds-{name}"
    names = write_feeds(folder, entries, feeds, per_feed, prefix=name.lower())
    print(f"Ingest {name}: {feeds} feeds x {per_feed} entries")
    with FeedServer(folder) as server:
        urls = [server.url(n) for n in names]
        by_db: dict[str, dict[str, Any]] = {}
        for db in databases:
            data_dir = tmp / f"nw-{name}-{db}"
            db_url = database_url(db, data_dir, pg_url, f"ingest_{name.lower()}")
            by_db[db] = _timed(
                f"newswatch poll (in-process, {db})",
                server,
                partial(newswatch_inprocess, data_dir, urls, unchanged, db_url),
            )
            by_db[db]["database"] = db
            if cli:
                cli_dir = tmp / f"cli-{name}-{db}"
                cli_url = database_url(db, cli_dir, pg_url, f"ingest_cli_{name.lower()}")
                by_db[db]["cli"] = _timed(
                    f"newswatch poll (CLI subprocess, {db})",
                    server,
                    partial(newswatch_cli, cli_dir, urls, cli_url),
                )
        rd = _timed(
            "reader update_feeds(workers=4)",
            server,
            lambda: reader_run(tmp / f"{name}.sqlite", urls, unchanged),
        )
    for nw in by_db.values():
        nw["ratio"] = nw["seconds"] / rd["seconds"]
        if "cli" in nw:
            nw["ratio_cli"] = nw["cli"]["seconds"] / rd["seconds"]
        if unchanged:
            nw["unchanged_ratio"] = nw["unchanged_seconds"] / rd["unchanged_seconds"]
    first = by_db[databases[0]]
    out: dict[str, Any] = {
        "feeds": feeds,
        "entries_per_feed": per_feed,
        "newswatch": first,
        "newswatch_by_database": by_db,
        "reader": rd,
        "ratio": first["ratio"],
    }
    if "cli" in first:
        out["newswatch_cli"] = first["cli"]
        out["ratio_cli"] = first["ratio_cli"]
    if unchanged:
        out["unchanged_ratio"] = first["unchanged_ratio"]
    return out


def main(argv: list[str] | None = None) -> int:
    """Run Ingest A and B, print the table, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (50x10 and 100x50)")
    ap.add_argument("--only", choices=["A", "B"], default=None)
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI subprocess timing")
    ap.add_argument(
        "--database",
        choices=["sqlite", "postgresql", "both"],
        default="sqlite",
        help="newswatch's store (reader always uses SQLite); both = SQLite, then PostgreSQL",
    )
    args = ap.parse_args(argv)
    databases = backends(args.database)

    articles = load_bbc(args.corpora)
    a_feeds, b_feeds = (50, 100) if args.quick else (200, 1000)
    results: dict[str, Any] = {
        "benchmark": "ingest",
        "machine": machine(),
        "quick": args.quick,
        "databases": databases,
    }
    with (
        tempfile.TemporaryDirectory(prefix="nw-ingest-") as tmpname,
        database_server(databases) as pg_url,
    ):
        tmp = Path(tmpname)
        os.environ.setdefault("NEWSWATCH_ALLOW_PRIVATE_ADDRESSES", "1")
        if args.only in (None, "A"):
            results["A"] = scenario(
                "A",
                tmp,
                articles,
                a_feeds,
                10,
                unchanged=False,
                cli=not args.no_cli,
                databases=databases,
                pg_url=pg_url,
            )
        if args.only in (None, "B"):
            entries = make_entries(articles, b_feeds * 50)
            results["B"] = scenario(
                "B",
                tmp,
                entries,
                b_feeds,
                50,
                unchanged=True,
                cli=not args.no_cli,
                databases=databases,
                pg_url=pg_url,
            )

    rows = []
    memory: list[str] = []
    for key in ("A", "B"):
        r = results.get(key)
        if not r:
            continue
        n = r["feeds"] * r["entries_per_feed"]
        rd = r["reader"]
        label = f"{key}: {r['feeds']}x{r['entries_per_feed']} new"
        for db, nw in r["newswatch_by_database"].items():
            rows.append((label, f"newswatch poll ({db})", *_figures(nw, rd, n)))
            if "cli" in nw:
                rows.append((label, f"newswatch poll CLI ({db})", *_figures(nw["cli"], rd, n)))
                memory.append(
                    f"{key}: `newswatch poll` ({db}) peak RSS {nw['cli']['peak_rss_mb']} MB"
                )
        rows.append((label, "reader (sqlite)", *_figures(rd, rd, n)))
        if "unchanged_seconds" in rd:
            label = f"{key}: {r['feeds']} feeds unchanged (304)"
            for db, nw in r["newswatch_by_database"].items():
                rows.append(
                    (label, f"newswatch poll ({db})", *_figures(nw, rd, None, "unchanged_"))
                )
            rows.append((label, "reader (sqlite)", *_figures(rd, rd, None, "unchanged_")))
    print()
    headers = ["scenario", "system (store)", "seconds", "entries/s", "ratio vs reader"]
    print(table([*headers, "CPU s", "CPU vs reader"], rows))
    for key in ("A", "B"):
        if key in results:
            for db, nw in results[key]["newswatch_by_database"].items():
                print(
                    f"{key}: newswatch ({db}) stored {nw['articles']} articles "
                    f"({nw['duplicates']} duplicates), "
                    f"{nw['alerts']} alerts, {nw['feed_errors']} feed errors"
                )
            print(f"{key}: reader stored {results[key]['reader']['entries']} entries")
            print(f"{key}: {_server_share(results[key])}")
            for db, nw in results[key]["newswatch_by_database"].items():
                storing, prepared = nw["storing_thread_cpu_seconds"], nw["preparation_cpu_seconds"]
                rest = nw["cpu_seconds"] - storing - prepared
                print(
                    f"{key}: newswatch ({db}) in-process CPU: storing thread {storing:.1f} s "
                    f"(of {nw['seconds']:.1f} s wall), preparation processes {prepared:.1f} s, "
                    f"other threads (downloads, results) {rest:.1f} s"
                )
    print("\n".join(memory))
    print("goals: A ratio <= 1.0; B new <= 10 s; B unchanged <= 1 s")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
