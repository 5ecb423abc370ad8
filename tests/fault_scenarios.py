"""Fault scenarios, shared by `tests/test_faults.py` (which asserts) and
`benchmarks/faults.py` (which prints the table).

Each scenario runs real processes in a `tests.faultlab.Lab` and returns a `Row`: what
went in, what the store holds afterwards, what was delivered, how long recovery took,
and the raw facts the tests check. Scenarios measure; they do not assert, so the report
shows a broken guarantee as a number instead of stopping at the first one.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.faultlab import Lab, ManagedPostgres, lab, rss_items, sockets_to, wait_until
from tests.servers import rss

RULE = '"cost sharing" AND troops'
# A Standard Webhooks secret (base64 key after the whsec_ prefix).
SECRET = "whsec_c2VjcmV0LWtleS0xMjM0NTY3OA=="


def _verify(hit: Any, secret: str) -> bool:
    """What a receiver does: recompute the signature over the bytes it received."""
    from tasks.deliver import sign

    try:
        timestamp = int(hit.headers["webhook-timestamp"])
        expected = sign(secret, hit.headers["webhook-id"], timestamp, hit.body)
    except (KeyError, ValueError):
        return False
    return expected in hit.headers.get("webhook-signature", "").split()


@dataclass
class Row:
    """One line of the fault table, plus the facts behind it."""

    scenario: str
    backend: str
    entries_in: int = 0
    stored: int = 0
    duplicates: int = 0
    alerts: int = 0
    deliveries: int = 0
    recover_s: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def table_row(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("facts")
        out["problems"] = len(self.problems)
        return out


def _finish(row: Row, world: Lab, *, hook: str | None = None) -> Row:
    counts = world.counts()
    row.stored = counts["stored"]
    row.duplicates = counts["duplicates"]
    row.alerts = counts["alerts"]
    hits = world.web.delivered(hook)
    row.deliveries = len(hits)
    row.facts.update(counts)
    row.facts["delivered_ids"] = dict(Counter(h.msg_id for h in hits))
    row.problems = world.log_problems()
    return row


# --------------------------------------------------------------------------- 1. races


def concurrent_copies(root: Path, backend: str, pg: ManagedPostgres | None) -> Row:
    """4 outlets serve copies of the same 6 stories at the same moment to 4 worker processes.

    Every GET is held at the server until all four arrived, so the four fetches store
    their copies concurrently. Expected: 6 originals, 18 duplicates, 6 alerts, 6 sends.
    On PostgreSQL the worker processes' sockets are inspected while they run.
    """
    outlets, stories = ["alpha", "bravo", "charlie", "delta"], list(range(1, 7))
    row = Row("copies race (2 workers x 2 procs)", backend, entries_in=len(outlets) * len(stories))
    with lab(root, backend=backend, pg=pg) as world:
        import threading

        world.web.barrier = threading.Barrier(len(outlets))
        for i, outlet in enumerate(outlets):
            path = f"/{outlet}.xml"
            # One outlet adds a sentence: a near-duplicate rather than an exact copy.
            extra = "Reporting by the bravo wire desk in Seoul." if outlet == "bravo" else ""
            world.web.server.put(path, rss(rss_items(stories, outlet, extra=extra), title=outlet))
            world.web.barrier_paths.add(path)
            world.add_feed(path)
            del i
        world.add_rule("costs", RULE, hook="/hook")
        workers = [world.worker("w1", 2), world.worker("w2", 2)]
        start = time.monotonic()
        world.send("newswatch.schedule_due_feeds")
        wait_until(
            lambda: (
                world.counts()["stored"] >= row.entries_in
                and len(world.web.delivered()) >= len(stories)
            ),
            90,
            "all copies stored and alerts delivered",
        )
        row.recover_s = round(time.monotonic() - start, 1)
        time.sleep(1.5)  # anything extra (a second alert, a resend) would show up now
        row.facts["stories"] = world.counts()["stories"]
        row.facts["fetchers"] = sorted({pid for _, pid, _ in world.web.fetchers})
        if backend == "postgresql" and pg is not None:
            row.facts["sockets"] = _socket_report(workers, [pg.port, world.web.server.port])
        _finish(row, world)
    return row


def _socket_report(workers: list[Any], ports: list[int]) -> dict[str, Any]:
    """Which worker processes hold sockets to the database / web server, and any shared."""
    parents = [w.pid for w in workers]
    children = [c for w in workers for c in w.children()]
    report: dict[str, Any] = {"parents": parents, "children": children}
    for port in ports:
        held = sockets_to(parents + children, port)
        owners: dict[int, list[int]] = {}
        for pid, inodes in held.items():
            for inode in inodes:
                owners.setdefault(inode, []).append(pid)
        report[str(port)] = {
            "children_with_sockets": sorted(p for p in children if held[p]),
            "parents_with_sockets": sorted(p for p in parents if held[p]),
            "shared": {str(i): pids for i, pids in owners.items() if len(pids) > 1},
        }
    return report


# --------------------------------------------------------------------------- 2. kills


def sigkill_mid_fetch(
    root: Path, backend: str, pg: ManagedPostgres | None, *, whole_node: bool
) -> Row:
    """A worker is SIGKILLed while it fetches a slow feed; another redoes the work.

    whole_node: the worker's main process and pool (a container dying); otherwise only
    the pool process running the task. The fetch is redone once the feed's lease expires.
    """
    what = "worker node" if whole_node else "pool process"
    row = Row(f"SIGKILL {what} mid-fetch", backend, entries_in=30)
    with lab(root, backend=backend, pg=pg) as world:
        world.web.server.put("/slow.xml", rss(rss_items(list(range(100, 130)), "slow")))
        world.web.delays["/slow.xml"] = 2.5
        feed_id = world.add_feed("/slow.xml")
        world.add_rule("costs", RULE, hook="/hook")
        a = world.worker("a", 1)
        b = world.worker("b", 1)
        world.beat()
        wait_until(lambda: bool(world.web.gets("/slow.xml")), 60, "the first fetch")
        _, fetcher, _ = world.web.gets("/slow.xml")[0]
        victim = a if fetcher in [a.pid, *a.children()] else b
        if whole_node:
            victim.kill_group()
        else:
            signal_pid(fetcher, signal.SIGKILL)
        killed = time.monotonic()
        row.facts["killed_pid"] = fetcher
        wait_until(
            lambda: (
                world.counts()["stored"] >= row.entries_in
                and world.feed(feed_id)["last_polled_at"] is not None
                and len(world.web.delivered()) >= row.entries_in
            ),
            60,
            "the fetch redone and its alerts delivered",
        )
        row.recover_s = round(time.monotonic() - killed, 1)
        time.sleep(1.5)
        row.facts["fetches"] = [pid for _, pid, _ in world.web.gets("/slow.xml")]
        row.facts["feed"] = world.feed(feed_id)
        _finish(row, world)
        # Killing a pool process is logged by Celery as a lost worker; not a problem here.
        row.problems = [p for p in row.problems if "WorkerLostError" not in p]
    return row


def signal_pid(pid: int, sig: int) -> None:
    import os
    from contextlib import suppress

    with suppress(ProcessLookupError):
        os.kill(pid, sig)


def poison_feed(root: Path, backend: str, pg: ManagedPostgres | None) -> Row:
    """A feed whose fetch kills the worker process every time: bounded tries, then parked.

    The web server SIGKILLs whichever process opens a connection for /poison.xml (as an
    OOM kill or a crash in a C extension would). A healthy feed keeps being fetched.
    """
    from storage.feeds import MAX_UNFINISHED_CLAIMS

    row = Row("poison feed kills its worker", backend, entries_in=3)
    with lab(root, backend=backend, pg=pg, env={"NEWSWATCH_FETCH_LEASE_SECONDS": "2"}) as world:
        world.web.server.put("/poison.xml", rss(rss_items([200], "poison")))
        world.web.server.put("/ok.xml", rss(rss_items([201, 202], "ok")))
        world.web.killers.add("/poison.xml")
        poison = world.add_feed("/poison.xml")
        healthy = world.add_feed("/ok.xml", interval=2)
        world.worker("w", 2)
        world.beat()
        start = time.monotonic()
        wait_until(lambda: not world.feed(poison)["active"], 90, "the poison feed parked")
        row.recover_s = round(time.monotonic() - start, 1)
        wait_until(lambda: world.counts()["stored"] >= 2, 30, "the healthy feed stored")
        time.sleep(3)
        row.facts["kills"] = len(world.web.gets("/poison.xml"))
        row.facts["max_unfinished"] = MAX_UNFINISHED_CLAIMS
        row.facts["poison"] = world.feed(poison)
        row.facts["healthy_fetches_after_park"] = sum(
            1 for _, _, at in world.web.gets("/ok.xml") if at > start + row.recover_s
        )
        row.facts["healthy"] = world.feed(healthy)
        _finish(row, world)
        row.problems = [p for p in row.problems if "WorkerLostError" not in p]
    return row


# --------------------------------------------------------------------------- 3. broker


def redis_restart(root: Path, backend: str, pg: ManagedPostgres | None) -> Row:
    """Redis is killed and restarted empty while fetches are queued; leases bring them back."""
    feeds = 8
    row = Row("Redis restarted empty", backend, entries_in=feeds * 2)
    with lab(root, backend=backend, pg=pg) as world:
        ids = []
        for n in range(feeds):
            path = f"/f{n}.xml"
            world.web.server.put(path, rss(rss_items([300 + 2 * n, 301 + 2 * n], f"f{n}")))
            world.web.delays[path] = 1.0
            ids.append(world.add_feed(path))
        world.add_rule("costs", RULE, hook="/hook")
        world.worker("w", 1)
        world.beat()
        wait_until(lambda: len(world.web.fetchers) >= 1, 60, "the first fetch")
        import redis

        with redis.Redis.from_url(world.redis.url) as client:
            row.facts["queued_when_killed"] = int(client.llen("celery"))
        world.redis.kill()
        row.facts["fetched_before_restart"] = len(world.web.fetchers)
        time.sleep(1.0)
        world.redis.start()
        restarted = time.monotonic()
        wait_until(
            lambda: (
                all(world.feed(i)["last_polled_at"] for i in ids)
                and world.counts()["stored"] >= row.entries_in
                and len(world.web.delivered()) >= row.entries_in
            ),
            120,
            "every feed fetched and every alert delivered after the restart",
        )
        row.recover_s = round(time.monotonic() - restarted, 1)
        time.sleep(1.5)
        _finish(row, world)
    return row


def beat_twice(root: Path, backend: str, pg: ManagedPostgres | None) -> Row:
    """Two beat processes tick at once; each feed is still fetched once per interval."""
    interval, feeds, duration = 3, 3, 12.0
    row = Row("beat started twice", backend, entries_in=feeds)
    with lab(root, backend=backend, pg=pg, env={"NEWSWATCH_SCHEDULE_TICK_SECONDS": "0.5"}) as world:
        paths = []
        for n in range(feeds):
            path = f"/b{n}.xml"
            world.web.server.put(path, rss(rss_items([400 + n], f"b{n}")))
            world.add_feed(path, interval=interval)
            paths.append(path)
        world.worker("w", 2)
        world.beat("beat1")
        world.beat("beat2", data_dir=root / "data-beat2")
        wait_until(lambda: len(world.web.fetchers) >= 1, 60, "the first fetch")
        start = time.monotonic()
        time.sleep(duration)
        gets = {p: [at for _, _, at in world.web.gets(p) if at >= start - interval] for p in paths}
        gaps = [b - a for times in gets.values() for a, b in itertools.pairwise(times)]
        row.facts["fetches_per_feed"] = {p: len(t) for p, t in gets.items()}
        row.facts["min_gap_s"] = round(min(gaps), 2) if gaps else None
        row.facts["interval_s"] = interval
        row.facts["max_allowed_per_feed"] = int((duration + interval) / interval) + 1
        row.facts["beats_alive"] = [p.alive() for p in world.procs if p.name.startswith("beat")]
        row.recover_s = None
        _finish(row, world)
    return row


# --------------------------------------------------------------------------- 4. outbox


def outbox_crash(root: Path, backend: str, pg: ManagedPostgres | None) -> Row:
    """Alerts stored but never sent (the process died before enqueueing delivery).

    The articles and their pending alerts are stored in this process, exactly as the
    ingest transaction commits them, and nothing is enqueued. Workers and beat then
    start: the sweeper must find and send each alert once.
    """
    stories = [500, 501, 502]
    row = Row("crash between alert stored and sent", backend, entries_in=len(stories))
    with lab(root, backend=backend, pg=pg) as world:
        from storage.feeds import find_feed
        from tasks.models import RawEntry
        from tasks.pipeline import MatcherCache, process_entries

        world.add_rule("costs", RULE, hook="/hook")
        feed_id = world.add_feed("/gone.xml")
        settings = world.settings()
        entries = [
            RawEntry(
                guid=item["guid"],
                url=item["link"],
                title=item["title"],
                content=item["description"],
            )
            for item in rss_items(stories, "crash")
        ]
        result = process_entries(
            world.engine,
            MatcherCache(settings.topics_path()).get(world.engine),
            entries,
            origin=f"feed:{feed_id}",
            feed_id=feed_id,
            threshold=settings.near_duplicate_threshold,
        )
        del find_feed
        row.facts["pending_before"] = world.counts().get("alerts_pending", 0)
        row.facts["alerts_created"] = len(result.alerts)
        world.worker("w", 1)
        world.beat()
        start = time.monotonic()
        wait_until(lambda: len(world.web.delivered()) >= len(stories), 60, "the sweeper's sends")
        row.recover_s = round(time.monotonic() - start, 1)
        time.sleep(3)  # several more sweeps: none may send again
        _finish(row, world)
    return row


def endpoint_outage(root: Path, backend: str, pg: ManagedPostgres | None) -> Row:
    """A webhook answers 503 for a while, another one always: backoff, once, failed, redeliver."""
    row = Row("webhook down, then back", backend, entries_in=1)
    env = {
        "NEWSWATCH_DELIVERY_MAX_ATTEMPTS": "4",
        "NEWSWATCH_DELIVERY_BACKOFF_SECONDS": "0.5",
    }
    with lab(root, backend=backend, pg=pg, env=env) as world:
        world.web.server.put("/w.xml", rss(rss_items([600], "w")))
        world.web.failures["/flaky"] = 2  # recovers on the third attempt
        world.web.failures["/dead"] = 10**6  # never, until we say so
        world.add_feed("/w.xml")
        world.add_rule("flaky", RULE, hook="/flaky", secret=SECRET)
        world.add_rule("dead", RULE, hook="/dead")
        world.worker("w", 2)
        world.beat()
        start = time.monotonic()
        wait_until(lambda: bool(world.web.delivered("/flaky")), 60, "the flaky hook's delivery")
        row.recover_s = round(time.monotonic() - start, 1)
        wait_until(
            lambda: world.counts().get("alerts_failed", 0) >= 1, 60, "the dead hook given up"
        )
        time.sleep(2)
        flaky = [h for h in world.web.hits if h.path == "/flaky"]
        row.facts["flaky_signatures_valid"] = [_verify(h, SECRET) for h in flaky]
        dead = [h for h in world.web.hits if h.path == "/dead"]
        row.facts["flaky_attempts"] = [h.status for h in flaky]
        row.facts["flaky_gaps_s"] = [round(b.at - a.at, 2) for a, b in itertools.pairwise(flaky)]
        row.facts["dead_attempts"] = len(dead)
        [(dead_id, dead_status)] = world.rows(
            "SELECT alert.id, alert.status FROM alert JOIN rule ON rule.id = alert.rule_id WHERE rule.name = 'dead'"
        )
        row.facts["dead_status"] = dead_status
        # The endpoint is repaired; the operator redelivers from the command line.
        world.web.failures["/dead"] = 0
        result = world.cli("alerts", "redeliver", str(dead_id))
        row.facts["redeliver"] = (result.returncode, result.stdout.strip(), result.stderr.strip())
        time.sleep(2)
        _finish(row, world)
    return row


# --------------------------------------------------------------------------- 5. shutdown


def sigterm(root: Path, backend: str, pg: ManagedPostgres | None) -> Row:
    """SIGTERM while a fetch runs and another waits: the first finishes, the second survives."""
    row = Row("SIGTERM mid-fetch", backend, entries_in=4)
    with lab(root, backend=backend, pg=pg, env={"NEWSWATCH_FETCH_LEASE_SECONDS": "600"}) as world:
        ids = []
        for n, path in enumerate(["/t1.xml", "/t2.xml"]):
            world.web.server.put(path, rss(rss_items([700 + 2 * n, 701 + 2 * n], f"t{n}")))
            world.web.delays[path] = 2.5
            ids.append(world.add_feed(path))
        first = world.worker("first", 1)
        world.send("newswatch.schedule_due_feeds")
        wait_until(lambda: bool(world.web.fetchers), 60, "the first fetch")
        first.signal(signal.SIGTERM)
        termed = time.monotonic()
        first.popen.wait(timeout=60)
        row.recover_s = round(time.monotonic() - termed, 1)
        row.facts["exit_code"] = first.popen.returncode
        row.facts["fetched_by_first"] = len(world.web.fetchers)
        row.facts["done_at_exit"] = [bool(world.feed(i)["last_polled_at"]) for i in ids]
        row.facts["stored_at_exit"] = world.counts()["stored"]
        # The lease is long: only the broker message can bring the second feed back.
        world.worker("second", 1)
        wait_until(
            lambda: all(world.feed(i)["last_polled_at"] for i in ids), 60, "the queued fetch"
        )
        _finish(row, world)
    return row


# --------------------------------------------------------------------------- 6. database


def db_outage(root: Path, backend: str, pg: ManagedPostgres | None) -> Row:
    """PostgreSQL stops while fetches are queued and starts again; the CLI explains itself."""
    if pg is None:
        raise RuntimeError("the database outage scenario needs PostgreSQL")
    feeds = 3
    row = Row("PostgreSQL down, then back", "postgresql", entries_in=feeds * 2)
    with lab(root, backend="postgresql", pg=pg) as world:
        ids = []
        for n in range(feeds):
            path = f"/d{n}.xml"
            world.web.server.put(path, rss(rss_items([800 + 2 * n, 801 + 2 * n], f"d{n}")))
            ids.append(world.add_feed(path))
        world.add_rule("costs", RULE, hook="/hook")
        world.worker("w", 2)
        world.engine.dispose()
        pg.stop()
        try:
            for feed_id in ids:
                world.send("newswatch.fetch_feed", feed_id)
            time.sleep(4)
            row.facts["stored_during_outage"] = None
            result = world.cli("alerts", "list")
            row.facts["cli"] = (result.returncode, result.stdout, result.stderr)
        finally:
            pg.start()
        restarted = time.monotonic()
        wait_until(
            lambda: (
                world.counts()["stored"] >= row.entries_in
                and all(world.feed(i)["last_polled_at"] for i in ids)
                and len(world.web.delivered()) >= row.entries_in
            ),
            120,
            "the queued fetches stored after the restart",
        )
        row.recover_s = round(time.monotonic() - restarted, 1)
        time.sleep(1.5)
        row.facts["retries_logged"] = world.logs().count("Retry in")
        _finish(row, world)
    return row


def sqlite_unreachable_cli(root: Path) -> tuple[int, str, str]:
    """The CLI on a SQLite path that cannot be opened (a directory stands in for the file)."""
    import os
    import subprocess
    import sys

    from tests.faultlab import PROJECT

    blocked = root / "blocked.db"
    blocked.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
    env["NEWSWATCH_DATA_DIR"] = str(root / "data")
    env["NEWSWATCH_DATABASE_URL"] = f"sqlite:///{blocked}"
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "alerts", "list"],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout, result.stderr


Scenario = Callable[[Path, str, ManagedPostgres | None], Row]
SCENARIOS: dict[str, tuple[Scenario, tuple[str, ...]]] = {
    "copies": (concurrent_copies, ("sqlite", "postgresql")),
    "kill-node": (lambda r, b, p: sigkill_mid_fetch(r, b, p, whole_node=True), ("sqlite",)),
    "kill-child": (lambda r, b, p: sigkill_mid_fetch(r, b, p, whole_node=False), ("postgresql",)),
    "poison": (poison_feed, ("sqlite",)),
    "redis": (redis_restart, ("sqlite",)),
    "beat-twice": (beat_twice, ("postgresql",)),
    "outbox": (outbox_crash, ("sqlite",)),
    "endpoint": (endpoint_outage, ("sqlite",)),
    "sigterm": (sigterm, ("sqlite",)),
    "db-outage": (db_outage, ("postgresql",)),
}
