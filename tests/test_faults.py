"""Nothing lost, nothing twice: real workers, broker and store under faults.

Every test starts real processes (redis-server, `python -m worker.cli worker|beat`,
PostgreSQL where installed) and injects the fault from outside. The scenarios live in
`tests/fault_scenarios.py`, shared with `benchmarks/faults.py`, which prints the table.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import fault_scenarios as fs
from tests.faultlab import ManagedPostgres
from tests.servers import postgres_bindir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inspects /proc"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


@pytest.fixture(scope="module")
def pg() -> Iterator[ManagedPostgres]:
    """A PostgreSQL cluster this module may stop and start (skipped where not installed)."""
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL is not installed")
    server = ManagedPostgres()
    yield server
    server.close()


def assert_clean(row: fs.Row) -> None:
    """No lock or constraint error, no unexpected task failure in any worker's log."""
    assert row.problems == [], row.problems
    assert row.facts["twice"] == 0
    assert all(n == 1 for n in row.facts["delivered_ids"].values()), row.facts["delivered_ids"]


# --------------------------------------------------------------------------- races


def check_copies(row: fs.Row) -> None:
    assert row.stored == row.entries_in == 24
    assert row.facts["stories"] == 6 and row.duplicates == 18
    assert row.alerts == 6 and row.deliveries == 6
    # The four copies really were fetched by four different processes.
    assert len(row.facts["fetchers"]) == 4
    assert_clean(row)


def test_copies_race_on_sqlite(tmp_path: Path) -> None:
    check_copies(fs.concurrent_copies(tmp_path, "sqlite", None))


def test_copies_race_on_postgresql_and_no_socket_shared_across_fork(
    tmp_path: Path, pg: ManagedPostgres
) -> None:
    row = fs.concurrent_copies(tmp_path, "postgresql", pg)
    check_copies(row)
    sockets = row.facts["sockets"]
    for port in (str(pg.port), next(k for k in sockets if k.isdigit() and k != str(pg.port))):
        seen = sockets[port]
        # Every pool process talked to the database / web server over its own sockets ...
        assert len(seen["children_with_sockets"]) == 4, seen
        # ... no socket is held by two processes, and the parents hold none to inherit.
        assert seen["shared"] == {} and seen["parents_with_sockets"] == [], seen


# --------------------------------------------------------------------------- kills


@pytest.mark.parametrize("whole_node", [True, False], ids=["node", "pool-process"])
def test_sigkill_mid_fetch_is_redone_by_another_process(
    tmp_path: Path, whole_node: bool, request: pytest.FixtureRequest
) -> None:
    # The pool-process variant runs on PostgreSQL where installed, the node on SQLite.
    backend, pg = "sqlite", None
    if not whole_node and postgres_bindir() is not None:
        backend, pg = "postgresql", request.getfixturevalue("pg")
    row = fs.sigkill_mid_fetch(tmp_path, backend, pg, whole_node=whole_node)
    assert row.stored == row.entries_in and row.duplicates == 0
    assert row.alerts == row.entries_in and row.deliveries == row.entries_in
    fetches = row.facts["fetches"]
    assert fetches[0] == row.facts["killed_pid"] and row.facts["killed_pid"] not in fetches[1:]
    assert row.facts["feed"]["last_status"] == 200 and row.facts["feed"]["active"]
    assert_clean(row)


def test_poison_feed_is_parked_after_bounded_attempts(tmp_path: Path) -> None:
    row = fs.poison_feed(tmp_path, "sqlite", None)
    assert row.facts["kills"] == row.facts["max_unfinished"]
    poison = row.facts["poison"]
    assert poison["active"] is False and "parked" in poison["last_error"]
    # The worker kept serving the healthy feed, before and after the parking.
    assert row.stored == 2 and row.facts["healthy"]["last_error"] is None
    assert row.facts["healthy_fetches_after_park"] >= 1
    assert_clean(row)


# --------------------------------------------------------------------------- broker


