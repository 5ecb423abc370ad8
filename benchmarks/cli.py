"""Latency of `newswatch` commands, beside lemon24/reader's CLI on the same feeds.

An analyst's query is a short-lived process: interpreter start, imports, one or two
queries, output, shutdown. This times whole commands, as a shell runs them, on a store
filled the way Ingest A fills it (benchmarks/ingest.py): 200 local feeds x 10 real BBC
News articles from ``corpora/news/bbc``, polled once with three keyword rules. reader
3.26 gets the same 200 feeds, updated once.

Timed, round-robin (each command once per round, so drift hits all alike), median and
90th percentile over the rounds:

- ``python -c pass``: the interpreter alone, the floor of any Python command;
- reader: ``python -m reader --db PATH list feeds --json`` (200 feeds);
- newswatch: ``feeds list`` (the same 200 feeds), ``alerts list`` (50 newest),
  ``alerts list --search``, ``articles search``, ``stats`` (all ``--format json``),
  and ``--help``.

newswatch runs as ``python -m worker.cli`` with this checkout on PYTHONPATH, so the
script times any checkout it is run from. The ratio column is a command's median over
reader's ``list feeds`` median in the same run.

    python benchmarks/cli.py [--corpora PATH] [--rounds N] [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    DEFAULT_CORPORA,
    FeedServer,
    load_bbc,
    machine,
    newswatch_env,
    table,
    write_feeds,
    write_json,
)

FEEDS = 200
PER_FEED = 10
ROUNDS = 15
RULES = {
    "politics": '"prime minister" OR election',
    "markets": "profits AND NOT football",
    "tech": "broadband OR (mobile AND phone)",
}
SEARCH = "election"


def newswatch_store(data_dir: Path, urls: list[str]) -> dict[str, str]:
    """Fill a newswatch store through its CLI (untimed); returns the commands' environment."""
    env = newswatch_env(data_dir)
    opml = data_dir.parent / "feeds.opml"
    body = "".join(f'<outline type="rss" text="f{i}" xmlUrl="{u}"/>' for i, u in enumerate(urls))
    opml.write_text(f'<?xml version="1.0"?><opml version="2.0"><body>{body}</body></opml>')
    setup = [["init"], ["feeds", "import", str(opml)]]
    setup += [["rules", "add", name, "--query", query] for name, query in RULES.items()]
    setup.append(["poll", "--format", "json"])
    for argv in setup:
        subprocess.run(
            [sys.executable, "-m", "worker.cli", *argv],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    return env


def reader_store(path: Path, urls: list[str]) -> None:
    """The same feeds in a reader database, updated once (untimed)."""
    from reader import make_reader

    reader = make_reader(str(path))
    for url in urls:
        reader.add_feed(url)
    reader.update_feeds(workers=4, scheduled=False)
    reader.close()


def time_commands(
    commands: dict[str, tuple[list[str], dict[str, str] | None]], rounds: int
) -> dict[str, list[float]]:
    """Wall seconds of each command per round; a command that fails stops the run."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, (argv, env) in commands.items():
            start = time.perf_counter()
            done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            times[name].append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed: {done.stderr.decode(errors='replace')}")
    return times


def summary(times: dict[str, list[float]], baseline: str) -> list[dict[str, Any]]:
    """Median, p90 and ratio to the baseline's median, per command."""
    base = statistics.median(times[baseline])
    rows = []
    for name, values in times.items():
        ordered = sorted(values)
        median = statistics.median(ordered)
        rows.append(
            {
                "command": name,
                "median_s": round(median, 4),
                "p90_s": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 4),
                "ratio_to_reader_list_feeds": round(median / base, 3),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Build both stores, time the commands, print a table, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    ap.add_argument("--quick", action="store_true", help="5 rounds")
    args = ap.parse_args(argv)
    rounds = 5 if args.quick else args.rounds

    articles = load_bbc(args.corpora)
    with tempfile.TemporaryDirectory(prefix="nw-cli-") as tmpname:
        tmp = Path(tmpname)
        names = write_feeds(tmp / "feeds", articles, FEEDS, PER_FEED, prefix="a")
        with FeedServer(tmp / "feeds") as server:
            urls = [server.url(n) for n in names]
            print(f"filling stores: {FEEDS} feeds x {PER_FEED} BBC articles ...", flush=True)
            env = newswatch_store(tmp / "newswatch", urls)
            reader_db = tmp / "reader.sqlite"
            reader_store(reader_db, urls)

        def newswatch(*words: str) -> tuple[list[str], dict[str, str]]:
            return [sys.executable, "-m", "worker.cli", *words], env

        commands: dict[str, tuple[list[str], dict[str, str] | None]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], None),
            "reader list feeds": (
                [sys.executable, "-m", "reader", "--db", str(reader_db), "list", "feeds", "--json"],
                None,
            ),
            "newswatch feeds list": newswatch("feeds", "list", "--format", "json"),
            "newswatch alerts list": newswatch("alerts", "list", "--format", "json"),
            "newswatch alerts list --search": newswatch(
                "alerts", "list", "--search", SEARCH, "--format", "json"
            ),
            "newswatch articles search": newswatch(
                "articles", "search", SEARCH, "--format", "json"
            ),
            "newswatch stats": newswatch("stats", "--format", "json"),
            "newswatch --help": newswatch("--help"),
        }
        print(f"timing {len(commands)} commands x {rounds} rounds ...", flush=True)
        times = time_commands(commands, rounds)

    rows = summary(times, "reader list feeds")
    print()
    print(
        table(
            ["command", "median s", "p90 s", "/ reader list feeds"],
            [
                [r["command"], r["median_s"], r["p90_s"], r["ratio_to_reader_list_feeds"]]
                for r in rows
            ],
        )
    )
    write_json(
        args.json,
        {
            "benchmark": "cli",
            "machine": machine(),
            "feeds": FEEDS,
            "entries_per_feed": PER_FEED,
            "rounds": rounds,
            "commands": rows,
            "seconds": times,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
