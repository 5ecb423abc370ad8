"""Engines and sessions, created on demand and never shared across processes.

SQLite gets WAL, a busy timeout and `BEGIN IMMEDIATE` transactions, so concurrent
worker processes queue for the write lock instead of failing with "database is locked"
halfway through a transaction. PostgreSQL runs through the same code, without
parallel query plans or JIT compilation (see `_configure_postgresql`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session

from tasks.errors import StorageUnavailable

SQLITE_BUSY_TIMEOUT_MS = 60_000
# Page cache per connection (the default is 2 MiB): the article indexes and the small
# recent-bands table take random inserts, and with a small cache each one rereads pages
# from the OS. 64 MiB was no faster than 16 (`newswatch poll`, 1,000 x 50 entries, three
# pairs: 27.9/23.8/22.3 s against 25.9/21.9/23.0 s) and held ~55 MB more: the band rows
# go to the large table in key order since the recent-bands table took the inserts.
SQLITE_CACHE_KIB = 16 * 1024
# Checkpoint the WAL once it holds this many pages (~20 MB; SQLite's default is 1,000).
# A batch rewrites the same index pages commit after commit; a rarer checkpoint copies
# each into the database once, and syncs less often: the pipeline benchmark stored ~7%
# more entries per second than at 1,000 (benchmarks/pipeline.py, same run).
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 5_000

# Arbitrary constant naming the ingest lock among PostgreSQL advisory locks.
INGEST_LOCK_KEY = 0x6E657773  # "news"

_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.Lock()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (see below).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        cursor.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock at the start: a deferred transaction that later upgrades
        # to a writer can fail with SQLITE_BUSY without waiting for the busy timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _configure_postgresql(engine: Engine) -> None:
    # newswatch's queries are small and indexed. On band tables that grew faster than
    # autovacuum analyzes them, the planner guessed ~1,000 rows per band key and ran the
    # candidate query with two parallel workers: 5.4 ms a query instead of 0.45 ms
    # (6,000 articles stored, queries not yet prepared by psycopg). The same guesses
    # put a batch's candidate query (`storage.dedup._MANY_CANDIDATES_SQL`) over the
    # JIT threshold: 143 ms compiling it, against ~15 ms running it.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cursor:
            cursor.execute("SET max_parallel_workers_per_gather = 0")
            cursor.execute("SET jit = off")
        dbapi_conn.commit()  # a SET rolled back with its transaction would be undone


def create_engine_for(url: str) -> Engine:
    """A new engine for `url` with the project's connection settings."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageUnavailable(f"invalid database URL {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    try:
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except (ArgumentError, ImportError) as exc:
        raise StorageUnavailable(f"cannot use database URL {parsed!r}: {exc}") from exc
    if engine.dialect.name == "postgresql":
        _configure_postgresql(engine)
    return engine


def get_engine(url: str) -> Engine:
    """The engine for `url` in this process (a forked child gets its own)."""
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = create_engine_for(url)
    return engine


def dispose_engines(*, close: bool = False) -> None:
    """Forget every engine of this process.

    After a fork, call it with close=False: the pooled connections belong to the parent,
    and closing them here would end the parent's sessions. Before forking (or at
    shutdown), close=True really closes them, so no socket is inherited at all.
    """
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=close)
        _engines.clear()


def lock_for_ingest(session: Session) -> None:
    """Serialize the transactions that store articles, across processes.

    On SQLite every transaction already holds the write lock (`BEGIN IMMEDIATE`); on
    PostgreSQL this takes a transaction-scoped advisory lock. Two workers storing copies
    of one story then still produce exactly one original.
    """
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": INGEST_LOCK_KEY})


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session
    except OperationalError as exc:
        if is_connection_error(exc):
            raise StorageUnavailable(describe_unreachable(engine, exc)) from exc
        raise


def is_connection_error(exc: OperationalError) -> bool:
    """True when the error means the database cannot be reached, not a query fault."""
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    needles = (
        "connection refused",
        "could not connect",
        "unable to open database",
        "could not translate host",
        "connection to server",
        "server closed the connection",
        "the database system is starting up",
        "the database system is shutting down",
        "no such host",
        "timeout expired",
    )
    return any(n in text for n in needles) or bool(exc.connection_invalidated)


def describe_unreachable(engine: Engine, exc: BaseException) -> str:
    """One line telling the user which database could not be reached and why."""
    url = engine.url.render_as_string(hide_password=True)
    reason = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
    return f"cannot reach the database at {url}: {reason}"
