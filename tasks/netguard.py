"""SSRF guard: decide whether a URL or an IP address may be fetched.

Feed URLs come from users and OPML files, so a URL must never make the worker reach
inside the network it runs in (cloud metadata at 169.254.169.254, Redis on loopback,
a router on 192.168.x.x). Two checks, both here:

- `check_url` refuses non-http(s) schemes and hosts that *are* forbidden addresses,
  however they are spelled (2130706433, 0177.0.0.1, 0x7f.1, [::ffff:127.0.0.1]).
- `resolve_and_check` resolves a hostname and returns only the addresses that may be
  connected to. The fetcher connects to exactly those (see `tasks.fetch`), so a DNS
  answer that changes between the check and the connect cannot slip through.

No network I/O happens here except the DNS look-up in `resolve_and_check`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from tasks.errors import NewswatchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})

# The setting a user flips to reach local feed servers; named in refusal messages so
# the person reading `feeds list` knows what to change.
ALLOW_SETTING = "NEWSWATCH_ALLOW_PRIVATE_ADDRESSES=1"


class FetchError(NewswatchError):
    """Root of the fetch/guard errors (to be re-parented under the project's root).

    Carries the URL or host it is about, so a message always names the resource.
    """

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.target = target


class InvalidURL(FetchError):
    """The URL cannot be fetched at all: bad syntax, no host, or not http(s)."""


class BlockedAddress(FetchError):
    """The URL's host is, or resolves to, an address the guard refuses."""


class ResolveError(FetchError):
    """The host name could not be resolved."""


# One part of a legacy numeric IPv4 spelling: decimal, 0-prefixed octal or 0x-hex.
_NUMERIC_PART = re.compile(r"^(?:0[xX][0-9a-fA-F]*|[0-9]+)$")


def _parse_ipv4_part(part: str) -> int | None:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        if any(c not in "01234567" for c in part):
            return None
        return int(part, 8)
    return int(part, 10)


def parse_ip_host(host: str) -> IPAddress | None:
    """Return the IP address a URL host denotes, or None if it is a host name.

    Accepts every spelling that C resolvers (inet_aton) and browsers (WHATWG URL)
    accept, because that is what an attacker uses to hide 127.0.0.1: one to four
    dot-separated parts, each decimal, octal (leading 0) or hex (0x), the last part
    filling the remaining bytes (so "2130706433" and "127.1" are 127.0.0.1).
    Raises InvalidURL for a host that looks numeric but is out of range ("999.1.1.1"):
    it is neither a valid address nor a name we should hand to DNS.
    """
    h = host.strip()
    if len(h) > 1 and h.endswith("."):
        h = h[:-1]  # a fully qualified "127.0.0.1." is still 127.0.0.1
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if ":" in h:
        # IPv6; a zone id ("fe80::1%eth0") is dropped, the address still decides.
        try:
            return ipaddress.IPv6Address(h.split("%", 1)[0])
        except ValueError as exc:
            raise InvalidURL(f"invalid IPv6 address {host!r}", target=host) from exc
    parts = h.split(".")
    if not h or not all(_NUMERIC_PART.match(p) for p in parts):
        return None
    if len(parts) > 4:
        raise InvalidURL(f"invalid IPv4 address {host!r}", target=host)
    values = [_parse_ipv4_part(p) for p in parts]
    if any(v is None for v in values):
        raise InvalidURL(f"invalid IPv4 address {host!r}", target=host)
    nums = [v for v in values if v is not None]
    *head, last = nums
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        raise InvalidURL(f"invalid IPv4 address {host!r}", target=host)
    value = 0
    for v in head:
        value = value * 256 + v
    value = value * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(value)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64, Teredo), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in ipaddress.IPv6Network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def why_blocked(ip: IPAddress) -> str | None:
    """Name the reason an address is refused ("loopback", ...), or None if it is public.

    Only globally routable unicast addresses are allowed; an IPv6 address that embeds
    an IPv4 one is judged by the IPv4 one too (::ffff:127.0.0.1 is loopback).
    """
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = why_blocked(inner)
            if reason is not None:
                return reason
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.IPv4Network("100.64.0.0/10"):
        return "shared (carrier-grade NAT)"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-global"
    return None


def _refusal(ip: IPAddress, reason: str, what: str) -> BlockedAddress:
    return BlockedAddress(
        f"refusing to connect to {what}: {ip} is a {reason} address (set {ALLOW_SETTING} to allow)",
        target=what,
    )


def check_url(url: str, *, allow_private: bool) -> None:
    """Raise InvalidURL or BlockedAddress unless `url` may be requested.

    Checks the scheme and the host as written. A host *name* is not resolved here
    (that happens at connect time, see `resolve_and_check`), except that names which
    can only mean this machine ("localhost", "*.localhost") are refused outright.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidURL(f"invalid URL {url!r}: {exc}", target=url) from exc
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        shown = f"{scheme!r}" if scheme else "no scheme"
        raise InvalidURL(f"refusing URL {url!r}: {shown}, only http and https", target=url)
    host = parts.hostname
    if not host:
        raise InvalidURL(f"invalid URL {url!r}: no host", target=url)
    if port == 0:
        raise InvalidURL(f"invalid URL {url!r}: port 0", target=url)
    if any(c in host for c in " \t\r\n\\/@"):
        raise InvalidURL(f"invalid URL {url!r}: bad characters in host", target=url)
    ip = parse_ip_host(host)
    if allow_private:
        return
    if ip is not None:
        reason = why_blocked(ip)
        if reason is not None:
            raise _refusal(ip, reason, url)
        return
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        raise BlockedAddress(
            f"refusing to connect to {url}: {host} is this machine (set {ALLOW_SETTING} to allow)",
            target=url,
        )


def resolve_and_check(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Resolve `host` and return the addresses that may be connected to, in DNS order.

    Addresses the guard refuses are dropped; if none is left, BlockedAddress is raised
    (so "localhost" and a name an attacker points at 10.0.0.1 are refused). The caller
    must connect to one of the returned addresses, never re-resolve the name: that is
    what closes the DNS-rebinding gap.
    """
    literal = parse_ip_host(host)
    if literal is not None:
        candidates: list[str] = [str(literal)]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as exc:
            raise ResolveError(f"could not resolve host {host!r}: {exc}", target=host) from exc
        candidates = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            addr = str(sockaddr[0]).split("%", 1)[0]
            if addr not in candidates:
                candidates.append(addr)
    if allow_private:
        return candidates
    allowed: list[str] = []
    first_refusal: BlockedAddress | None = None
    for addr in candidates:
        ip = ipaddress.ip_address(addr)
        reason = why_blocked(ip)
        if reason is None:
            allowed.append(addr)
        elif first_refusal is None:
            first_refusal = _refusal(ip, reason, host)
    if not allowed:
        raise first_refusal or ResolveError(f"no address for host {host!r}", target=host)
    return allowed
