"""A fault laboratory: real redis-server, PostgreSQL, Celery worker processes and HTTP servers.

Each scenario in `tests/fault_scenarios.py` builds a `Lab`: a data directory, a store
(SQLite file or a fresh PostgreSQL database), its own redis-server (so it can be killed
and restarted without disturbing other tests), a local HTTP server that serves feeds and
receives webhooks, and `python -m worker.cli worker|beat` subprocesses. Faults are
injected from outside, the way they happen in production: signals to processes, a
broker restarted empty, a database stopped, an endpoint answering 503.

Linux only for the parts that look at sockets (`/proc`): finding the process that
opened a connection, and checking that no socket is shared across forked processes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.servers import (
    FeedServer,
    ManagedRedis,
    feed_server,
    free_port,
    postgres_bindir,
)

PROJECT = Path(__file__).resolve().parent.parent
# Worker log lines that must never appear: a lock or constraint error surfacing as a
# failed task, or a task failing for an unexpected reason.
LOG_PROBLEMS = (
    "database is locked",
    "IntegrityError",
    "UniqueViolation",
    "UNIQUE constraint failed",
    "raised unexpected",
)


# --------------------------------------------------------------------------- waiting


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.2
) -> float:
    """Poll `predicate` until true; returns the seconds it took, or raises with `what`."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


# --------------------------------------------------------------------------- /proc helpers


def _tcp_table() -> dict[int, tuple[int, int]]:
    """Socket inode -> (local port, remote port) for every TCP socket on this machine."""
    table: dict[int, tuple[int, int]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError), open(name) as fh:
            next(fh)
            for line in fh:
                cols = line.split()
                local, remote, inode = cols[1], cols[2], int(cols[9])
                if inode:
                    table[inode] = (
                        int(local.rsplit(":", 1)[1], 16),
                        int(remote.rsplit(":", 1)[1], 16),
                    )
    return table


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def pids_with_local_port(port: int) -> list[int]:
    """Processes holding the TCP socket whose local port is `port` (the client side)."""
    inodes = {i for i, (local, _) in _tcp_table().items() if local == port}
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _socket_inodes(int(entry)) & inodes:
            found.append(int(entry))
    return found


def sockets_to(pids: list[int], remote_port: int) -> dict[int, set[int]]:
    """For each pid, the inodes of its TCP sockets connected to `remote_port`."""
    table = _tcp_table()
    return {
        pid: {i for i in _socket_inodes(pid) if table.get(i, (0, 0))[1] == remote_port}
        for pid in pids
    }


