"""Read and write OPML feed lists.

OPML files come from other readers and from users, so parsing is defensive: no entity
expansion, no DTD or network access, nested folders flattened, duplicates dropped, and
each bad outline reported without losing the good ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from lxml import etree

from tasks.textsafe import strip_terminal_controls

# Attribute spellings seen in the wild for the feed URL (OPML says "xmlUrl").
_URL_ATTRS = ("xmlUrl", "xmlurl", "XMLURL", "xmlURL", "url")
# Characters XML 1.0 cannot carry at all; removed before writing.
_DOCTYPE = re.compile(rb"<!DOCTYPE[^\[>]*(?:\[.*?\]\s*)?>", re.DOTALL)
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True, slots=True)
class OpmlResult:
    """Feeds found in an OPML document, in document order, and what was refused."""

    feeds: list[tuple[str, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _parser() -> etree.XMLParser:
    # recover=True: real OPML exports are often slightly broken (bare "&" in titles);
    # the outlines that can be read are still worth importing.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        recover=True,
    )


def normalize_feed_url(url: str) -> str:
    """Check a feed URL from a list and return it cleaned; raises ValueError if unusable.

    Accepts the "feed:" pseudo-scheme (feed://host/x, feed:https://host/x); lowercases
    scheme and host so duplicates differing only there collapse.
    """
    text = url.strip()
    if text.lower().startswith("feed:"):
        rest = text[5:]
        text = rest if rest.lower().startswith(("http:", "https:")) else "http:" + rest
    parts = urlsplit(text)
    _ = parts.port  # raises ValueError on a bad port
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("only http and https feeds are supported")
    if not parts.hostname:
        raise ValueError("no host")
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise ValueError("whitespace or control characters in URL")
    netloc = parts.netloc
    host_start = netloc.rfind("@") + 1
    netloc = netloc[:host_start] + netloc[host_start:].lower()
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))


def _drop_doctype(content: bytes) -> bytes:
    """Remove a DOCTYPE and its internal subset: OPML needs no DTD, and entity
    declarations are how billion-laughs and external-entity attacks are written."""
    return _DOCTYPE.sub(b"", content, count=1)


def parse_opml(content: bytes) -> OpmlResult:
    """Collect (url, title) for every feed outline, however deeply nested; never raises."""
    result = OpmlResult()
    parser = _parser()
    try:
        root = etree.fromstring(_drop_doctype(content), parser=parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        result.errors.append(f"not an OPML document: {_line(str(exc))}")
        return result
    if root is None:
        result.errors.append("not an OPML document: nothing could be read")
        return result
    problems = [e for e in parser.error_log if e.level >= etree.ErrorLevels.ERROR]
    if problems:
        result.errors.append(
            f"the document is not well-formed XML ({len(problems)} problem(s), first at"
            f" line {problems[0].line}: {_line(problems[0].message)}); importing what could be read"
        )
    seen: set[str] = set()
    for outline in root.iter("outline", "{*}outline"):
        raw_url = next((outline.get(a) for a in _URL_ATTRS if outline.get(a)), None)
        if raw_url is None:
            continue  # a folder
        title = outline.get("title") or outline.get("text")
        if title is not None and title.strip() == raw_url.strip():
            title = None  # exporters (ours too) put the URL in "text" when untitled
        title = " ".join(strip_terminal_controls(title).split()) or None if title else None
        try:
            url = normalize_feed_url(raw_url)
        except ValueError as exc:
            where = f"line {outline.sourceline}: " if outline.sourceline else ""
            result.errors.append(f"{where}invalid feed URL {_line(raw_url)!r}: {exc}")
            continue
        if url in seen:
            continue
        seen.add(url)
        result.feeds.append((url, title))
    if not result.feeds and not result.errors and etree.QName(root).localname != "opml":
        result.errors.append("not an OPML document: the root element is not <opml>")
    return result


def build_opml(feeds: Iterable[tuple[str, str | None]], title: str) -> bytes:
    """An OPML 2.0 document listing `feeds`, for export and for other readers to import."""
    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = _xml_text(title)
    body = etree.SubElement(root, "body")
    for url, feed_title in feeds:
        outline = etree.SubElement(body, "outline", type="rss")
        label = _xml_text(feed_title) if feed_title else _xml_text(url)
        outline.set("text", label)
        if feed_title:
            outline.set("title", label)
        outline.set("xmlUrl", _xml_text(url))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _xml_text(value: str) -> str:
    return _XML_INVALID.sub("", value)


def _line(text: str) -> str:
    return " ".join(strip_terminal_controls(text).split())[:200]