def test_redis_restarted_empty_loses_nothing(tmp_path: Path) -> None:
    row = fs.redis_restart(tmp_path, "sqlite", None)
    # Fetch messages were waiting in Redis when it died; they came back by lease expiry.
    assert row.facts["queued_when_killed"] >= 3
    assert row.stored == row.entries_in and row.duplicates == 0
    assert row.alerts == row.entries_in and row.deliveries == row.entries_in
    assert_clean(row)


def test_beat_twice_fetches_each_feed_once_per_interval(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    backend, pg = "sqlite", None
    if postgres_bindir() is not None:
        backend, pg = "postgresql", request.getfixturevalue("pg")
    row = fs.beat_twice(tmp_path, backend, pg)
    assert row.facts["beats_alive"] == [True, True]
    assert row.facts["min_gap_s"] >= row.facts["interval_s"] * 0.95, row.facts
    assert all(
        2 <= n <= row.facts["max_allowed_per_feed"] for n in row.facts["fetches_per_feed"].values()
    )
    assert_clean(row)


# --------------------------------------------------------------------------- outbox


def test_sweeper_sends_alerts_stored_but_never_sent(tmp_path: Path) -> None:
    row = fs.outbox_crash(tmp_path, "sqlite", None)
    assert row.facts["pending_before"] == 3
    assert row.deliveries == 3 and row.facts["alerts_delivered"] == 3
    assert_clean(row)


def test_failing_endpoint_backoff_once_failed_then_redelivered(tmp_path: Path) -> None:
    row = fs.endpoint_outage(tmp_path, "sqlite", None)
    # Two 503s, then one success; waits grow (0.5 s base, doubling, sweeper tick 1 s).
    assert row.facts["flaky_attempts"] == [503, 503, 200]
    gaps = row.facts["flaky_gaps_s"]
    assert gaps[0] >= 0.4 and gaps[1] >= 0.8, gaps
    # The receiver can verify every signed request on the bytes it got.
    assert all(row.facts["flaky_signatures_valid"]), row.facts
    # The dead endpoint used the whole budget (4), then the alert was marked failed ...
    assert row.facts["dead_attempts"] == 4 and row.facts["dead_status"] == "failed"
    # ... and `newswatch alerts redeliver` sent it once the endpoint was repaired.
    code, out, _ = row.facts["redeliver"]
    assert code == 0 and "delivered" in out
    assert row.deliveries == 2 and row.facts["alerts_delivered"] == 2
    assert_clean(row)


# --------------------------------------------------------------------------- shutdown


def test_sigterm_finishes_the_current_fetch_and_leaves_the_rest_queued(tmp_path: Path) -> None:
    row = fs.sigterm(tmp_path, "sqlite", None)
    assert row.facts["exit_code"] == 0
    # The fetch under way when SIGTERM arrived was finished and recorded before exit ...
    assert row.facts["fetched_by_first"] == 1
    assert row.facts["done_at_exit"] == [True, False] and row.facts["stored_at_exit"] == 2
    # ... and the one still queued was left to the next worker, not lost.
    assert row.stored == row.entries_in
    assert_clean(row)


# --------------------------------------------------------------------------- database


def test_database_outage_tasks_retry_and_store_once(tmp_path: Path, pg: ManagedPostgres) -> None:
    row = fs.db_outage(tmp_path, "postgresql", pg)
    assert row.facts["retries_logged"] >= 3
    assert row.stored == row.entries_in and row.duplicates == 0
    assert row.alerts == row.entries_in and row.deliveries == row.entries_in
    code, out, err = row.facts["cli"]
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("newswatch: cannot reach the database"), err
    assert "Traceback" not in err
    assert_clean(row)


def test_cli_says_it_cannot_open_a_sqlite_database(tmp_path: Path) -> None:
    code, out, err = fs.sqlite_unreachable_cli(tmp_path)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and "cannot reach the database" in err, err
    assert "Traceback" not in err