def child_pids(pid: int) -> list[int]:
    """Direct children of a process."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with suppress(OSError), open(f"/proc/{entry}/stat") as fh:
            stat = fh.read()
            # The command name is in parentheses and may contain spaces.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


# --------------------------------------------------------------------------- servers


class ManagedPostgres:
    """A throwaway PostgreSQL cluster that can be stopped and started (an outage)."""

    def __init__(self) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed")
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="nw-faults-pg-"))
        self.datadir = self.root / "data"
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root.
            shutil.chown(self.root, "postgres", "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self._run(
            "initdb", "-D", str(self.datadir), "-U", "newswatch", "--auth=trust", "-E", "UTF8"
        )
        self.start()

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        subprocess.run(
            [*self.prefix, str(self.bindir / tool), *args], check=check, capture_output=True
        )

    @property
    def server_url(self) -> str:
        return f"postgresql+psycopg://newswatch@127.0.0.1:{self.port}"

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.root / "log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.root} -h 127.0.0.1 -c fsync=off -c full_page_writes=off",
            "start",
        )

    def stop(self) -> None:
        # Immediate: like a crash or a pulled cable, not a polite shutdown.
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop", check=False)

    def create_database(self) -> str:
        import psycopg

        name = "f_" + uuid.uuid4().hex[:12]
        with psycopg.connect(
            f"postgresql://newswatch@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"{self.server_url}/{name}"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- HTTP behaviour


@dataclass
class Hit:
    """One webhook POST and the status we answered."""

    path: str
    msg_id: str
    status: int
    at: float
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Web:
    """What the local HTTP server does per path: slow feeds, feeds that kill, failing hooks."""

    server: FeedServer
    delays: dict[str, float] = field(default_factory=dict)
    killers: set[str] = field(default_factory=set)
    # How many POSTs to a hook path still get a 503.
    failures: dict[str, int] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    fetchers: list[tuple[str, int, float]] = field(default_factory=list)
    barrier: threading.Barrier | None = None
    barrier_paths: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, handler: BaseHTTPRequestHandler) -> bool:
        path = handler.path.split("?", 1)[0]
        if handler.command == "GET":
            return self._get(handler, path)
        return self._post(handler, path)

    def _get(self, handler: BaseHTTPRequestHandler, path: str) -> bool:
        owners = pids_with_local_port(handler.client_address[1])
        owner = next((p for p in owners if p != os.getpid()), 0)
        with self.lock:
            self.fetchers.append((path, owner, time.monotonic()))
        if path in self.killers and owner:
            # The feed "kills its worker": as an OOM kill or a crash in a C extension would.
            os.kill(owner, signal.SIGKILL)
            handler.close_connection = True
            return True
        if self.barrier is not None and path in self.barrier_paths:
            # Hold each copy until all have been requested: they arrive at the same moment.
            with suppress(threading.BrokenBarrierError):
                self.barrier.wait(timeout=10)
        if path in self.delays:
            time.sleep(self.delays[path])
        return False

    def _post(self, handler: BaseHTTPRequestHandler, path: str) -> bool:
        # The server's do_POST has read and recorded the body before asking us; find this
        # request's record (identical headers means an identical request).
        headers = {k.lower(): v for k, v in handler.headers.items()}
        body = next(
            (
                r.body
                for r in reversed(self.server.requests)
                if r.method == "POST" and r.path == handler.path and r.headers == headers
            ),
            b"",
        )
        with self.lock:
            failing = self.failures.get(path, 0)
            if failing > 0:
                self.failures[path] = failing - 1
            status = 503 if failing else 200
            self.hits.append(
                Hit(path, headers.get("webhook-id", ""), status, time.monotonic(), headers, body)
            )
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return True

    def delivered(self, path: str | None = None) -> list[Hit]:
        """POSTs answered 2xx (to `path`, or to any hook)."""
        return [h for h in self.hits if h.status == 200 and (path is None or h.path == path)]

    def gets(self, path: str) -> list[tuple[str, int, float]]:
        return [f for f in self.fetchers if f[0] == path]


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A newswatch subprocess (worker or beat) with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def children(self) -> list[int]:
        return child_pids(self.pid)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill_group(self) -> None:
        """SIGKILL the process and its pool children (a container dying)."""
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (warm shutdown), then SIGKILL the group if it does not stop."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
        # Pool children left behind by a killed parent must not outlive the lab.
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        return self.popen.returncode


# --------------------------------------------------------------------------- the lab


class Lab:
    """One scenario's world: store, broker, web server and newswatch processes."""

    def __init__(
        self,
        root: Path,
        *,
        backend: str = "sqlite",
        pg: ManagedPostgres | None = None,
        web: Web,
        env: dict[str, str] | None = None,
    ) -> None:
        from storage.engine import create_engine_for

        self.root = root
        self.web = web
        self.backend = backend
        self.pg = pg
        self.redis = ManagedRedis()
        self.redis.start()
        if backend == "postgresql":
            if pg is None:
                raise RuntimeError("a PostgreSQL lab needs a ManagedPostgres")
            self.db_url = pg.create_database()
        else:
            self.db_url = f"sqlite:///{root / 'store.db'}"
        self.env_values = {
            "NEWSWATCH_DATA_DIR": str(root / "data"),
            "NEWSWATCH_DATABASE_URL": self.db_url,
            "NEWSWATCH_BROKER_URL": self.redis.url,
            "NEWSWATCH_ALLOW_PRIVATE_ADDRESSES": "1",
            "NEWSWATCH_SCHEDULE_TICK_SECONDS": "1",
            "NEWSWATCH_OUTBOX_SWEEP_SECONDS": "1",
            "NEWSWATCH_OUTBOX_GRACE_SECONDS": "2",
            "NEWSWATCH_FETCH_LEASE_SECONDS": "4",
            **(env or {}),
        }
        self.procs: list[Proc] = []
        self.engine = create_engine_for(self.db_url)
        self._celery: Any = None
        self.initialize()

    # -- setup through the library, in this process

    def settings(self) -> Any:
        from worker.settings import Settings

        values = {k.removeprefix("NEWSWATCH_").lower(): v for k, v in self.env_values.items()}
        return Settings(**values)

    def initialize(self) -> None:
        from worker.bootstrap import initialize
        from worker.runtime import reset_runtime

        reset_runtime()
        initialize(self.settings(), self.engine)
        reset_runtime()

    def add_feed(self, path: str, *, interval: int = 3600) -> int:
        from storage.feeds import add_feed

        return int(
            add_feed(self.engine, self.web.server.url(path), interval_seconds=interval)["id"]
        )

    def add_rule(
        self, name: str, query: str, hook: str | None = None, secret: str | None = None
    ) -> None:
        from storage.rules import add_rule

        channels = [f"json://127.0.0.1:{self.web.server.port}{hook}"] if hook else []
        add_rule(self.engine, name=name, query=query, topics=[], channels=channels, secret=secret)

    # -- processes

    def environ(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
        return {**base, **self.env_values, "PYTHONUNBUFFERED": "1", **extra}

    def spawn(self, name: str, *args: str, **extra_env: str) -> Proc:
        log = self.root / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", *args],
                env=self.environ(**extra_env),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=PROJECT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def worker(self, name: str, concurrency: int = 1, *, ready: bool = True) -> Proc:
        proc = self.spawn(name, "worker", "--concurrency", str(concurrency), "--loglevel", "INFO")
        if ready:
            wait_until(lambda: " ready." in proc.text() or not proc.alive(), 60, f"{name} ready")
            if not proc.alive():
                raise RuntimeError(f"{name} exited:\n{proc.text()[-3000:]}")
        return proc

    def beat(self, name: str = "beat", data_dir: Path | None = None) -> Proc:
        extra = {"NEWSWATCH_DATA_DIR": str(data_dir)} if data_dir else {}
        return self.spawn(name, "beat", "--loglevel", "INFO", **extra)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the real `newswatch` command in a subprocess."""
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            env=self.environ(),
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def send(self, task: str, *args: Any) -> None:
        """Publish a task to the broker, as beat or another task would."""
        if self._celery is None:
            from worker.app import create_app

            self._celery = create_app(self.settings())
        self._celery.send_task(task, args=list(args))

    def logs(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.text()}" for p in self.procs)

    def log_problems(self) -> list[str]:
        text = self.logs()
        return [
            line.strip()[:300] for line in text.splitlines() if any(p in line for p in LOG_PROBLEMS)
        ]

    # -- what the store says

    def scalar(self, sql: str, **params: Any) -> Any:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def counts(self) -> dict[str, int]:
        """Articles that came from feeds, their stories, and alerts by status."""
        feed_articles = "FROM article WHERE origin LIKE 'feed:%'"
        counts = {
            "stored": int(self.scalar(f"SELECT count(*) {feed_articles}")),
            "duplicates": int(
                self.scalar(f"SELECT count(*) {feed_articles} AND duplicate_of IS NOT NULL")
            ),
            "stories": int(self.scalar(f"SELECT count(DISTINCT story_id) {feed_articles}")),
            # The unique constraints make these impossible; counted to prove it.
            "twice": int(
                self.scalar(
                    "SELECT count(*) FROM (SELECT origin, guid FROM article"
                    " GROUP BY origin, guid HAVING count(*) > 1) AS t"
                )
            ),
            "alerts": int(self.scalar("SELECT count(*) FROM alert")),
        }
        for status, n in self.rows("SELECT status, count(*) FROM alert GROUP BY status"):
            counts[f"alerts_{status}"] = int(n)
        return counts

    def feed(self, feed_id: int) -> dict[str, Any]:
        from storage.feeds import find_feed

        return find_feed(self.engine, str(feed_id))

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(timeout=15)
        if self._celery is not None:
            with suppress(Exception):
                self._celery.close()
        self.engine.dispose()
        self.redis.close()


@contextmanager
def lab(
    root: Path,
    *,
    backend: str = "sqlite",
    pg: ManagedPostgres | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Lab]:
    """A `Lab` with its own web server and broker, torn down afterwards."""
    with feed_server() as server:
        web = Web(server)
        server.handler_override = web.handle
        world = Lab(root, backend=backend, pg=pg, web=web, env=env)
        try:
            yield world
        finally:
            world.close()


# --------------------------------------------------------------------------- content

_WORDS = re.findall(
    r"\w+",
    """
    ministry officials said talks harbor budget envoy delegation parliament coast guard
    frigate destroyer exercise submarine missile launch satellite summit treaty alliance
    garrison base rotation personnel wages contractors workers union strike tariff export
    semiconductor shipyard port customs inflation currency bond market investors rally
    election candidate poll campaign governor mayor province district village farmers
    harvest drought flood typhoon rescue hospital doctors nurses vaccine clinic school
    teachers students exam university research laboratory scientists reactor grid power
    railway bridge tunnel highway airport airline pilots cargo freight shipping tanker
    refinery pipeline pricing subsidy pension reform court judge verdict appeal prosecutor
    police detectives suspect witness journalist broadcaster newspaper editor column
    diplomat embassy consulate visa migrants border checkpoint patrol drone radar aircraft
    carrier fleet admiral general colonel battalion regiment barracks logistics fuel
    """,
)


def story_text(n: int, words: int = 110) -> str:
    """A distinct story about cost-sharing for US troops (every one matches the test rule).

    Sentences are drawn from a seeded vocabulary, so two stories share almost no
    shingles while every copy of one story is identical word for word.
    """
    import random

    rnd = random.Random(n * 7919)
    body = [rnd.choice(_WORDS) for _ in range(words)]
    sentences = [" ".join(body[i : i + 11]).capitalize() + "." for i in range(0, words, 11)]
    lead = f"Story {n}: negotiators discussed the cost-sharing deal for US troops in Korea."
    return " ".join([lead, *sentences])


def rss_items(stories: list[int], outlet: str, *, extra: str = "") -> list[dict[str, str]]:
    """One outlet's copies of `stories`: own guid and link, same text (plus `extra`)."""
    return [
        {
            "guid": f"{outlet}-{n}",
            "title": f"Cost-sharing story {n}",
            "link": f"http://{outlet}.example/news/{n}",
            "description": f"<p>{story_text(n)}</p>" + (f"<p>{extra}</p>" if extra else ""),
        }
        for n in stories
    ]
