"""Fetch a feed (or an article page) from a server that may be slow, huge or hostile.

`fetch_url` never raises for network or HTTP trouble: every outcome, good or bad, is a
`FetchResult`, and a failure carries one human line (`error`) plus a machine word
(`error_kind`) the caller stores on the feed. Only programming errors escape.

What it defends against, and how:

- Slow servers: httpx's connect/read timeouts are per socket operation, so a server
  dripping one byte a second never trips them. A total deadline is enforced at the socket
  (every read, write and connect gets at most the time left, see `_DeadlineStream`) and
  again between chunks.
- Huge bodies: the body is streamed and decoded here, chunk by bounded chunk, and the
  count is taken *after* decoding, so a 10 KB gzip/deflate/brotli bomb is cut at
  `max_bytes` without ever holding more than one 64 KiB decoded piece beyond it.
- Redirects: followed hop by hop (httpx's follow_redirects reads each 3xx body whole,
  and a bomb can hide there); every hop passes the SSRF guard; loops and long chains stop.
- SSRF and DNS rebinding: the client's network backend resolves the host, drops every
  address the guard refuses, and connects to one of the checked addresses itself
  (pinning). httpx still sends Host and TLS SNI for the host *name*, because only the
  TCP connect is redirected. We pin rather than check `server_addr` after the fact
  because a check after connecting has already opened a socket to the internal
  service (a plain-HTTP request to Redis or a metadata endpoint can act before any
  response is read). The post-connect `server_addr` check is still done as a second
  line, for callers who pass their own `httpx.Client` and for pooled connections opened
  under a more permissive policy.
"""

from __future__ import annotations

import contextlib
import email.utils
import ipaddress
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpcore
import httpx

from tasks.netguard import (
    ALLOW_SETTING,
    BlockedAddress,
    FetchError,
    InvalidURL,
    ResolveError,
    check_url,
    resolve_and_check,
    why_blocked,
)

try:  # brotli is optional: without it we simply do not advertise "br".
    import brotli as _brotli
except ImportError:  # pragma: no cover - depends on the environment
    _brotli = None

__all__ = [
    "BlockedAddress",
    "FetchError",
    "FetchPolicy",
    "FetchResult",
    "GuardedClient",
    "InvalidURL",
    "ResolveError",
    "fetch_page",
    "fetch_url",
    "make_client",
    "parse_retry_after",
]

MiB = 1024 * 1024
DEFAULT_USER_AGENT = "newswatch/0.1 (+https://github.com/newswatch/newswatch)"
FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/rdf+xml,"
    " application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
)
PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.5"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PERMANENT_REDIRECTS = frozenset({301, 308})
# Decoded output is produced in pieces of at most this size, so a bomb never allocates
# more than this beyond the cap.
_DECODE_PIECE = 64 * 1024


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Limits for one fetch. Defaults suit feeds polled by a background worker."""

    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    total_timeout: float = 60.0
    max_bytes: int = 10 * MiB  # counted after Content-Encoding decoding
    max_redirects: int = 5
    user_agent: str = DEFAULT_USER_AGENT
    allow_private: bool = False


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What happened when fetching one URL; exactly one of content / not_modified / error.

    `permanent_url` is set when the request reached a successful response through an
    unbroken chain of permanent redirects (301/308) from the URL asked for: the caller
    should store that URL instead. A temporary hop (302/303/307) anywhere before it
    breaks the chain, as the HTTP semantics say the original URL stays the one to use.
    """

    status: int | None
    final_url: str
    permanent_url: str | None = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False
    gone: bool = False
    retry_after: float | None = None
    error: str | None = None
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        """True when the fetch succeeded (content or 304)."""
        return self.error is None


class _TooLarge(FetchError):
    pass


class _DecodeFailed(FetchError):
    pass


class _RedirectLoop(FetchError):
    pass


# --- the pinned, deadline-aware network backend ------------------------------------------

# Per-call settings handed from fetch_url to the shared client's backend. Context
# variables are per thread, so one client can serve many threads with different policies.
_allow_private: ContextVar[bool] = ContextVar("newswatch_allow_private", default=False)
_deadline: ContextVar[float | None] = ContextVar("newswatch_deadline", default=None)


@contextlib.contextmanager
def private_addresses_allowed(allowed: bool) -> Iterator[None]:
    """Within this block, requests through a guarded client may (or may not) reach
    private addresses: for callers that use the client directly, not via `fetch_url`."""
    token = _allow_private.set(allowed)
    try:
        yield
    finally:
        _allow_private.reset(token)


