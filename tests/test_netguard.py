"""The SSRF guard: every spelling of an internal address is refused."""

from __future__ import annotations

import pytest

from tasks.netguard import (
    BlockedAddress,
    FetchError,
    InvalidURL,
    check_url,
    parse_ip_host,
    resolve_and_check,
)

BLOCKED = [
    "http://127.0.0.1/",
    "http://2130706433/",  # decimal
    "http://0177.0.0.1/",  # octal
    "http://0x7f.0.0.1/",  # hex
    "http://0x7f000001/",
    "http://127.1/",  # short form
    "http://127.0.0.1./",  # trailing dot
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[0:0:0:0:0:ffff:7f00:1]/",
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://0.0.0.0/",
    "http://0/",
    "http://[::]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1:8080/",
    "http://[fc00::1]/",
    "http://100.64.0.1/",  # shared CGNAT space
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",
    "http://localhost/",
    "http://LOCALHOST:6379/",
    "http://api.localhost/",
    "http://user:pw@127.0.0.1/",
    "http://evil.example@127.0.0.1/",
]


@pytest.mark.parametrize("url", BLOCKED)
def test_internal_addresses_are_blocked(url: str) -> None:
    with pytest.raises(BlockedAddress) as info:
        check_url(url, allow_private=False)
    assert "NEWSWATCH_ALLOW_PRIVATE_ADDRESSES" in str(info.value)
    check_url(url, allow_private=True)  # allowed when the setting says so


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/feed",
        "https://93.184.216.34/",
        "http://[2606:4700::1111]/",
        "HTTPS://News.Example/x",
    ],
)
def test_public_urls_pass(url: str) -> None:
    check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://example.com/",
        "ftp://example.com/",
        "javascript:alert(1)",
        "example.com/feed",
        "http://",
        "http:///path",
        "http://example.com:99999/",
        "http://example.com:0/",
        "http://999.0.0.1/",
        "http://[::zz]/",
    ],
)
def test_invalid_urls(url: str) -> None:
    with pytest.raises(InvalidURL):
        check_url(url, allow_private=True)


def test_errors_share_a_root() -> None:
    assert issubclass(BlockedAddress, FetchError) and issubclass(InvalidURL, FetchError)


@pytest.mark.parametrize(
    ("host", "ip"),
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("192.168.257", "192.168.1.1"),
        ("8.8.8.8", "8.8.8.8"),
        ("example.com", None),
        ("1.2.3.example", None),
    ],
)
def test_parse_ip_host(host: str, ip: str | None) -> None:
    parsed = parse_ip_host(host)
    assert (str(parsed) if parsed else None) == ip


def test_resolve_and_check_refuses_names_that_resolve_inside() -> None:
    with pytest.raises(BlockedAddress):
        resolve_and_check("localhost", 80, allow_private=False)
    assert "127.0.0.1" in resolve_and_check("localhost", 80, allow_private=True)
    assert resolve_and_check("127.0.0.1", 80, allow_private=True) == ["127.0.0.1"]
    with pytest.raises(BlockedAddress):
        resolve_and_check("2130706433", 80, allow_private=False)


def test_resolve_and_check_drops_internal_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def fake(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    assert resolve_and_check("mixed.example", 443, allow_private=False) == ["93.184.216.34"]
