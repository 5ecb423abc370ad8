"""The lxml fast path gives exactly what the feedparser path gives, or declines.

Differential property tests generate RSS 2.0 and Atom 1.0 documents full of the cases
feedparser treats specially and compare `parse_fast` with `parse_with_feedparser`: the
`ParsedFeed`s, and (stricter) the raw values both hand to the shared builder. Example
tests pin each feedparser quirk the fast path reproduces, and check that ordinary
feeds really take the fast path.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tasks.fastfeed import parse_fast, read_result, used_keys
from tasks.parse import ParsedFeed, parse_feed, parse_with_feedparser, run_feedparser

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
URL = "https://news.example.com/feeds/main.xml"
ROOT = Path(__file__).resolve().parent.parent

NS = {
    "atom": "http://www.w3.org/2005/Atom",
    "content": "http://purl.org/rss/1.0/modules/content/",
    "dc": "http://purl.org/dc/elements/1.1/",
    "media": "http://search.yahoo.com/mrss/",
    "x": "http://unknown.example/ns",
}
RSS_NS = " ".join(f'xmlns:{p}="{u}"' for p, u in NS.items())


def same(doc: bytes, content_type: str | None = None, url: str = URL) -> ParsedFeed | None:
    """Assert the fast path agrees with feedparser (or declines); return its result."""
    fast = parse_fast(doc, url=url, content_type=content_type, now=NOW)
    if fast is None:
        return None
    slow = parse_with_feedparser(doc, url=url, content_type=content_type, now=NOW)
    assert fast == slow
    ours = used_keys(read_result(doc, content_type=content_type))
    assert ours == used_keys(run_feedparser(doc, content_type=content_type))
    return fast


def taken(doc: bytes, content_type: str | None = None, url: str = URL) -> ParsedFeed:
    """Like `same`, and the fast path must not decline."""
    fast = same(doc, content_type, url)
    assert fast is not None, "the fast path declined"
    return fast


def rss(items: str, channel: str = "<title>Example News</title><link>/</link>") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0" {RSS_NS}><channel>'
        f"{channel}{items}</channel></rss>"
    ).encode()


def atom(entries: str, feed: str = "<title>Example</title>", attrs: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="{NS["atom"]}" '
        f'xmlns:media="{NS["media"]}" xmlns:x="{NS["x"]}" {attrs}>{feed}{entries}</feed>'
    ).encode()


# --- documents built from random parts -----------------------------------------------------

# Any XML 1.0 character, C1 controls included (feedparser maps them through cp1252).
_xml_char = st.characters(
    codec="utf-8",
    exclude_categories=("Cs",),
    exclude_characters="\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x11\x12"
    "\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\ufffe\uffff",
)
_words = st.sampled_from(
    [
        "Seoul",
        "troops",
        "cost-sharing",
        "Tom & Jerry",
        "a < b",
        "<b>bold</b>",
        "<p>para</p>",
        "</i>",
        "&amp;",
        "&eacute;",
        "&bogus;",
        "&#8212;",
        "Ã©",  # UTF-8 read as Latin-1: feedparser repairs it
        "caf\u00e9",
        "\u0096dash",  # a C1 control: becomes an en dash
        "\u2019",
        "한국",
        "  ",
        "\n",
        "\t",
        "kim@example.com",
        "(Kim)",
        "http://x.example/y",
        "]]",
    ]
)


@st.composite
def plain_text(draw: st.DrawFn) -> str:
    """Unescaped text: words and random characters."""
    parts = draw(st.lists(st.one_of(_words, st.text(_xml_char, max_size=6)), max_size=6))
    return " ".join(parts) if draw(st.booleans()) else "".join(parts)


@st.composite
def xml_text(draw: st.DrawFn) -> str:
    """`plain_text` written as XML content: escaped, character references, CDATA."""
    out = []
    for _ in range(draw(st.integers(0, 3))):
        value = draw(plain_text())
        how = draw(st.sampled_from(["escape", "escape", "cdata", "refs"]))
        if how == "cdata" and "]]>" not in value:
            out.append(f"<![CDATA[{value}]]>")
        elif how == "refs":
            out.append("".join(f"&#{ord(c)};" if ord(c) > 127 or c in "&<" else c for c in value))
        else:
            out.append(html.escape(value, quote=False))
    if draw(st.booleans()):
        return "".join(out)
    return f" {''.join(out)}\n "  # feedparser strips values


_dates = st.sampled_from(
    [
        "Mon, 06 Jan 2025 10:00:00 +0900",
        "Mon, 06 Jan 2025 10:00:00 GMT",
        "06 Jan 25 10:00 EST",
        "Mon, 06 Jan 07 10:00:00 GMT",
        "2025-01-06T10:00:00Z",
        "2025-01-06T10:00:00.123+02:00",
        "2025-01-06",
        "20250106T100000Z",
        "Tue Jan  7 10:00:00 2025",
        "0000-01-01T00:00:00Z",
        "2099-01-01T00:00:00Z",
        "not a date",
        "",
        "  2025-01-06T10:00:00Z  ",
    ]
)
_links = st.sampled_from(
    [
        "https://news.example.com/a",
        "http://other.example/story?id=1&amp;page=2",
        "http://other.example/q?a=1&amp;b;",
        "../story/1",
        "/story/2",
        "story3.html",
        "javascript:alert(1)",
        "http:///triple.example/x",
        "",
        "  https://news.example.com/padded  ",
        "urn:uuid:1234",
    ]
)
_types = st.sampled_from([None, "text", "html", "text/html", "text/plain", "TEXT", "xhtml"])
_langs = st.sampled_from([None, "en", "ko_KR", "", "en-GB"])
_bases = st.sampled_from([None, "https://base.example/dir/", "/rel/", "", "javascript:x"])


def _attr(name: str, value: str | None) -> str:
    return "" if value is None else f' {name}="{html.escape(value)}"'


def _el(tag: str, body: str, attrs: str = "") -> str:
    return f"<{tag}{attrs}>{body}</{tag}>"


@st.composite
def rss_item(draw: st.DrawFn) -> str:
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 9))):
        kind = draw(
            st.sampled_from(
                [
                    "title",
                    "title",
                    "link",
                    "guid",
                    "description",
                    "description",
                    "encoded",
                    "pubDate",
                    "dc:date",
                    "author",
                    "dc:creator",
                    "category",
                    "enclosure",
                    "comments",
                    "source",
                    "media",
                    "atom:link",
                    "unknown",
                    "language",
                ]
            )
        )
        lang = _attr("xml:lang", draw(_langs)) if draw(st.integers(0, 5)) == 0 else ""
        base = _attr("xml:base", draw(_bases)) if draw(st.integers(0, 5)) == 0 else ""
        extra = lang + base
        if kind == "title":
            parts.append(_el("title", draw(xml_text()), extra + _attr("type", draw(_types))))
        elif kind == "link":
            parts.append(_el("link", draw(_links), extra))
        elif kind == "guid":
            permalink = draw(st.sampled_from([None, "true", "false", "True"]))
            parts.append(_el("guid", draw(_links), extra + _attr("isPermaLink", permalink)))
        elif kind == "description":
            parts.append(_el("description", draw(xml_text()), extra))
        elif kind == "encoded":
            parts.append(_el("content:encoded", draw(xml_text()), extra))
        elif kind in ("pubDate", "dc:date"):
            parts.append(_el(kind, draw(_dates), extra))
        elif kind in ("author", "dc:creator"):
            parts.append(_el(kind, draw(xml_text()), extra))
        elif kind == "category":
            parts.append(_el("category", draw(xml_text()), ' domain="d"'))
        elif kind == "enclosure":
            parts.append('<enclosure url="http://e.example/a.mp3" length="1" type="audio/mpeg"/>')
        elif kind == "comments":
            parts.append(_el("comments", draw(_links)))
        elif kind == "source":
            parts.append(_el("source", draw(xml_text()), ' url="http://s.example/"'))
        elif kind == "media":
            parts.append('<media:thumbnail url="http://m.example/t.jpg" width="1"/>')
        elif kind == "atom:link":
            rel = draw(st.sampled_from([None, "alternate", "self", "enclosure"]))
            kind_attr = draw(st.sampled_from([None, "text/html", "application/pdf", "html"]))
            parts.append(
                f'<atom:link href="{html.escape(draw(_links))}"'
                f"{_attr('rel', rel)}{_attr('type', kind_attr)}/>"
            )
        elif kind == "unknown":
            parts.append(_el("x:" + draw(st.sampled_from(["rating", "extra", "thing"])), "v"))
        else:
            parts.append(_el("language", draw(st.sampled_from(["en", "ko", ""]))))
    attrs = _attr("xml:lang", draw(_langs)) if draw(st.booleans()) else ""
    return _el("item", "".join(parts), attrs)


@st.composite
def rss_document(draw: st.DrawFn) -> bytes:
    channel = []
    if draw(st.booleans()):
        channel.append(_el("title", draw(xml_text())))
    if draw(st.booleans()):
        channel.append(_el("link", draw(_links)))
    if draw(st.booleans()):
        channel.append(_el("language", draw(st.sampled_from(["en-us", "ko", " fr "]))))
    if draw(st.booleans()):
        channel.append(
            '<atom:link href="http://n.example/rss" rel="self" type="application/rss+xml"/>'
        )
    if draw(st.integers(0, 4)) == 0:
        channel.append(
            "<image><url>http://i.example/i.png</url><title>Logo</title><link>/</link></image>"
        )
    items = draw(st.lists(rss_item(), max_size=4))
    if draw(st.integers(0, 4)) == 0:  # a channel title after the items
        items.append(_el("title", draw(xml_text())))
    version = draw(st.sampled_from(["2.0", "2.0", "0.92", "2.01"]))
    lang = _attr("xml:lang", draw(_langs)) if draw(st.integers(0, 3)) == 0 else ""
    base = _attr("xml:base", draw(_bases)) if draw(st.integers(0, 3)) == 0 else ""
    decl = draw(
        st.sampled_from(
            ['<?xml version="1.0" encoding="utf-8"?>\n', "<?xml version='1.0'?>", "", "\ufeff"]
        )
    )
    body = (
        f'{decl}<rss version="{version}" {RSS_NS}{lang}{base}><channel>'
        f"{''.join(channel)}{''.join(items)}</channel></rss>"
    )
    return body.encode("utf-8")


@st.composite
def atom_person(draw: st.DrawFn, tag: str = "author") -> str:
    parts = []
    for part in draw(st.lists(st.sampled_from(["name", "email", "uri"]), max_size=3)):
        value = {
            "name": draw(xml_text()),
            "email": draw(st.sampled_from(["kim@example.com", "", " lee@example.org "])),
            "uri": draw(_links),
        }[part]
        parts.append(_el(part, value))
    text = draw(st.sampled_from(["", "\n  ", "stray"]))
    return _el(tag, text + "".join(parts))


@st.composite
def atom_entry(draw: st.DrawFn) -> str:
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 9))):
        kind = draw(
            st.sampled_from(
                [
                    "id",
                    "title",
                    "link",
                    "link",
                    "updated",
                    "published",
                    "content",
                    "summary",
                    "author",
                    "contributor",
                    "category",
                    "media",
                    "rights",
                ]
            )
        )
        lang = _attr("xml:lang", draw(_langs)) if draw(st.integers(0, 5)) == 0 else ""
        base = _attr("xml:base", draw(_bases)) if draw(st.integers(0, 5)) == 0 else ""
        extra = lang + base
        if kind == "id":
            parts.append(_el("id", draw(_links), extra))
        elif kind in ("title", "content", "summary", "rights"):
            parts.append(_el(kind, draw(xml_text()), extra + _attr("type", draw(_types))))
        elif kind == "link":
            rel = draw(st.sampled_from([None, "alternate", "self", "related", ""]))
            kind_attr = draw(st.sampled_from([None, "text/html", "application/xhtml+xml", "html"]))
            parts.append(
                f'<link href="{html.escape(draw(_links))}"{_attr("rel", rel)}'
                f"{_attr('type', kind_attr)}{extra}/>"
            )
        elif kind in ("updated", "published"):
            parts.append(_el(kind, draw(_dates), extra))
        elif kind in ("author", "contributor"):
            parts.append(draw(atom_person(kind)))
        elif kind == "category":
            parts.append('<category term="politics"/>')
        else:
            parts.append('<media:thumbnail url="http://m.example/t.jpg"/>')
    attrs = _attr("xml:lang", draw(_langs)) if draw(st.booleans()) else ""
    if draw(st.integers(0, 3)) == 0:
        attrs += _attr("xml:base", draw(_bases))
    return _el("entry", "".join(parts), attrs)


@st.composite
def atom_document(draw: st.DrawFn) -> bytes:
    feed = []
    for kind in draw(st.lists(st.sampled_from(["title", "link", "id", "subtitle", "author"]))):
        if kind == "title":
            feed.append(_el("title", draw(xml_text()), _attr("type", draw(_types))))
        elif kind == "link":
            feed.append(f'<link href="{html.escape(draw(_links))}"/>')
        elif kind == "id":
            feed.append(_el("id", draw(_links)))
        elif kind == "subtitle":
            feed.append(_el("subtitle", draw(xml_text())))
        else:
            feed.append(draw(atom_person()))
    entries = "".join(draw(st.lists(atom_entry(), max_size=4)))
    lang = _attr("xml:lang", draw(_langs)) if draw(st.booleans()) else ""
    base = _attr("xml:base", draw(_bases)) if draw(st.integers(0, 2)) == 0 else ""
    return atom(entries, "".join(feed), lang + base)


_content_types = st.sampled_from(
    [
        None,
        "application/rss+xml",
        "application/atom+xml; charset=utf-8",
        "text/xml",  # us-ascii by RFC 3023: bozo when the document is not ASCII
        "text/xml; charset=utf-8",
        "text/html",
        "application/xml; charset=iso-8859-1",
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rss_document(), _content_types)
def test_rss_fast_path_equals_feedparser(doc: bytes, content_type: str | None) -> None:
    same(doc, content_type)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(atom_document(), _content_types)
@example(atom(""), None)
def test_atom_fast_path_equals_feedparser(doc: bytes, content_type: str | None) -> None:
    same(doc, content_type)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(rss_document(), atom_document()), st.data())
def test_mutated_documents_equal_or_decline(doc: bytes, data: st.DataObject) -> None:
    # Broken documents must decline (or, rarely, still agree): never a third answer.
    raw = bytearray(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        j = data.draw(st.integers(i, min(len(raw), i + 12)))
        raw[i:j] = data.draw(st.sampled_from([b"", b"<", b"&", b"<x>", b"\xff", raw[i:j] * 2]))
    same(bytes(raw))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(xml_text(), _links, _dates, xml_text(), st.booleans()), min_size=1, max_size=5
    )
)
def test_plain_rss_takes_the_fast_path(items: list[tuple[str, str, str, str, bool]]) -> None:
    # The shape of nearly every news feed: the fast path must not decline it.
    body = "".join(
        f"<item><title>{t}</title><link>{html.escape(link)}</link>"
        f'<guid isPermaLink="{str(perma).lower()}">{html.escape(link)}</guid>'
        f"<pubDate>{d}</pubDate><description>{text}</description></item>"
        for t, link, d, text, perma in items
    )
    taken(rss(body))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(xml_text(), _links, _dates, xml_text()), min_size=1, max_size=5))
def test_plain_atom_takes_the_fast_path(entries: list[tuple[str, str, str, str]]) -> None:
    body = "".join(
        f'<entry><id>urn:e:{i}</id><title type="html">{t}</title>'
        f'<link rel="alternate" href="{html.escape(link)}"/><updated>{d}</updated>'
        f'<author><name>Kim</name></author><content type="html">{text}</content></entry>'
        for i, (t, link, d, text) in enumerate(entries)
    )
    taken(atom(body, '<title>A</title><link href="https://news.example.com/"/>'))


# --- what real feeds look like ---------------------------------------------------------------


def test_news_feed_takes_the_fast_path_and_matches() -> None:
    doc = rss(
        "".join(
            f"<item><title>Story {i} &amp; more</title><link>https://news.example.com/{i}</link>"
            f'<guid isPermaLink="false">id-{i}</guid><pubDate>Mon, 06 Jan 2025 10:0{i}:00 GMT'
            f"</pubDate><description>&lt;p&gt;Body {i}&lt;/p&gt;</description>"
            f"<dc:creator>Kim</dc:creator><category>World</category>"
            f'<media:thumbnail url="https://i.example/{i}.jpg" width="240"/></item>'
            for i in range(5)
        ),
        "<title>News</title><link>https://news.example.com/</link><language>en-gb</language>"
        '<atom:link href="https://news.example.com/rss" rel="self" type="application/rss+xml"/>'
        "<image><url>https://i.example/logo.png</url><title>News</title><link>/</link></image>"
        "<ttl>15</ttl><lastBuildDate>Mon, 06 Jan 2025 10:00:00 GMT</lastBuildDate>",
    )
    parsed = taken(doc)
    assert parsed.title == "News" and len(parsed.entries) == 5 and parsed.version == "rss20"
    first = parsed.entries[0]
    assert first.title == "Story 0 & more" and first.author == "Kim" and first.language == "en-gb"
    assert first.published == datetime(2025, 1, 6, 10, 0, tzinfo=UTC)


def test_parse_feed_uses_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.parse

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("feedparser was called")

    monkeypatch.setattr(tasks.parse, "run_feedparser", refuse)
    parsed = parse_feed(rss("<item><guid>1</guid><title>t</title></item>"), url=URL, now=NOW)
    assert parsed.entries[0].title == "t"


def test_declined_documents_still_parse_through_feedparser() -> None:
    rdf = (
        b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
        b'xmlns="http://purl.org/rss/1.0/"><channel><title>R</title></channel>'
        b'<item rdf:about="http://r.example/1"><title>r</title></item></rdf:RDF>'
    )
    assert parse_fast(rdf, url=URL, now=NOW) is None
    assert parse_feed(rdf, url=URL, now=NOW).entries[0].title == "r"


# --- feedparser's quirks, one by one -------------------------------------------------------


def test_title_that_looks_like_html_is_unescaped_in_rss_only() -> None:
    # RSS titles are "text/plain" until they look like HTML; Atom's type is believed.
    assert taken(rss("<item><title>Tom &amp;amp; Jerry</title></item>")).entries[0].title == (
        "Tom & Jerry"
    )
    entry = taken(atom("<entry><title>Tom &amp;amp; Jerry</title></entry>")).entries[0]
    assert entry.title == "Tom &amp; Jerry"


def test_first_non_empty_title_wins_until_a_source() -> None:
    doc = rss("<item><title></title><title>first</title><title>second</title></item>")
    assert taken(doc).entries[0].title == "first"
    doc = rss(
        "<item><title>first</title><source url='http://s/'>S</source><title>2nd</title></item>"
    )
    assert taken(doc).entries[0].title == "2nd"


def test_channel_title_after_items_replaces_the_first() -> None:
    doc = rss("<item><title>i</title></item><title>late</title>", "<title>early</title>")
    assert taken(doc).title == "late"


def test_guid_is_the_link_only_as_a_permalink_and_before_any_link() -> None:
    def url(item: str) -> str | None:
        return taken(rss(f"<item>{item}</item>")).entries[0].url

    assert url("<guid>https://g.example/1</guid>") == "https://g.example/1"
    assert url('<guid isPermaLink="false">https://g.example/1</guid>') is None
    assert url('<guid isPermaLink="True">https://g.example/1</guid>') is None  # case matters
    assert url("<link>https://l.example/</link><guid>https://g.example/</guid>") == (
        "https://l.example/"
    )
    assert url("<link></link><guid>https://g.example/</guid>") is None  # an empty link counts
    assert url("<guid>https://g.example/</guid><link>https://l.example/</link>") == (
        "https://l.example/"
    )


def test_permalink_guid_is_repaired_and_resolved() -> None:
    assert taken(rss("<item><guid>http:///x.example/y</guid></item>")).entries[0].guid == (
        "http://x.example/y"
    )
    doc = atom('<entry xml:base="https://b.example/d/"><id>1</id></entry>')
    assert taken(doc).entries[0].guid == "https://b.example/d/1"


def test_link_query_repair() -> None:
    doc = rss("<item><link>http://a.example/?x=1&amp;amp;y=2&amp;z;</link></item>")
    assert taken(doc).entries[0].url == "http://a.example/?x=1&y=2&z"


def test_atom_link_selection() -> None:
    def url(links: str) -> str | None:
        return taken(atom(f"<entry><id>urn:i</id>{links}</entry>")).entries[0].url

    assert url('<link href="https://a.example/1"/>') == "https://a.example/1"
    assert url('<link rel="self" href="https://a.example/s"/>') is None
    assert url('<link rel="alternate" type="application/pdf" href="https://a.example/p"/>') is None
    assert url('<link type="html" href="https://a.example/h"/>') == "https://a.example/h"
    two = '<link href="https://a.example/1"/><link href="https://a.example/2"/>'
    assert url(two) == "https://a.example/2"  # the last alternate wins


def test_atom_id_is_the_link_when_there_is_no_alternate() -> None:
    doc = atom("<entry><id>https://a.example/id</id><link rel='self' href='/s'/></entry>")
    assert taken(doc).entries[0].url == "https://a.example/id"


def test_xml_base_leaks_past_the_element_that_set_it() -> None:
    # feedparser restores the outer base only when it is non-empty.
    doc = rss(
        '<item><comments xml:base="https://leak.example/d/">c</comments>'
        "<link>page.html</link></item>"
    )
    assert taken(doc, url="https://feed.example/").entries[0].url == (
        "https://leak.example/d/page.html"
    )


def test_xml_lang_and_language() -> None:
    doc = atom('<entry xml:lang="ko_KR"><title>t</title></entry>', attrs='xml:lang="en"')
    assert taken(doc).entries[0].language == "ko-KR"
    assert (
        taken(rss("<item><title>t</title></item>", "<language>fr</language>")).entries[0].language
        == "fr"
    )


def test_xml_lang_first_seen_deep_in_the_document() -> None:
    # Bookkeeping for xml:base/xml:lang starts at the first one: earlier elements count.
    doc = atom(
        "<entry><id>urn:1</id><title>a</title></entry>"
        '<entry xml:lang="ko"><id>urn:2</id><title>b</title>'
        '<link xml:base="https://b.example/x/" href="y"/></entry>'
        "<entry><id>urn:3</id><title>c</title><link href='z'/></entry>"
    )
    first, second, third = taken(doc).entries
    assert (first.language, second.language, third.language) == (None, "ko", None)
    assert second.url == "https://b.example/x/y"
    assert third.url == "https://b.example/x/z"  # the base leaked (see above)


def test_second_description_becomes_content() -> None:
    # ... of type text/plain, unless it looks like HTML (a closing tag or an entity).
    doc = rss("<item><description>one</description><description>&lt;b&gt;two</description></item>")
    entry = taken(doc).entries[0]
    assert entry.content == "<b>two" and entry.content_type == "text"
    doc = rss(
        "<item><description>one</description><description>&lt;b&gt;2&lt;/b&gt;</description></item>"
    )
    entry = taken(doc).entries[0]
    assert entry.content == "<b>2</b>" and entry.content_type == "html"


def test_content_encoded_wins_over_description_and_empty_content_falls_back() -> None:
    doc = rss(
        "<item><description>short</description><content:encoded>long</content:encoded></item>"
    )
    assert taken(doc).entries[0].content == "long"
    doc = rss("<item><content:encoded></content:encoded><description>short</description></item>")
    assert taken(doc).entries[0].content == "short"


def test_atom_text_content_stays_text() -> None:
    entry = taken(atom('<entry><content type="text">a &lt;b&gt; c</content></entry>')).entries[0]
    assert entry.content_type == "text" and entry.content == "a <b> c"


def test_date_precedence() -> None:
    def published(item: str) -> datetime | None:
        return taken(rss(f"<item><guid>1</guid>{item}</item>")).entries[0].published

    jan, feb = "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z"
    assert published(f"<dc:date>{jan}</dc:date><pubDate>{feb}</pubDate>") == datetime(
        2025, 2, 1, tzinfo=UTC
    )
    # The last pubDate wins even when it does not parse; then dc:date is used.
    assert published(f"<pubDate>{feb}</pubDate><pubDate>x</pubDate><dc:date>{jan}</dc:date>") == (
        datetime(2025, 1, 1, tzinfo=UTC)
    )


def test_author_forms() -> None:
    def author(entry: str) -> str | None:
        return taken(atom(f"<entry><id>1</id>{entry}</entry>")).entries[0].author

    assert author("<author><name>Kim</name><email>k@example.com</email></author>") == (
        "Kim (k@example.com)"
    )
    assert author("<author><email>k@example.com</email></author>") == "k@example.com"
    assert author("<author><uri>https://k.example/</uri></author>") is None
    rss_author = taken(
        rss("<item><guid>1</guid><author>k@example.com (Kim)</author></item>")
    ).entries[0]
    assert rss_author.author == "k@example.com (Kim)"  # RSS text is kept as written
    # With two Atom authors, feedparser lets the first one's email leak into the second.
    two = (
        "<author><name>A</name><email>a@example.com</email></author><author><name>B</name></author>"
    )
    assert author(two) == "B (a@example.com)"


def test_double_encoded_utf8_and_cp1252_controls_are_repaired() -> None:
    def title(text: str) -> str | None:
        return taken(rss(f"<item><title>{text}</title></item>")).entries[0].title

    assert title("Caf\u00c3\u00a9") == "Café"
    assert title("a \u0096 b") == "a \u2013 b"
    # Only a value that is valid UTF-8 as a whole is decoded again.
    assert title("Caf\u00c3\u00a9 \u0096") == "Caf\u00c3\u00a9 \u2013"


def test_encoding_decisions_follow_feedparser() -> None:
    doc = rss("<item><title>Café</title></item>")
    # text/xml without a charset means us-ascii: bozo, read as UTF-8 anyway.
    parsed = taken(doc, content_type="text/xml")
    assert parsed.bozo and parsed.entries[0].title == "Café"
    latin = doc.decode().replace("utf-8", "iso-8859-1").encode("iso-8859-1")
    assert taken(latin, content_type="text/xml; charset=iso-8859-1").entries[0].title == "Café"
    assert taken(doc, content_type="text/html").bozo  # not an XML media type


@pytest.mark.parametrize(
    "doc",
    [
        b'<!DOCTYPE rss [<!ENTITY a "b">]><rss version="2.0"><channel><title>&a;</title></channel></rss>',
        b'<?xml version="1.0"?><!DOCTYPE rss><rss version="2.0"><channel></channel></rss>',
        b'<rss version="1.0"><channel></channel></rss>',
        b"<rss><channel></channel></rss>",
        b'<feed version="0.3" xmlns="http://purl.org/atom/ns#"><title>t</title></feed>',
        b'<rss version="2.0"><channel><item><title>x &nbsp; y</title></item></channel></rss>',
        b'<rss version="2.0"><channel><item><title>a<b>b</b></title></item></channel></rss>',
        b'<rss version="2.0"><channel><item><title>unclosed</item></channel></rss>',
        b'<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><item>'
        b"<media:title>m</media:title></item></channel></rss>",
        b'<rss version="2.0" xmlns:dc="http://search.yahoo.com/mrss/"><channel><item>'
        b"<dc:title>m</dc:title></item></channel></rss>",
        b'<rss version="2.0" xmlns:x="http://unknown.example/"><channel><item>'
        b"<x:title>m</x:title></item></channel></rss>",
        atom(
            '<entry><content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">x</div></content></entry>'
        ),
        atom('<entry><content type="application/octet-stream">eA==</content></entry>'),
        atom("<entry><source><title>s</title></source></entry>"),
    ],
)
def test_declines(doc: bytes) -> None:
    assert parse_fast(doc, url=URL, now=NOW) is None
    parse_feed(doc, url=URL, now=NOW)  # and the whole thing still works


def test_threads_get_their_own_parser() -> None:
    doc = rss("".join(f"<item><guid>{i}</guid><title>t{i}</title></item>" for i in range(50)))
    expected = parse_with_feedparser(doc, url=URL, now=NOW)
    results: list[ParsedFeed | None] = []

    def work() -> None:
        for _ in range(20):
            results.append(parse_fast(doc, url=URL, now=NOW))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80 and all(r == expected for r in results)


def test_fastfeed_imports_no_io_library() -> None:
    probe = "import sys, json, tasks.fastfeed; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    loaded = set(json.loads(out.splitlines()[-1]))
    assert not loaded & {"celery", "kombu", "httpx", "sqlmodel", "sqlalchemy", "redis"}
