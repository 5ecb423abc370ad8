"""Real local servers for tests: redis-server, PostgreSQL, a feed HTTP server, a webhook sink."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


class ManagedRedis:
    """A redis-server on a fixed loopback port that can be killed and restarted empty."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="nw-faults-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # No persistence: a restart comes back empty, like a lost broker.
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port; yields its URL."""
    server = ManagedRedis()
    try:
        server.start()
        yield server.url
    finally:
        server.close()


def postgres_bindir() -> Path | None:
    """The bin directory of an installed PostgreSQL server, if any."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").exists():
            return candidate
    return None


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free port; yields a database URL.

    PostgreSQL refuses to run as root, so under root the cluster belongs to the
    `postgres` system user.
    """
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed")
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="nw-pg-"))
    datadir = root / "data"
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    run = lambda *args: subprocess.run([*prefix, *args], check=True, capture_output=True)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(datadir), "-U", "newswatch", "--auth=trust", "-E", "UTF8")
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(datadir),
        "-l",
        str(root / "log"),
        "-w",
        "-o",
        f"-p {port} -k {root} -h 127.0.0.1 -c fsync=off -c full_page_writes=off",
        "start",
    )
    try:
        run(
            str(bindir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "newswatch",
            "newswatch",
        )
        yield f"postgresql+psycopg://newswatch@127.0.0.1:{port}/newswatch"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Recorded:
    """One request a test server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FeedServer:
    """A real HTTP server serving in-memory documents with ETag/Last-Modified support."""

    documents: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0
    handler_override: Callable[[BaseHTTPRequestHandler], bool] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def put(self, path: str, body: bytes | str, content_type: str = "application/rss+xml") -> None:
        self.documents[path] = (body.encode() if isinstance(body, str) else body, content_type)

    def requests_to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]


def _feed_handler(server_state: FeedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _record(self, body: bytes = b"") -> None:
            server_state.requests.append(
                Recorded(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
            )

        def do_GET(self) -> None:
            self._record()
            if server_state.handler_override and server_state.handler_override(self):
                return
            doc = server_state.documents.get(self.path)
            if doc is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body, content_type = doc
            etag = '"' + hashlib.sha1(body).hexdigest() + '"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            self._record(body)
            if server_state.handler_override and server_state.handler_override(self):
                return
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    return Handler


class _HTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that stays quiet when a client hangs up mid-answer.

    Fault scenarios kill workers in the middle of a fetch on purpose; the default
    `handle_error` printed a traceback for each of those broken pipes.
    """

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def feed_server() -> Iterator[FeedServer]:
    """Serve a `FeedServer`'s documents on a free loopback port in a background thread."""
    state = FeedServer()
    httpd = _HTTPServer(("127.0.0.1", 0), _feed_handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def rss(items: list[dict[str, str]], title: str = "Test Wire") -> str:
    """A small RSS 2.0 document with the given items (guid, title, link, description)."""
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<rss version="2.0"><channel>',
        f"<title>{title}</title><link>http://example.com/</link><description>test</description>",
    ]
    for item in items:
        parts.append(
            "<item>"
            f"<guid>{item['guid']}</guid><title>{item['title']}</title>"
            f"<link>{item.get('link', 'http://example.com/' + item['guid'])}</link>"
            f"<pubDate>{item.get('date', 'Thu, 10 Jul 2025 09:00:00 GMT')}</pubDate>"
            f"<description><![CDATA[{item['description']}]]></description>"
            "</item>"
        )
    parts.append("</channel></rss>")
    return "\n".join(parts)


def json_body(recorded: Recorded) -> Any:
    """The JSON payload of a recorded POST."""
    return json.loads(recorded.body.decode())