def _clamp(timeout: float | None, exc: type[Exception]) -> float | None:
    """The socket timeout to use: at most the time left before the total deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise exc("total time limit reached")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every operation ends by the fetch's total deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore backend that connects only to addresses the SSRF guard allowed.

    httpcore hands us the host *name*; we resolve it once, check every address, and
    connect to a checked IP. TLS is started later by httpcore with server_hostname set
    to the name, so certificates and SNI work as usual.
    """

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = resolve_and_check(host, port, allow_private=_allow_private.get())
        last_error: Exception | None = None
        for address in addresses:
            try:
                stream = self._inner.connect_tcp(
                    address,
                    port,
                    timeout=_clamp(timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                last_error = exc
                continue
            return _DeadlineStream(stream)
        assert last_error is not None  # resolve_and_check never returns an empty list
        raise last_error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx transport whose connection pool uses `GuardedBackend`.

    httpx does not expose a network_backend argument, so the pool it builds is replaced
    by an equivalent one that has ours. No proxy support on purpose: a proxy would make
    the guard check the proxy's address instead of the feed's.
    """

    def __init__(self, *, limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        # One SSL context for both pools: loading the CA bundle takes tens of ms.
        ssl_context = httpx.create_ssl_context(trust_env=False)
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(),
        )


class GuardedClient(httpx.Client):
    """The client `make_client` builds: an httpx.Client over a `GuardedTransport`.

    `fetch_url` hands its requests straight to `guarded_transport`, the one layer that
    matters for a feed GET (pinned connect, pool, timeouts): the client's URL merging,
    cookie jar, auth and hook machinery were about a third of the CPU time of a 304,
    and feeds use none of them (no cookies are kept between polls). Other callers use
    it as any httpx.Client.
    """

    def __init__(self, policy: FetchPolicy) -> None:
        self.guarded_transport = GuardedTransport()
        super().__init__(
            transport=self.guarded_transport,
            timeout=httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout),
            headers={"User-Agent": policy.user_agent},
            follow_redirects=False,
            trust_env=False,
        )


def make_client(policy: FetchPolicy | None = None) -> httpx.Client:
    """Build the guarded client a process shares across its threads.

    Call it lazily (in the worker child, never at import): a client's pool must not be
    shared across a fork. `fetch_url` sets timeouts and headers per request, so one
    client serves every policy.
    """
    return GuardedClient(policy or FetchPolicy())


def _send(
    client: httpx.Client, url: str, headers: dict[str, str], timeout: dict[str, float]
) -> httpx.Response:
    """Send a GET without following redirects; the response is streamed, not read."""
    if isinstance(client, GuardedClient):
        if client.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        request = httpx.Request("GET", url, headers=headers, extensions={"timeout": timeout})
        response = client.guarded_transport.handle_request(request)
        response.request = request
        return response
    request = client.build_request("GET", url, headers=headers, timeout=httpx.Timeout(**timeout))
    return client.send(request, stream=True, follow_redirects=False)


# --- content decoding under a cap ---------------------------------------------------------


class _Decoder(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes]: ...
    def flush(self) -> Iterator[bytes]: ...


class _ZlibDecoder:
    """gzip or deflate; output produced in bounded pieces (max_length)."""

    def __init__(self, encoding: str) -> None:
        self._raw_fallback = encoding == "deflate"
        # "deflate" is zlib-wrapped by the RFC but raw deflate in the wild; try zlib first.
        wbits = zlib.MAX_WBITS | 16 if encoding != "deflate" else zlib.MAX_WBITS
        self._d = zlib.decompressobj(wbits)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        buf = data
        while True:
            try:
                out = self._d.decompress(buf, _DECODE_PIECE)
            except zlib.error as exc:
                if self._raw_fallback and not self._started:
                    self._raw_fallback = False
                    self._d = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise _DecodeFailed(f"invalid compressed body: {exc}") from exc
            self._started = True
            if out:
                yield out
            buf = self._d.unconsumed_tail
            if not buf and len(out) < _DECODE_PIECE:
                return

    def flush(self) -> Iterator[bytes]:
        try:
            out = self._d.flush()
        except zlib.error as exc:  # pragma: no cover - flush rarely fails
            raise _DecodeFailed(f"invalid compressed body: {exc}") from exc
        if out:
            yield out


class _BrotliDecoder:
    def __init__(self) -> None:
        assert _brotli is not None
        self._d = _brotli.Decompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            out = self._d.process(data, output_buffer_limit=_DECODE_PIECE)
            if out:
                yield out
            while not self._d.can_accept_more_data():
                out = self._d.process(b"", output_buffer_limit=_DECODE_PIECE)
                if not out:
                    return
                yield out
        except _brotli.error as exc:
            raise _DecodeFailed(f"invalid brotli body: {exc}") from exc

    def flush(self) -> Iterator[bytes]:
        return iter(())


def _decoders(content_encoding: str | None) -> list[_Decoder]:
    """Decoders in the order to apply them (the reverse of the header's order)."""
    names = [n.strip().lower() for n in (content_encoding or "").split(",") if n.strip()]
    decoders: list[_Decoder] = []
    for name in reversed(names):
        if name == "identity":
            continue
        if name in ("gzip", "x-gzip", "deflate"):
            decoders.append(_ZlibDecoder("deflate" if name == "deflate" else "gzip"))
        elif name == "br" and _brotli is not None:
            decoders.append(_BrotliDecoder())
        else:
            raise _DecodeFailed(f"unsupported Content-Encoding {name!r}")
    return decoders


def _run(decoders: list[_Decoder], data: bytes) -> Iterator[bytes]:
    if not decoders:
        if data:
            yield data
        return
    for piece in decoders[0].feed(data):
        yield from _run(decoders[1:], piece)


def _finish(decoders: list[_Decoder]) -> Iterator[bytes]:
    for i, decoder in enumerate(decoders):
        for piece in decoder.flush():
            yield from _run(decoders[i + 1 :], piece)


def _accept_encoding() -> str:
    return "gzip, deflate, br" if _brotli is not None else "gzip, deflate"


def _read_body(response: httpx.Response, policy: FetchPolicy, deadline: float) -> bytes:
    """Read and decode the body, stopping at max_bytes (decoded) or the deadline."""
    decoders = _decoders(response.headers.get("content-encoding"))
    parts: list[bytes] = []
    size = 0

    def take(pieces: Iterator[bytes]) -> None:
        nonlocal size
        for piece in pieces:
            size += len(piece)
            if size > policy.max_bytes:
                raise _TooLarge(f"response larger than {policy.max_bytes} bytes (decoded)")
            parts.append(piece)

    for raw in response.iter_raw():
        # Also checked here, not only at the socket, for clients without our backend.
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("total time limit reached")
        take(_run(decoders, raw))
    take(_finish(decoders))
    return b"".join(parts)


# --- status semantics ----------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), or None.

    A date in the past means 0; anything unparseable means None (the caller's own
    backoff applies).
    """
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text[:12]))  # bounded: a 5000-digit number is not a delay
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def _kept_headers(response: httpx.Response) -> dict[str, str]:
    return {
        name: response.headers[name]
        for name in ("content-type", "etag", "last-modified")
        if name in response.headers
    }


def _check_peer(response: httpx.Response, allow_private: bool, url: str) -> None:
    """Refuse the response if the socket it came from is a forbidden address."""
    if allow_private:
        return
    stream = response.extensions.get("network_stream")
    if stream is None:
        return
    peer = stream.get_extra_info("server_addr")
    if not peer:
        return
    try:
        ip = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return
    reason = why_blocked(ip)
    if reason is not None:
        raise BlockedAddress(
            f"refusing response from {url}: connected to {ip}, a {reason} address"
            f" (set {ALLOW_SETTING} to allow)",
            target=url,
        )


def _finish_empty(response: httpx.Response) -> None:
    """Read a bodiless response (304) to its end, so its connection can be reused.

    httpcore returns a connection to the pool only when the response was read to
    the end; closing a 304 unread dropped the connection, and the next request paid for
    a new TCP connection (and the server for a new thread): 1,000 conditional GETs
    from 10 threads took ~2.2 s here instead of ~0.8. A 304 has no body by definition
    (h11 knows), so nothing is downloaded. Other unread responses (redirects, errors)
    are still dropped unread: a hostile server can drip or inflate their bodies.
    """
    with contextlib.suppress(httpx.HTTPError):
        response.read()


def _error(
    kind: str, message: str, url: str, *, status: int | None = None, **extra: Any
) -> FetchResult:
    return FetchResult(status=status, final_url=url, error=message, error_kind=kind, **extra)


def _http_error(response: httpx.Response, url: str) -> FetchResult:
    status = response.status_code
    reason = response.reason_phrase or ""
    retry_after = None
    message = f"HTTP {status} {reason}".rstrip()
    if status in (429, 503):
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is not None:
            message += f" (retry after {retry_after:.0f} s)"
    if status == 410:
        message += ": the feed is gone"
    return FetchResult(
        status=status,
        final_url=url,
        headers=_kept_headers(response),
        gone=status == 410,
        retry_after=retry_after,
        error=message,
        error_kind="http_error",
    )


def _describe_timeout(exc: httpx.TimeoutException, policy: FetchPolicy, deadline: float) -> str:
    if time.monotonic() >= deadline - 0.05 or "total time limit" in str(exc):
        return f"gave up after {policy.total_timeout:g} s (total time limit)"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connect timed out after {policy.connect_timeout:g} s"
    if isinstance(exc, httpx.PoolTimeout):
        return "no free connection in the pool"
    return f"no data for {policy.read_timeout:g} s (read timeout)"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


# --- the fetch -----------------------------------------------------------------------------


def fetch_url(
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    policy: FetchPolicy,
    client: httpx.Client | None = None,
    accept: str = FEED_ACCEPT,
) -> FetchResult:
    """GET `url` under `policy` and describe the outcome; never raises for I/O trouble.

    Sends If-None-Match / If-Modified-Since when `etag` / `last_modified` are given.
    Pass the process's shared `client` (from `make_client`); without one a temporary
    guarded client is created and closed.
    """
    own_client = client is None
    http = client if client is not None else make_client(policy)
    deadline = time.monotonic() + policy.total_timeout
    allow_token = _allow_private.set(policy.allow_private)
    deadline_token = _deadline.set(deadline)
    try:
        return _fetch(url, etag, last_modified, policy, http, deadline, accept)
    finally:
        _deadline.reset(deadline_token)
        _allow_private.reset(allow_token)
        if own_client:
            http.close()


def fetch_page(url: str, *, policy: FetchPolicy, client: httpx.Client | None = None) -> FetchResult:
    """GET a full article page (HTML) with the same guard, limits and result as feeds."""
    return fetch_url(url, policy=policy, client=client, accept=PAGE_ACCEPT)


def _fetch(
    url: str,
    etag: str | None,
    last_modified: str | None,
    policy: FetchPolicy,
    client: httpx.Client,
    deadline: float,
    accept: str,
) -> FetchResult:
    headers = {
        "User-Agent": policy.user_agent,
        "Accept": accept,
        "Accept-Encoding": _accept_encoding(),
    }
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified

    current = url.strip()
    visited = {current}
    permanent: str | None = None
    chain_permanent = True
    hops = 0
    while True:
        try:
            check_url(current, allow_private=policy.allow_private)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise httpx.ReadTimeout("total time limit reached")
            timeout = {
                "connect": min(policy.connect_timeout, remaining),
                "read": min(policy.read_timeout, remaining),
                "write": min(policy.read_timeout, remaining),
                "pool": min(policy.connect_timeout, remaining),
            }
            response = _send(client, current, headers, timeout)
            with contextlib.closing(response):
                _check_peer(response, policy.allow_private, current)
                status = response.status_code
                location = response.headers.get("location")
                if status in REDIRECT_STATUSES and location:
                    # Closing without reading: the 3xx body is never downloaded.
                    target = str(response.url.join(location.strip()))
                    if target in visited:
                        raise _RedirectLoop(f"redirect loop: {current} -> {target}")
                    if hops >= policy.max_redirects:
                        return _error(
                            "too_many_redirects",
                            f"more than {policy.max_redirects} redirects (last to {target})",
                            current,
                            status=status,
                        )
                    if chain_permanent and status in PERMANENT_REDIRECTS:
                        permanent = target
                    else:
                        chain_permanent = False
                    visited.add(target)
                    current = target
                    hops += 1
                    continue
                if status == 304:
                    _finish_empty(response)
                    return FetchResult(
                        status=304,
                        final_url=current,
                        permanent_url=permanent,
                        headers=_kept_headers(response),
                        etag=response.headers.get("etag") or etag,
                        last_modified=response.headers.get("last-modified") or last_modified,
                        not_modified=True,
                    )
                if not 200 <= status < 300:
                    return _http_error(response, current)
                content = _read_body(response, policy, deadline)
                return FetchResult(
                    status=status,
                    final_url=current,
                    permanent_url=permanent,
                    content=content,
                    headers=_kept_headers(response),
                    etag=response.headers.get("etag"),
                    last_modified=response.headers.get("last-modified"),
                )
        except BlockedAddress as exc:
            return _error("blocked_address", str(exc), current)
        except (InvalidURL, httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return _error("invalid_url", f"invalid URL {current!r}: {_one_line(exc)}", current)
        except ResolveError as exc:
            return _error("connection", str(exc), current)
        except _RedirectLoop as exc:
            return _error("redirect_loop", str(exc), current)
        except _TooLarge as exc:
            return _error("too_large", str(exc), current)
        except (_DecodeFailed, httpx.DecodingError) as exc:
            return _error("decoding", _one_line(exc), current)
        except httpx.TimeoutException as exc:
            return _error("timeout", _describe_timeout(exc, policy, deadline), current)
        except (httpx.RemoteProtocolError, httpx.LocalProtocolError) as exc:
            return _error("protocol", f"broken HTTP response: {_one_line(exc)}", current)
        except httpx.TransportError as exc:
            return _error("connection", f"connection failed: {_one_line(exc)}", current)
        except httpx.TooManyRedirects as exc:  # pragma: no cover - we never let httpx follow
            return _error("too_many_redirects", _one_line(exc), current)
