"""Turn fetched feed bytes into `RawEntry` objects, whatever the bytes are.

`parse_feed` never raises: any input gives a `ParsedFeed`, with `error` set when nothing
usable came out. Fetching lives in `tasks.fetch`; this module does no I/O.

Well-formed RSS 2.0 and Atom 1.0 documents are read by `tasks.fastfeed` with lxml,
several times faster than feedparser and with the very same result; everything else, and
anything the fast path is not sure of, goes to feedparser. Both paths end in
`from_result`, which turns feedparser's (or an identical) result into a `ParsedFeed`.

Rules (each one decides a case the web really produces):

- feedparser gets a file object, never `bytes` or `str`: given those it may treat the
  value as a URL or a *file path* and read it (`feedparser.parse(b"/etc/passwd")`).
- Entities: feedparser's strict pass uses expat without external entities, and its
  loose fallback re-declares only "safe" internal entities; but a safe entity with a
  long value referenced many times still expands quadratically (a 2 MB document grew
  to a 2 GB title in testing). Before parsing, prolog entity declarations beyond
  `_MAX_ENTITIES` are removed, and so are those longer than `_MAX_ENTITY_VALUE` bytes
  once their uses would add more than `_MAX_EXPANSION` bytes; references to removed
  entities stay as literal text. UTF-16/32 documents that
  declare entities are transcoded to UTF-8 first so the same rule applies.
- JSON Feed (1.0/1.1) is parsed here with `json`: feedparser 6 does not know it.
- Dates: feedparser's `*_parsed` (UTC struct_time; it maps two-digit years 00-89 to
  20xx and 90-99 to 19xx) becomes an aware UTC datetime. Years below 100 (placeholders
  like "0000-01-01"), impossible dates and overflows give None. A date more than one
  day ahead of now is clamped to now + 1 day: it is wrong, but the entry is still
  recent, and one day of slack keeps honest timezone mistakes as they are.
- guid: the entry id (RSS guid / Atom id), stripped; a guid longer than 512 characters
  is replaced by "sha256:<hex>" of itself. No guid gives None (never invented).
- Links: resolved against xml:base and the feed URL; only http(s) links are kept.
- Duplicates: the first entry with a given guid (or, without guid, link) wins.
- Content: content[0] (content:encoded) else summary; "text" only when the feed says
  text/plain, otherwise "html", sanitized with nh3 (relative URLs rewritten against
  the feed URL). Titles and authors become plain text without control characters.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser
import nh3

from tasks.models import RawEntry
from tasks.textsafe import strip_terminal_controls

log = logging.getLogger(__name__)

_MAX_ENTITY_VALUE = 10  # "&#x2014;" fits; a paragraph does not
_MAX_ENTITIES = 64
_MAX_EXPANSION = 1024 * 1024  # bytes all longer entity values may add to a document
_MAX_GUID = 512
FUTURE_SLACK = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """A feed document's title, link and entries, plus how well-formed it was.

    `bozo` is feedparser's "not well-formed" flag: entries may still be present.
    `error` is one human line, set only when the document gave nothing usable.
    """

    title: str | None
    link: str | None
    entries: tuple[RawEntry, ...]
    bozo: bool = False
    bozo_message: str | None = None
    error: str | None = None
    version: str | None = None


# --- input hardening ----------------------------------------------------------------------

# feedparser's own definitions (sanitizer.replace_doctype), mirrored so we edit exactly
# what it will later read.
_HEAD_END = re.compile(rb"<\w")
_ENTITY_DECL = re.compile(rb"^\s*<!ENTITY([^>]*?)>", re.MULTILINE)
_SAFE_ENTITY = re.compile(rb'\s+(\w+)\s+"(&#\w+;|[^&"]*)"')

_WIDE_CODECS = ("utf-32-le", "utf-32-be", "utf-16-le", "utf-16-be")
_XML_DECL_ENCODING = re.compile(r"""^(\s*<\?xml[^>]*?encoding\s*=\s*)(["'])[^"']*\2""")


def _transcode_wide(content: bytes) -> bytes | None:
    """UTF-8 bytes for a UTF-16/32 document that declares entities, else None."""
    if b"\x00" not in content:
        return None  # every ASCII character in UTF-16/32 has a zero byte: not wide
    for codec in _WIDE_CODECS:
        if "<!ENTITY".encode(codec) in content:
            text = content.decode(codec, errors="replace").lstrip("\ufeff")
            text = _XML_DECL_ENCODING.sub(r'\1"utf-8"', text, count=1)
            return text.encode("utf-8")
    return None


def _limit_entities(content: bytes) -> bytes:
    """Drop prolog entity declarations that could amplify (see module docstring)."""
    # Declarations count only before the first element, usually a few dozen bytes in:
    # look there rather than through the whole document.
    match = _HEAD_END.search(content)
    end = match.start() if match else len(content)
    if content.find(b"<!ENTITY", 0, end) < 0:
        return content
    head, body = content[:end], content[end:]
    kept = 0
    expansion = 0

    def judge(decl: re.Match[bytes]) -> bytes:
        nonlocal kept, expansion
        safe = _SAFE_ENTITY.match(decl.group(1))
        if safe is None:
            return decl.group(0)  # feedparser drops these itself
        name, value = safe.group(1), safe.group(2)
        if kept >= _MAX_ENTITIES:
            return b""
        if len(value) > _MAX_ENTITY_VALUE:
            # A longer value is kept only while all its uses together stay small.
            expansion += len(value) * body.count(b"&" + name + b";")
            if expansion > _MAX_EXPANSION:
                return b""
        kept += 1
        return decl.group(0)

    return _ENTITY_DECL.sub(judge, head) + body


def _without_charset(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip() or None


def run_feedparser(content: bytes, *, content_type: str | None = None) -> feedparser.FeedParserDict:
    """feedparser's raw result for `content`, called the one way this project calls it.

    Public so benchmarks can compare feedparser's own expectations with exactly what
    `parse_feed` sees. May raise whatever feedparser raises.
    """
    wide = _transcode_wide(content)
    if wide is not None:
        content = wide
        content_type = _without_charset(content_type)
    content = _limit_entities(content)
    # No Content-Location on purpose: feedparser would resolve every *guid* against it
    # (ids count as relative URIs), so guids would change when a feed URL moves. Links
    # are resolved against `url` afterwards instead. Without a Content-Type feedparser
    # flags every document bozo; application/xml lets the document's own declaration
    # decide the encoding (text/xml would mean us-ascii under RFC 3023).
    headers = {"content-type": content_type or "application/xml"}
    return feedparser.parse(
        io.BytesIO(content),
        response_headers=headers,
        sanitize_html=False,  # nh3 does it, faster and stricter
        resolve_relative_uris=False,  # only hrefs we keep are resolved, below
    )


# --- small converters ---------------------------------------------------------------------


def _text(value: Any, *, is_html: bool = False) -> str | None:
    """A one-line plain string from a feed field, or None when empty."""
    if not isinstance(value, str):
        return None
    if is_html or "<" in value:
        value = html.unescape(nh3.clean(value, tags=set()))
    value = " ".join(strip_terminal_controls(value).split())
    return value or None


def _http_url(value: Any, base: str) -> str | None:
    """`value` resolved against `base`, if it is an http(s) URL."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        resolved = urljoin(base, value.strip())
        parts = urlsplit(resolved)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if any(c in resolved for c in "\x00\r\n\t "):
        return None
    return resolved


def _datetime(value: Any, now: datetime) -> datetime | None:
    """Aware UTC datetime from feedparser's struct_time, by the module's date rules."""
    if not isinstance(value, time.struct_time | tuple) or len(value) < 6:
        return None
    try:
        year, month, day, hour, minute, second = (int(v) for v in value[:6])
    except (TypeError, ValueError):
        return None
    if year < 100:
        return None
    try:
        when = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
    except (ValueError, OverflowError):
        return now + FUTURE_SLACK if year > 9999 else None
    return min(when, now + FUTURE_SLACK)


def _iso_datetime(value: Any, now: datetime) -> datetime | None:
    """Aware UTC datetime from an RFC 3339 string (JSON Feed), same rules."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        when = when.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    if when.year < 100:
        return None
    return min(when, now + FUTURE_SLACK)


def _guid(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    guid = strip_terminal_controls(value).strip()
    if not guid:
        return None
    if len(guid) > _MAX_GUID:
        return "sha256:" + hashlib.sha256(guid.encode("utf-8", "replace")).hexdigest()
    return guid


def _sanitize(fragment: str, base: str) -> str:
    """Display-safe HTML; relative URLs rewritten against `base` when it is absolute."""
    try:
        return nh3.clean(fragment, url_relative=("rewrite_with_base", base))
    except (ValueError, TypeError):
        return nh3.clean(fragment)


def _one_line(value: object) -> str:
    return " ".join(strip_terminal_controls(str(value)).split())[:300]


# --- feedparser path ----------------------------------------------------------------------

# FeedParserDict.get runs feedparser's alias and deprecation logic on every look-up;
# for the keys read here (none of them an alias) plain dict.get returns the same value
# several times faster, and it keeps a missing published_parsed from silently mapping
# to updated_parsed with a DeprecationWarning.
_get = dict.get


def _entry(
    raw: Any, *, base: str, source: str | None, language: str | None, now: datetime
) -> RawEntry | None:
    # Reads id, link, title, title_detail (type, language), content (value, type,
    # language), summary, summary_detail, published/updated/created_parsed and author:
    # exactly what tasks.fastfeed reproduces (see its used_keys).
    guid = _guid(_get(raw, "id"))
    url = _http_url(_get(raw, "link"), base)
    title_detail = _get(raw, "title_detail") or {}
    title = _text(_get(raw, "title"), is_html="html" in str(_get(title_detail, "type", "")))

    detail: Any = None
    for candidate in _get(raw, "content") or ():
        if isinstance(candidate, dict) and _get(candidate, "value"):
            detail = candidate
            break
    if detail is None and _get(raw, "summary"):
        detail = _get(raw, "summary_detail") or {"value": _get(raw, "summary"), "type": "text/html"}
    value = _get(detail, "value") if detail else ""
    value = value if isinstance(value, str) else ""
    kind = "text" if detail and _get(detail, "type") == "text/plain" else "html"
    content = strip_terminal_controls(value) if kind == "text" else _sanitize(value, base)

    if guid is None and url is None and title is None and not content.strip():
        return None
    published = None
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        # _get, not raw.get: we choose the fallback order ourselves (see _get).
        published = _datetime(_get(raw, key), now)
        if published is not None:
            break
    entry_language = _get(detail or {}, "language") or _get(title_detail, "language") or language
    return RawEntry(
        guid=guid,
        url=url,
        title=title,
        content=content,
        content_type=kind,
        published=published,
        author=_text(_get(raw, "author")),
        source=source,
        language=_text(entry_language),
    )


def _looks_like_html(content: bytes) -> bool:
    head = content[:2048].lower()
    return b"<html" in head or b"<!doctype html" in head or b"<body" in head


def _from_feedparser(
    content: bytes, url: str, content_type: str | None, now: datetime
) -> ParsedFeed:
    # A third-party parser fed hostile bytes: whatever it raises becomes a result, since
    # one broken feed must not stop the others.
    try:
        result = run_feedparser(content, content_type=content_type)
    except Exception as exc:
        log.warning("feedparser failed on %s: %r", url, exc)
        return ParsedFeed(
            None,
            None,
            (),
            bozo=True,
            bozo_message=_one_line(exc),
            error=f"could not parse the document: {_one_line(exc)}",
        )
    return from_result(result, content=content, url=url, now=now)


def from_result(result: Any, *, content: bytes, url: str, now: datetime) -> ParsedFeed:
    """The `ParsedFeed` for a feedparser-shaped result of `content`.

    `result` is feedparser's own dict or one built the same way by `tasks.fastfeed`:
    both paths go through here, so the same document gives the same `ParsedFeed`.
    Read keys: bozo, bozo_exception, version, entries, and feed's title, title_detail,
    language and link (each entry's keys are listed in `_entry`).
    """
    feed = result.get("feed") or {}
    title_detail = feed.get("title_detail") or {}
    title = _text(feed.get("title"), is_html="html" in str(title_detail.get("type", "")))
    language = _text(feed.get("language")) or _text(title_detail.get("language"))
    link = _http_url(feed.get("link"), url)
    bozo = bool(result.get("bozo"))
    bozo_message = _one_line(result.get("bozo_exception")) if bozo else None
    version = result.get("version") or None

    entries = _dedup(
        _safe_entries(
            result.get("entries") or [], base=url, source=title, language=language, now=now
        )
    )
    # No entries is fine for a feed (a new or emptied one); it is an error only for a
    # document that is not recognisably a feed: an HTML page, or neither a known feed
    # version nor a title (whether or not it was well-formed).
    error = None
    if not entries and _looks_like_html(content) and not version:
        error = "not a feed: the document is an HTML page"
    elif not entries and not title and (bozo or not version):
        if bozo_message:
            error = f"not a feed: {bozo_message}"
        else:
            error = "not a feed: no RSS, Atom or RDF document found"
    return ParsedFeed(title, link, entries, bozo, bozo_message, error, version)


def _safe_entries(raws: list[Any], **kwargs: Any) -> list[RawEntry]:
    entries = []
    for raw in raws:
        try:
            entry = _entry(raw, **kwargs)
        except Exception:  # one odd entry must not lose the others
            log.exception("skipped an entry that could not be converted")
            continue
        if entry is not None:
            entries.append(entry)
    return entries


def _dedup(entries: list[RawEntry]) -> tuple[RawEntry, ...]:
    seen: set[tuple[str, str]] = set()
    kept = []
    for entry in entries:
        key = ("guid", entry.guid) if entry.guid else ("url", entry.url) if entry.url else None
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        kept.append(entry)
    return tuple(kept)


# --- JSON Feed ----------------------------------------------------------------------------


def _is_json(content: bytes, content_type: str | None) -> bool:
    mime = (_without_charset(content_type) or "").lower()
    if mime.endswith("json"):
        return True
    return content.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def _from_json(content: bytes, url: str, now: datetime) -> ParsedFeed:
    try:
        data = json.loads(content)
    except (ValueError, RecursionError) as exc:
        message = _one_line(exc)
        return ParsedFeed(
            None,
            None,
            (),
            bozo=True,
            bozo_message=message,
            error=f"not a feed: invalid JSON ({message})",
        )
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        return ParsedFeed(None, None, (), error="not a feed: JSON without an items list")
    title = _text(data.get("title"))
    link = _http_url(data.get("home_page_url"), url)
    language = _text(data.get("language"))
    feed_author = _json_author(data)
    entries = []
    for item in data["items"]:
        if not isinstance(item, dict):
            continue
        item_url = _http_url(item.get("url"), url) or _http_url(item.get("external_url"), url)
        if isinstance(item.get("content_html"), str):
            body, kind = _sanitize(item["content_html"], url), "html"
        elif isinstance(item.get("content_text"), str):
            body, kind = strip_terminal_controls(item["content_text"]), "text"
        elif isinstance(item.get("summary"), str):
            body, kind = strip_terminal_controls(item["summary"]), "text"
        else:
            body, kind = "", "html"
        entries.append(
            RawEntry(
                guid=_guid(item.get("id")),
                url=item_url,
                title=_text(item.get("title")),
                content=body,
                content_type=kind,
                published=_iso_datetime(item.get("date_published"), now)
                or _iso_datetime(item.get("date_modified"), now),
                author=_json_author(item) or feed_author,
                source=title,
                language=_text(item.get("language")) or language,
            )
        )
    version = str(data.get("version", "")).rsplit("/", 1)[-1]
    return ParsedFeed(title, link, _dedup(entries), version=f"json{version.replace('.', '')}")


def _json_author(obj: dict[str, Any]) -> str | None:
    authors = obj.get("authors")
    if isinstance(authors, list) and authors and isinstance(authors[0], dict):
        return _text(authors[0].get("name"))
    author = obj.get("author")  # JSON Feed 1.0
    return _text(author.get("name")) if isinstance(author, dict) else None


# --- entry point --------------------------------------------------------------------------


def parse_feed(
    content: bytes,
    *,
    url: str,
    content_type: str | None = None,
    now: datetime | None = None,
) -> ParsedFeed:
    """Parse feed bytes (RSS, Atom, RDF, CDF or JSON Feed) into raw entries; never raises.

    `url` is where the bytes came from: the base for relative links. `content_type` is
    the HTTP header (its charset matters for decoding). `now` fixes the clock for the
    future-date clamp.
    """
    now = now or datetime.now(UTC)
    if not content or not content.strip():
        return ParsedFeed(None, None, (), error="empty document")
    if _is_json(content, content_type):
        parsed = _from_json(content, url, now)
        if parsed.error is None or (_without_charset(content_type) or "").endswith("json"):
            return parsed
    # Imported here: tasks.fastfeed builds on this module's helpers.
    from tasks.fastfeed import parse_fast

    fast = parse_fast(content, url=url, content_type=content_type, now=now)
    if fast is not None:
        return fast
    return _from_feedparser(content, url, content_type, now)


def parse_with_feedparser(
    content: bytes,
    *,
    url: str,
    content_type: str | None = None,
    now: datetime | None = None,
) -> ParsedFeed:
    """What `parse_feed` gives for an XML document without the lxml fast path.

    The reference `tasks.fastfeed` is checked against (tests, benchmarks). Never raises.
    """
    return _from_feedparser(content, url, content_type, now or datetime.now(UTC))
