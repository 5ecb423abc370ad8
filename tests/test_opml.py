"""OPML import and export."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.opml import build_opml, parse_opml

NESTED = b"""<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0"><head><title>My feeds</title></head><body>
  <outline text="Korea">
    <outline text="Yonhap" title="Yonhap News" type="rss" xmlUrl="https://en.yna.co.kr/RSS/news.xml"/>
    <outline text="Defense">
      <outline text="Deep" xmlUrl="http://Defense.Example/feed?x=1"/>
    </outline>
  </outline>
  <outline text="dup" xmlUrl="https://en.yna.co.kr/RSS/news.xml"/>
  <outline text="bad scheme" xmlUrl="javascript:alert(1)"/>
  <outline text="no host" xmlUrl="http:///x"/>
  <outline text="feed scheme" xmlurl="feed://podcasts.example/rss"/>
  <outline text="Folder only"/>
</body></opml>"""


def test_nested_duplicates_and_invalid() -> None:
    result = parse_opml(NESTED)
    assert result.feeds == [
        ("https://en.yna.co.kr/RSS/news.xml", "Yonhap News"),
        ("http://defense.example/feed?x=1", "Deep"),
        ("http://podcasts.example/rss", "feed scheme"),
    ]
    assert len(result.errors) == 2
    assert "javascript:alert(1)" in result.errors[0] and "line" in result.errors[0]


def test_entities_are_not_expanded() -> None:
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    doc = (
        '<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY l0 "lol">'
        + laughs
        + '<!ENTITY xxe SYSTEM "file:///etc/passwd">]><opml version="2.0"><body>'
        '<outline text="&l9;&xxe;" xmlUrl="http://a.example/"/>'
        '<outline text="ok" xmlUrl="http://b.example/"/></body></opml>'
    ).encode()
    started = time.monotonic()
    result = parse_opml(doc)
    assert time.monotonic() - started < 1
    urls = [u for u, _ in result.feeds]
    assert urls == ["http://a.example/", "http://b.example/"]
    assert all("root:" not in (t or "") and len(t or "") < 100 for _, t in result.feeds)


def test_not_opml() -> None:
    assert parse_opml(b"").errors and parse_opml(b"").feeds == []
    assert parse_opml(b"<html><body>hi</body></html>").errors
    assert parse_opml(b"\xff\xfe garbage").feeds == []


def test_broken_xml_keeps_what_it_can() -> None:
    doc = b'<opml><body><outline text="A & B" xmlUrl="http://a.example/"/><outline'
    result = parse_opml(doc)
    assert (
        result.feeds == [("http://a.example/", "A & B")]
        or result.feeds[0][0] == "http://a.example/"
    )
    assert result.errors


def test_build_round_trip() -> None:
    feeds = [("https://a.example/rss", "A & <B>"), ("http://b.example/", None)]
    doc = build_opml(feeds, "Export \x01")
    assert doc.startswith(b"<?xml")
    assert parse_opml(doc).feeds == feeds


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.from_regex(r"https?://[a-z]{1,10}\.example/[a-z0-9/]{0,10}", fullmatch=True),
            st.one_of(st.none(), st.text(min_size=1, max_size=30)),
        ),
        max_size=10,
        unique_by=lambda f: f[0],
    )
)
def test_build_then_parse_keeps_every_feed(feeds: list[tuple[str, str | None]]) -> None:
    result = parse_opml(build_opml(feeds, "t"))
    assert [u for u, _ in result.feeds] == [
        u.rstrip("/") + "/" if u.count("/") == 2 else u for u, _ in feeds
    ]
    assert result.errors == []
