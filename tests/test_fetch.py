"""fetch_url against a real local HTTP server, one route per misbehaving server."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tasks import netguard
from tasks.fetch import FetchPolicy, fetch_url, make_client, parse_retry_after
from tasks.parse import parse_feed

FEED = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Local feed</title><link>http://example.com/</link>
<item><title>First</title><link>/a/1</link><guid>g1</guid>
<pubDate>Mon, 06 Jan 2025 10:00:00 GMT</pubDate><description>Hello</description></item>
</channel></rss>"""

BOMB_SIZE = 64 * 1024 * 1024  # decoded size of the compression bombs
SMALL = FetchPolicy(
    connect_timeout=2, read_timeout=2, total_timeout=1.5, max_bytes=1024 * 1024, allow_private=True
)

Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Server:
    """A threaded HTTP server on a free loopback port with per-path behaviour."""

    port: int
    routes: dict[str, Handler]
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]


def _send(h: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
    h.send_response(status)
    for name, value in headers.items():
        h.send_header(name.replace("_", "-"), value)
    if "Content_Length" not in headers:
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if body:
        h.wfile.write(body)


def _redirect(status: int, target: str) -> Handler:
    return lambda h: _send(h, status, b"moved", Location=target)


def _drip(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/rss+xml")
    h.send_header("Content-Length", "100000")
    h.end_headers()
    for _ in range(100000):
        h.wfile.write(b" ")
        h.wfile.flush()
        time.sleep(0.1)


def _endless(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/rss+xml")
    h.end_headers()  # no length: the body ends when the connection does
    chunk = b"<item>" * 10000
    while True:
        h.wfile.write(chunk)


def _redirect_with_dripping_body(h: BaseHTTPRequestHandler) -> None:
    # A 3xx whose body never ends: reading it would hit the deadline.
    h.send_response(301)
    h.send_header("Location", "/feed.xml")
    h.send_header("Content-Length", "100000000")
    h.end_headers()
    for _ in range(1000):
        h.wfile.write(b"x" * 1000)
        h.wfile.flush()
        time.sleep(0.05)


def _conditional(h: BaseHTTPRequestHandler) -> None:
    if h.headers.get("If-None-Match") == '"v1"':
        _send(h, 304, ETag='"v1"')
    else:
        _send(
            h,
            200,
            FEED,
            Content_Type="application/rss+xml",
            ETag='"v1"',
            Last_Modified="Mon, 06 Jan 2025 10:00:00 GMT",
        )


_BOMBS: dict[str, bytes] = {}


def _bomb(encoding: str) -> bytes:
    if encoding not in _BOMBS:
        zeros = b"\0" * BOMB_SIZE
        if encoding == "gzip":
            _BOMBS[encoding] = gzip.compress(zeros, compresslevel=9)
        elif encoding == "deflate":
            _BOMBS[encoding] = zlib.compress(zeros, 9)
        else:
            brotli = pytest.importorskip("brotli")
            _BOMBS[encoding] = brotli.compress(zeros, quality=5)
    return _BOMBS[encoding]


def _compressed(encoding: str, body: bytes | None = None) -> Handler:
    def handle(h: BaseHTTPRequestHandler) -> None:
        if body is None:
            payload = _bomb(encoding)
        elif encoding == "gzip":
            payload = gzip.compress(body)
        else:
            payload = zlib.compress(body)
        _send(h, 200, payload, Content_Type="application/rss+xml", Content_Encoding=encoding)

    return handle


@pytest.fixture
def server() -> Iterator[Server]:
    """A fresh local server; tests add routes to `server.routes`."""
    routes: dict[str, Handler] = {}
    box: dict[str, Server] = {}

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            box["s"].seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            handler = routes.get(self.path)
            try:
                if handler is None:
                    _send(self, 404, b"not found")
                else:
                    handler(self)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client hung up on purpose

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    httpd.daemon_threads = True
    box["s"] = Server(port=httpd.server_address[1], routes=routes)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield box["s"]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with make_client() as c:
        yield c


def test_plain_fetch_sends_user_agent_and_returns_body(
    server: Server, client: httpx.Client
) -> None:
    server.routes["/feed.xml"] = _conditional
    result = fetch_url(server.url("/feed.xml"), policy=SMALL, client=client)
    assert result.error is None and result.status == 200
    assert result.content == FEED
    assert result.etag == '"v1"' and result.last_modified is not None
    assert result.headers["content-type"] == "application/rss+xml"
    assert server.seen[0][1]["user-agent"].startswith("newswatch/")
    assert parse_feed(result.content, url=result.final_url).entries[0].url == (server.url("/a/1"))


def test_loopback_is_refused_without_allow_private(server: Server, client: httpx.Client) -> None:
    server.routes["/feed.xml"] = _conditional
    strict = FetchPolicy(allow_private=False)
    for host in ("127.0.0.1", "localhost", "2130706433", "0177.0.0.1", "[::1]"):
        result = fetch_url(server.url("/feed.xml", host), policy=strict, client=client)
        assert result.error_kind == "blocked_address", host
        assert "NEWSWATCH_ALLOW_PRIVATE_ADDRESSES" in (result.error or "")
    assert server.seen == []


def test_conditional_get_gets_304(server: Server, client: httpx.Client) -> None:
    server.routes["/feed.xml"] = _conditional
    result = fetch_url(
        server.url("/feed.xml"),
        etag='"v1"',
        last_modified="Mon, 06 Jan 2025 10:00:00 GMT",
        policy=SMALL,
        client=client,
    )
    assert result.not_modified and result.status == 304 and result.content is None
    assert result.error is None and result.etag == '"v1"'
    headers = server.seen[0][1]
    assert headers["if-none-match"] == '"v1"'
    assert headers["if-modified-since"] == "Mon, 06 Jan 2025 10:00:00 GMT"


def test_slow_drip_is_cut_by_total_deadline(server: Server, client: httpx.Client) -> None:
    server.routes["/drip"] = _drip
    started = time.monotonic()
    result = fetch_url(server.url("/drip"), policy=SMALL, client=client)
    elapsed = time.monotonic() - started
    assert result.error_kind == "timeout"
    assert "total time limit" in (result.error or "")
    assert elapsed < SMALL.total_timeout + 0.5


def test_total_deadline_holds_without_the_guarded_client(server: Server) -> None:
    # A caller's own client lacks our socket-level clamp; the chunk loop still stops it.
    server.routes["/drip"] = _drip
    started = time.monotonic()
    with httpx.Client() as plain:
        result = fetch_url(server.url("/drip"), policy=SMALL, client=plain)
    assert result.error_kind == "timeout"
    assert time.monotonic() - started < SMALL.total_timeout + 1.0


def test_endless_body_is_cut_at_max_bytes(server: Server, client: httpx.Client) -> None:
    server.routes["/endless"] = _endless
    result = fetch_url(server.url("/endless"), policy=SMALL, client=client)
    assert result.error_kind == "too_large" and result.content is None


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_compression_bomb_is_cut_after_decoding(
    server: Server, client: httpx.Client, encoding: str
) -> None:
    server.routes["/bomb"] = _compressed(encoding)
    assert len(_bomb(encoding)) < SMALL.max_bytes  # small on the wire, huge decoded
    result = fetch_url(server.url("/bomb"), policy=SMALL, client=client)
    assert result.error_kind == "too_large"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_feed_is_decoded(server: Server, client: httpx.Client, encoding: str) -> None:
    server.routes["/z"] = _compressed(encoding, FEED * 50)
    result = fetch_url(server.url("/z"), policy=SMALL, client=client)
    assert result.error is None and result.content == FEED * 50


def test_redirect_loop(server: Server, client: httpx.Client) -> None:
    server.routes["/a"] = _redirect(302, "/b")
    server.routes["/b"] = _redirect(302, "/a")
    result = fetch_url(server.url("/a"), policy=SMALL, client=client)
    assert result.error_kind == "redirect_loop"
    assert server.paths() == ["/a", "/b"]


def test_redirect_cap(server: Server, client: httpx.Client) -> None:
    for i in range(10):
        server.routes[f"/r{i}"] = _redirect(302, f"/r{i + 1}")
    policy = FetchPolicy(max_redirects=3, allow_private=True, total_timeout=5)
    result = fetch_url(server.url("/r0"), policy=policy, client=client)
    assert result.error_kind == "too_many_redirects"
    assert server.paths() == ["/r0", "/r1", "/r2", "/r3"]


def test_301_sets_permanent_url_and_302_does_not(server: Server, client: httpx.Client) -> None:
    server.routes["/feed.xml"] = _conditional
    server.routes["/old"] = _redirect(301, "/feed.xml")
    server.routes["/tmp"] = _redirect(302, "/feed.xml")
    server.routes["/perm-then-tmp"] = _redirect(308, "/tmp")
    moved = fetch_url(server.url("/old"), policy=SMALL, client=client)
    assert moved.error is None and moved.permanent_url == server.url("/feed.xml")
    assert moved.final_url == server.url("/feed.xml") and moved.content == FEED
    temporary = fetch_url(server.url("/tmp"), policy=SMALL, client=client)
    assert temporary.error is None and temporary.permanent_url is None
    mixed = fetch_url(server.url("/perm-then-tmp"), policy=SMALL, client=client)
    assert mixed.permanent_url == server.url("/tmp")


def test_redirect_body_is_never_read(server: Server, client: httpx.Client) -> None:
    server.routes["/feed.xml"] = _conditional
    server.routes["/moved"] = _redirect_with_dripping_body
    started = time.monotonic()
    result = fetch_url(server.url("/moved"), policy=SMALL, client=client)
    assert result.error is None and result.content == FEED
    assert time.monotonic() - started < 1.0


@pytest.fixture
def loopback_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend 127.0.0.1 (only) is a public address, so the test server can stand in
    for an outside site while every other internal address stays forbidden."""
    real = netguard.why_blocked

    def why(ip: netguard.IPAddress) -> str | None:
        return None if str(ip) == "127.0.0.1" else real(ip)

    monkeypatch.setattr(netguard, "why_blocked", why)
    monkeypatch.setattr("tasks.fetch.why_blocked", why)


@pytest.mark.parametrize(
    "target",
    [
        "http://localhost:{port}/feed.xml",
        "http://2130706434:{port}/feed.xml",  # 127.0.0.2 in decimal
        "http://[::ffff:127.0.0.2]:{port}/feed.xml",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "file:///etc/passwd",
    ],
)
def test_redirect_to_private_address_is_refused(
    server: Server, client: httpx.Client, loopback_is_public: None, target: str
) -> None:
    server.routes["/feed.xml"] = _conditional
    server.routes["/go"] = _redirect(302, target.format(port=server.port))
    strict = FetchPolicy(allow_private=False, total_timeout=5)
    result = fetch_url(server.url("/go"), policy=strict, client=client)
    assert result.error_kind in ("blocked_address", "invalid_url"), result
    assert server.paths() == ["/go"]


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names ending in .test resolve to 127.0.0.1, as an attacker's DNS would."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".test"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_hostname_resolving_to_loopback_is_refused_before_connecting(
    server: Server, client: httpx.Client, fake_dns: None
) -> None:
    server.routes["/feed.xml"] = _conditional
    result = fetch_url(server.url("/feed.xml", "rebind.test"), policy=FetchPolicy(), client=client)
    assert result.error_kind == "blocked_address"
    assert server.seen == []  # refused at connect time: no request was sent


def test_pinned_connection_keeps_host_header(
    server: Server, client: httpx.Client, fake_dns: None
) -> None:
    server.routes["/feed.xml"] = _conditional
    result = fetch_url(server.url("/feed.xml", "feeds.test"), policy=SMALL, client=client)
    assert result.error is None
    assert server.seen[0][1]["host"] == f"feeds.test:{server.port}"


def test_connected_address_is_checked_for_foreign_clients(server: Server, fake_dns: None) -> None:
    # A plain httpx client resolves on its own; the post-connect check still refuses.
    server.routes["/feed.xml"] = _conditional
    with httpx.Client() as plain:
        result = fetch_url(
            server.url("/feed.xml", "rebind.test"), policy=FetchPolicy(), client=plain
        )
    assert result.error_kind == "blocked_address" and result.content is None


def test_410_gone(server: Server, client: httpx.Client) -> None:
    server.routes["/gone"] = lambda h: _send(h, 410, b"bye")
    result = fetch_url(server.url("/gone"), policy=SMALL, client=client)
    assert result.gone and result.status == 410 and result.error_kind == "http_error"


def test_404_is_an_http_error(server: Server, client: httpx.Client) -> None:
    result = fetch_url(server.url("/nothing"), policy=SMALL, client=client)
    assert result.status == 404 and not result.gone and result.error == "HTTP 404 Not Found"


def test_429_retry_after_seconds(server: Server, client: httpx.Client) -> None:
    server.routes["/busy"] = lambda h: _send(h, 429, b"", Retry_After="120")
    result = fetch_url(server.url("/busy"), policy=SMALL, client=client)
    assert result.status == 429 and result.retry_after == 120.0
    assert "retry after 120 s" in (result.error or "")


def test_503_retry_after_http_date(server: Server, client: httpx.Client) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    server.routes["/busy"] = lambda h: _send(h, 503, b"", Retry_After=when)
    result = fetch_url(server.url("/busy"), policy=SMALL, client=client)
    assert result.status == 503 and result.retry_after is not None
    assert 80 <= result.retry_after <= 91


def test_parse_retry_after_edge_cases() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 01 Jan 2020 00:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("Wed, 01 Jan 2025 00:01:00 GMT", now=now) == 60.0
    assert parse_retry_after("9" * 5000) is not None  # no int-conversion blow-up


def test_empty_body(server: Server, client: httpx.Client) -> None:
    server.routes["/empty"] = lambda h: _send(h, 200, b"", Content_Type="application/rss+xml")
    result = fetch_url(server.url("/empty"), policy=SMALL, client=client)
    assert result.error is None and result.content == b""
    assert parse_feed(result.content, url=result.final_url).error == "empty document"


def test_html_page_instead_of_feed(server: Server, client: httpx.Client) -> None:
    page = b"<!DOCTYPE html><html><head><title>Home</title></head><body><p>Hi</p></body></html>"
    server.routes["/"] = lambda h: _send(h, 200, page, Content_Type="text/html")
    result = fetch_url(server.url("/"), policy=SMALL, client=client)
    parsed = parse_feed(
        result.content or b"", url=result.final_url, content_type=result.headers.get("content-type")
    )
    assert parsed.entries == () and parsed.error == "not a feed: the document is an HTML page"


def test_invalid_utf8_feed_still_yields_entries(server: Server, client: httpx.Client) -> None:
    body = FEED.replace(b"First", b"Fi\xff\xfe rst")
    server.routes["/bad"] = lambda h: _send(h, 200, body, Content_Type="text/xml; charset=utf-8")
    result = fetch_url(server.url("/bad"), policy=SMALL, client=client)
    parsed = parse_feed(
        result.content or b"", url=result.final_url, content_type=result.headers.get("content-type")
    )
    assert len(parsed.entries) == 1 and parsed.entries[0].guid == "g1"
    assert parsed.entries[0].title is not None and "rst" in parsed.entries[0].title


def _serves(doc: bytes) -> Handler:
    return lambda h: _send(h, 200, doc, Content_Type="text/xml")


def test_entity_bomb_over_http_is_bounded(server: Server, client: httpx.Client) -> None:
    from tests.test_parse import BILLION_LAUGHS, QUADRATIC_BLOWUP

    for path, doc in (("/lol", BILLION_LAUGHS), ("/quad", QUADRATIC_BLOWUP)):
        server.routes[path] = _serves(doc)
        started = time.monotonic()
        result = fetch_url(server.url(path), policy=SMALL, client=client)
        parsed = parse_feed(result.content or b"", url=result.final_url)
        assert time.monotonic() - started < 5
        assert sum(len(e.title or "") + len(e.content) for e in parsed.entries) < 1_000_000


def test_external_entity_over_http_is_not_expanded(server: Server, client: httpx.Client) -> None:
    from tests.test_parse import EXTERNAL_ENTITY, assert_no_passwd

    server.routes["/xxe"] = lambda h: _send(h, 200, EXTERNAL_ENTITY, Content_Type="text/xml")
    result = fetch_url(server.url("/xxe"), policy=SMALL, client=client)
    assert_no_passwd(parse_feed(result.content or b"", url=result.final_url))


@pytest.mark.parametrize(
    "url", ["ftp://example.com/feed", "http://", "not a url", "http://999.1.1.1/"]
)
def test_invalid_urls(client: httpx.Client, url: str) -> None:
    result = fetch_url(url, policy=FetchPolicy(), client=client)
    assert result.error_kind == "invalid_url" and result.error


def test_connection_refused(client: httpx.Client) -> None:
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = fetch_url(f"http://127.0.0.1:{port}/", policy=SMALL, client=client)
    assert result.error_kind == "connection"


def test_client_is_shared_across_threads(server: Server, client: httpx.Client) -> None:
    server.routes["/feed.xml"] = _conditional
    results: list[Any] = []

    def work() -> None:
        results.append(fetch_url(server.url("/feed.xml"), policy=SMALL, client=client))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r.content == FEED for r in results)


def test_without_client_a_temporary_one_is_used(server: Server) -> None:
    server.routes["/feed.xml"] = _conditional
    assert fetch_url(server.url("/feed.xml"), policy=SMALL).content == FEED


@pytest.fixture
def keepalive_server() -> Iterator[tuple[Server, list[tuple[str, int]]]]:
    """An HTTP/1.1 (keep-alive) server answering `_conditional`; also yields the
    connections it accepted."""
    connections: list[tuple[str, int]] = []
    box: dict[str, Server] = {}

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            connections.append(self.client_address)

        def do_GET(self) -> None:
            box["s"].seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            _conditional(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    httpd.daemon_threads = True
    box["s"] = Server(port=httpd.server_address[1], routes={})
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield box["s"], connections
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_304_leaves_its_connection_open_for_the_next_fetch(
    keepalive_server: tuple[Server, list[tuple[str, int]]], client: httpx.Client
) -> None:
    # Closing an unread 304 used to drop the connection: a new one for every poll.
    server, connections = keepalive_server
    url = server.url("/feed.xml")
    first = fetch_url(url, policy=SMALL, client=client)
    later = [fetch_url(url, etag=first.etag, policy=SMALL, client=client) for _ in range(3)]
    assert first.status == 200 and [r.status for r in later] == [304, 304, 304]
    assert all(r.not_modified and r.etag == '"v1"' for r in later)
    assert len(server.seen) == 4 and len(connections) == 1


def test_kept_connection_is_checked_again_under_a_stricter_policy(
    keepalive_server: tuple[Server, list[tuple[str, int]]], client: httpx.Client, fake_dns: None
) -> None:
    # A connection opened while private addresses were allowed stays in the pool; a
    # fetch that may not reach them must still be refused on it.
    server, connections = keepalive_server
    url = server.url("/feed.xml", "feeds.test")
    allowed = fetch_url(url, policy=SMALL, client=client)
    assert allowed.status == 200
    refused = fetch_url(url, etag=allowed.etag, policy=FetchPolicy(), client=client)
    assert refused.error_kind == "blocked_address" and not refused.not_modified
    assert len(connections) == 1
