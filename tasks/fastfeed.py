"""Parse well-formed RSS 2.0 and Atom 1.0 with lxml, giving exactly what feedparser gives.

feedparser's SAX callbacks cost about 280 µs per entry; lxml builds the same document's
tree in under 10. `parse_fast` reads the tree into the handful of keys `tasks.parse` uses
from feedparser's result (feed title, link and language; each entry's id, link, title,
content, summary, dates and author), following feedparser's own rules for each of them,
and hands that to `tasks.parse.from_result`, the builder the feedparser path uses too.
It returns None (*declines*) for every document it cannot be sure to read the same way,
and `parse_feed` then asks feedparser. Declining is cheap and always correct.

Taken: a document that expat and libxml2 both find well-formed, after feedparser's own
encoding detection (`convert_to_utf8`, so HTTP charset, BOM and XML declaration are
decided by feedparser itself, bozo flag included), whose root is `<rss version="2.0">`
(or 0.91-0.94) with one `<channel>`, or an Atom 1.0 `<feed>`.

Reproduced from feedparser 6 (`mixin.py`, `namespaces/_base.py`), because they change
fields we keep:

- Element names: namespaces map to feedparser's prefixes (`dc:date` is `dc_date`), names
  are lowercased, the Atom and RSS 0.9x/1.0 namespaces count as no namespace.
- Text: stripped; then text that is valid UTF-8 read as Latin-1 is decoded again, and
  C1 controls become their cp1252 characters (feedparser's "double-encoded" repair).
- A plain-text RSS field that looks like HTML (`looks_like_html`) becomes text/html.
- The first non-empty title at an element depth wins until an item, image, text input
  or source starts (feedparser's `title_depth`).
- guid: with isPermaLink absent or exactly "true", resolved against xml:base and used as
  the link when no link came before it. Atom ids count as permalinks too.
- Links: `<link>` text (with "&amp;" and "&x;" repaired in entries); `<link href>` only
  when rel is alternate and the type HTML; the last one wins.
- A second description or summary in an entry without content becomes content; content
  is copied to summary when there is none.
- Dates: the last pubDate/published/issued, updated/modified/dc:date and created each
  win, parsed by feedparser's `_parse_date`.
- Authors: "name (email)" from Atom `<name>`/`<email>`, the raw text otherwise, with
  feedparser's bookkeeping between several authors.
- xml:base (including its leaking past the element that set it) and xml:lang.

Declined: DOCTYPE or entity declarations, any parse error, RSS 1.0/0.90/CDF and other
roots, elements feedparser treats specially that are not listed above (xhtml content,
media:title/description, Atom source, base64 or xhtml content types, markup children
in text fields, ...), elements of unknown namespaces whose local name feedparser could
mistake for one it handles, duplicate attribute names, and prefixes bound so that
feedparser's name mapping could differ.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from feedparser.datetimes import _parse_date
from feedparser.encodings import convert_to_utf8
from feedparser.html import _cp1252
from feedparser.mixin import _FeedParserMixin
from feedparser.sanitizer import replace_doctype
from feedparser.urls import _urifixer, _urljoin, make_safe_absolute_uri
from feedparser.util import FeedParserDict
from lxml import etree

from tasks.parse import ParsedFeed, _limit_entities, _transcode_wide, from_result

log = logging.getLogger(__name__)


class _Decline(Exception):
    """The document needs feedparser: raised anywhere inside the reader."""


def parse_fast(
    content: bytes,
    *,
    url: str,
    content_type: str | None = None,
    now: datetime | None = None,
) -> ParsedFeed | None:
    """The `ParsedFeed` the feedparser path would give for `content`, or None to decline.

    Same arguments as `tasks.parse.parse_feed`. Never raises: anything unexpected is a
    decline, so the caller falls back to feedparser.
    """
    try:
        result = read_result(content, content_type=content_type)
        if result is None:
            return None
        return from_result(result, content=content, url=url, now=now or datetime.now(UTC))
    except Exception as exc:  # any surprise means "let feedparser do it"
        log.debug("fast path gave up on %s: %r", url, exc)
        return None


def read_result(content: bytes, *, content_type: str | None = None) -> dict[str, Any] | None:
    """A feedparser-shaped result (only the keys `tasks.parse` reads), or None to decline.

    Public so tests and benchmarks can compare it key by key with feedparser's own.
    May raise on inputs nobody anticipated; `parse_fast` turns that into a decline.
    """
    # `run_feedparser` rewrites documents with entity declarations first: those are
    # feedparser's, whatever their size.
    if _transcode_wide(content) is not None or _limit_entities(content) is not content:
        return None
    # Exactly feedparser's encoding decision, bozo flag and exception included.
    result: dict[str, Any] = {"bozo": False}
    data = convert_to_utf8({"content-type": content_type or "application/xml"}, content, result)
    if not result.get("encoding"):
        return None  # feedparser would use its loose parser
    doctype_version, replaced, _entities = replace_doctype(data)
    if doctype_version is not None or replaced != data:
        return None
    if _bad_names(data):
        return None
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError:
        return None  # expat may still read it, and then disagree: feedparser decides
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        return None
    try:
        reader = _Reader(c1=_may_hold_c1(data))
        feed, entries, version = reader.read(root)
    except _Decline:
        return None
    return {
        "bozo": result["bozo"],
        "bozo_exception": result.get("bozo_exception"),
        "feed": feed,
        "entries": entries,
        "version": version,
    }


def used_keys(result: Any) -> dict[str, Any]:
    """The part of a feedparser-shaped result that `tasks.parse` reads, as plain data.

    For comparing `read_result` with feedparser's own result key by key (tests and
    benchmarks): stricter than comparing `ParsedFeed`s, whose cleaning can hide a
    difference. Reads with dict.get, as `tasks.parse` does, so FeedParserDict's aliases
    play no part.
    """
    get = dict.get
    feed = get(result, "feed") or {}
    title_detail = get(feed, "title_detail") or {}
    exception = get(result, "bozo_exception")
    entries = []
    for raw in get(result, "entries") or ():
        detail = get(raw, "title_detail") or {}
        summary = get(raw, "summary_detail") or {}
        entries.append(
            {
                **{key: get(raw, key) for key in _ENTRY_KEYS},
                "title_detail": (get(detail, "type"), get(detail, "language")),
                "summary_detail": (
                    get(summary, "value"),
                    get(summary, "type"),
                    get(summary, "language"),
                ),
                "content": [
                    (get(c, "value"), get(c, "type"), get(c, "language"))
                    for c in get(raw, "content") or ()
                ],
            }
        )
    return {
        "bozo": bool(get(result, "bozo")),
        "bozo_exception": None if exception is None else str(exception),
        "version": get(result, "version"),
        "feed": {
            "title": get(feed, "title"),
            "link": get(feed, "link"),
            "language": get(feed, "language"),
            "title_detail": (get(title_detail, "type"), get(title_detail, "language")),
        },
        "entries": entries,
    }


_ENTRY_KEYS = (
    "id",
    "link",
    "title",
    "summary",
    "published_parsed",
    "updated_parsed",
    "created_parsed",
    "author",
)


# --- lxml parser, one per thread ------------------------------------------------------------

_local = threading.local()


def _parser() -> etree.XMLParser:
    """A hardened parser for this thread (lxml parsers must not be shared across threads).

    Comments and processing instructions are dropped while parsing, which joins the text
    around them as expat's character callbacks do.
    """
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            recover=False,
            remove_comments=True,
            remove_pis=True,
        )
        _local.parser = parser
    return parser


# --- feedparser's tables, read from feedparser itself --------------------------------------


@dataclass(frozen=True, slots=True)
class _Tables:
    namespaces: dict[str, str]  # lowercased namespace URI -> feedparser prefix
    prefixes: frozenset[str]  # the non-empty prefixes, lowercased
    handlers: frozenset[str]  # names with a _start_/_end_ method, lowercased
    dangerous_local: frozenset[str]  # local names that could reach a handler or a read key


# Keys of the entry and feed dicts that `tasks.parse` reads, or that the behaviour
# reproduced here reads back; an unknown element stored under one of them would change
# results. FeedParserDict also maps some other names onto them (its keymap).
_PROTECTED = frozenset(
    {
        "id",
        "link",
        "links",
        "title",
        "title_detail",
        "content",
        "summary",
        "summary_detail",
        "published_parsed",
        "updated_parsed",
        "created_parsed",
        "author",
        "authors",
        "author_detail",
        "language",
        "guidislink",
        "image",
        "textinput",
        "source",
        *FeedParserDict.keymap,
    }
)


@functools.cache
def _tables() -> _Tables:
    namespaces = {uri.lower(): prefix for uri, prefix in _FeedParserMixin.namespaces.items()}
    handlers = frozenset(
        name.split("_", 2)[2].lower()
        for name in dir(_FeedParserMixin)
        if name.startswith(("_start_", "_end_"))
    )
    dangerous: set[str] = set()
    for name in handlers | _PROTECTED:
        dangerous.add(name)
        dangerous.update(name[i + 1 :] for i, c in enumerate(name) if c == "_")
    return _Tables(
        namespaces=namespaces,
        prefixes=frozenset(p.lower() for p in namespaces.values() if p),
        handlers=handlers,
        dangerous_local=frozenset(dangerous),
    )


_names: dict[str, str] = {}


def _name(tag: str) -> str:
    """feedparser's handler name for an lxml tag ("title", "dc_date"); "?local" if unknown.

    Mirrors `_StrictFeedParser.startElementNS` + `unknown_starttag`. For a namespace
    feedparser does not know, the prefix it picks depends on every declaration seen so
    far, so the caller judges such elements by their local name only.
    """
    name = _names.get(tag)
    if name is None:
        if not tag.isascii():
            # expat follows XML 1.0's 4th edition for names, libxml2 the 5th: a name
            # one accepts the other may reject.
            raise _Decline
        if tag[:1] != "{":
            name = tag.lower()
        else:
            namespace, local = tag[1:].split("}", 1)
            lowered = namespace.lower()
            if "backend.userland.com/rss" in lowered:
                lowered = "http://backend.userland.com/rss"
            prefix = _tables().namespaces.get(lowered)
            if prefix is None:
                name = "?" + local.lower()
            elif prefix:
                name = prefix.lower() + "_" + local.lower()
            else:
                name = local.lower()
        if len(_names) < 4096:  # tags come from strangers: bound the cache
            _names[tag] = name
    return name


_PI = re.compile(rb"<\?([^\s?]*)")
_XMLNS_PREFIX = re.compile(rb"""xmlns:([^\s=>/]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def _bad_names(data: bytes) -> bool:
    """True for prefixes or processing instructions the fast path must not judge.

    feedparser maps prefixes through `namespacemap`, keyed by the prefix as written:
    `xmlns:dc="http://search.yahoo.com/mrss/"` would turn real dc: elements into media
    ones, so a standard prefix bound to another known namespace is refused. So are
    non-ASCII prefixes and processing-instruction targets (lxml drops both from the tree
    before `_name` could look): expat and libxml2 disagree on some non-ASCII names.
    Scanning the bytes may also find look-alikes inside text; that only makes the check
    stricter.
    """
    if data.find(b"<?", 1) >= 0:
        for match in _PI.finditer(data, 1):
            if not match.group(1).isascii():
                return True
    if b"xmlns:" not in data:
        return False
    tables = _tables()
    for match in _XMLNS_PREFIX.finditer(data):
        if not match.group(1).isascii():
            return True
        prefix = match.group(1).decode("ascii")
        if prefix not in tables.prefixes:
            continue
        uri = (match.group(2) or match.group(3) or b"").decode("utf-8", "replace").lower()
        if "backend.userland.com/rss" in uri:
            uri = "http://backend.userland.com/rss"
        known = tables.namespaces.get(uri)
        if known is not None and known != prefix:
            return True
    return False


# --- feedparser's value rules ----------------------------------------------------------------

_map_type = _FeedParserMixin.map_content_type
_looks_like_html = _FeedParserMixin.looks_like_html
_HTML_TYPES = frozenset(_FeedParserMixin.html_types)
_TEXT_TYPES = frozenset({"text/plain", "text/html"})
_RELATIVE = frozenset(_FeedParserMixin.can_be_relative_uri)
_LINK_REF = re.compile("&([A-Za-z0-9_]+);")
_C1 = re.compile("[\x80-\x9f]")
# A C1 control in UTF-8, or a character reference to one. (Undoing double UTF-8 cannot
# make one out of text without one: the Latin-1 bytes would have to hold 0x80-0x9F.)
_C1_UTF8 = re.compile(rb"\xc2[\x80-\x9f]")
_C1_REF = re.compile(rb"&#(?:0*1[2-5][0-9]|[xX]0*[89][0-9a-fA-F]);")
# feedparser's _sync_author_detail, verbatim.
_EMAIL = re.compile(
    r"""(([a-zA-Z0-9\_\-\.\+]+)@((\[[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.)|(([a-zA-Z0-9\-]+\.)+))([a-zA-Z]{2,4}|[0-9]{1,3})(\]?))(\?subject=\S+)?"""
)
_RSS_VERSIONS = {"0.91": "rss091u", "0.92": "rss092", "0.93": "rss093", "0.94": "rss094"}
_ATOM_ROOT = "{http://www.w3.org/2005/Atom}feed"
_VERSION_NAMESPACES = ("http://purl.org/rss/1.0/", "http://my.netscape.com/rdf/simple/0.9/")


def _repair(text: str, c1: bool) -> str:
    """feedparser's last step on every value: undo double UTF-8, map cp1252 controls.

    `c1` is False when the document cannot hold a C1 control (U+0080-U+009F) at all:
    str.translate with a dict looks up every character, and even a regex search for
    them costs more on long non-ASCII text than the rest of the value's handling.
    """
    if text.isascii():
        return text
    try:
        repaired = text.encode("iso-8859-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        repaired = text
    return repaired.translate(_cp1252) if c1 and _C1.search(repaired) else repaired


def _may_hold_c1(data: bytes) -> bool:
    """Whether UTF-8 `data` encodes a C1 control, or refers to one (&#128; to &#159;)."""
    return bool(_C1_UTF8.search(data)) or (b"&#" in data and bool(_C1_REF.search(data)))


# Element names by what they do (feedparser handler names, lowercased).
_TITLES = frozenset({"title", "dc_title"})
_IDS = frozenset({"id", "guid"})
_DESCRIPTIONS = frozenset({"description", "dc_description"})
_SUMMARIES = frozenset({"summary", "itunes_summary"})
_CONTENTS = {"content": "text/plain", "content_encoded": "text/html", "fullitem": "text/html"}
_DATES = {
    "pubdate": "published_parsed",
    "published": "published_parsed",
    "issued": "published_parsed",
    "dcterms_issued": "published_parsed",
    "updated": "updated_parsed",
    "modified": "updated_parsed",
    "lastbuilddate": "updated_parsed",
    "dc_date": "updated_parsed",
    "dcterms_modified": "updated_parsed",
    "created": "created_parsed",
    "dcterms_created": "created_parsed",
}
_AUTHORS = frozenset({"author", "dc_creator", "dc_author", "itunes_author", "managingeditor"})
_PERSON_PARTS = {"name": "name", "email": "email", "uri": "href", "url": "href", "homepage": "href"}
_LANGUAGES = frozenset({"language", "dc_language"})
# Handled elements whose handlers only write keys nobody here reads (checked one by one
# against feedparser 6's source). Leaves only, except the transparent media:group.
_HARMLESS = frozenset(
    {
        "category",
        "keywords",
        "dc_subject",
        "media_category",
        "itunes_category",
        "itunes_keywords",
        "media_keywords",
        "tags",
        "enclosure",
        "media_content",
        "media_thumbnail",
        "media_credit",
        "media_rating",
        "media_restriction",
        "media_license",
        "media_player",
        "itunes_image",
        "itunes_link",
        "itunes_block",
        "itunes_explicit",
        "itunes_subtitle",
        "creativecommons_license",
        "cc_license",
        "expirationdate",
        "generator",
        "rights",
        "copyright",
        "dc_rights",
        "subtitle",
        "tagline",
        "info",
        "feedburner_browserfriendly",
        "webmaster",
        "dc_publisher",
        "cloud",
        "dcterms_valid",
        "name",
        "email",
        "url",
        "homepage",
        "uri",
        "width",
        "height",
        "newlocation",
    }
)
_TRANSPARENT = frozenset({"media_group"})
# Harmless only at feed level (in an entry they are read).
_FEED_HARMLESS = _HARMLESS | frozenset(_DATES) | _DESCRIPTIONS | _AUTHORS
_IMAGE_PARTS = frozenset({"title", "link", "description", "url", "href", "width", "height"})
_TEXTINPUT_PARTS = frozenset({"title", "link", "description", "name"})

_NO_ATTRS: dict[str, str] = {}
_EntryHandler = Callable[["_Reader", Any, dict[str, str], dict[str, Any], str], None]


class _Reader:
    """feedparser's parse state for the elements it is allowed to see.

    Methods named after feedparser's follow its handlers; `depth`, `base` and `lang`
    follow `unknown_starttag`/`unknown_endtag`.
    """

    __slots__ = (
        "_joins",
        "atom",
        "base",
        "bases",
        "c1",
        "depth",
        "entries",
        "feed",
        "guid_is_link",
        "has_content",
        "lang",
        "langs",
        "plain",
        "title_depth",
    )

    def __init__(self, *, c1: bool = True) -> None:
        # plain: no xml:base or xml:lang seen yet, so base is "" and lang None in every
        # open element and their stacks need not be kept (see _open). c1: see _repair.
        self.plain = True
        self.c1 = c1
        self.atom = False
        self.depth = 0
        self.base = ""
        self.bases: list[str] = []
        self.lang: str | None = None
        self.langs: list[str | None] = []
        self.title_depth = -1
        self.has_content = False
        self.guid_is_link = False
        self.feed: dict[str, Any] = {}
        self.entries: list[dict[str, Any]] = []
        self._joins: dict[tuple[str, str], str] = {}

    # -- document ---------------------------------------------------------------------------

    def read(self, root: Any) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
        """(feed, entries, version) for a parsed document; raises _Decline."""
        for uri in root.nsmap.values():
            # Declared on the root, these set feedparser's version before the root does.
            if uri.lower() in _VERSION_NAMESPACES:
                raise _Decline
        if root.tag == "rss":
            return self._rss(root)
        if root.tag == _ATOM_ROOT:
            return self._atom(root)
        raise _Decline

    def _rss(self, root: Any) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
        attrs = self._open(root)
        self._root_language()
        given = attrs.get("version", "")
        version = _RSS_VERSIONS.get(given) or ("rss20" if given.startswith("2.") else "rss")
        if version == "rss":
            raise _Decline
        if len(root) != 1 or _name(root[0].tag) != "channel":
            raise _Decline
        channel = root[0]
        attrs = self._open(channel)
        if "lastmod" in attrs or "href" in attrs:
            raise _Decline  # CDF attributes
        for child in channel:
            self._feed_child(child, "item")
        self._close()
        self._close()
        return self.feed, self.entries, version

    def _atom(self, root: Any) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
        self.atom = True
        self._open(root)
        self._root_language()
        for child in root:
            self._feed_child(child, "entry")
        self._close()
        return self.feed, self.entries, "atom10"

    def _root_language(self) -> None:
        if self.lang:
            self.feed["language"] = self.lang.replace("_", "-")

    # -- unknown_starttag / unknown_endtag ------------------------------------------------

    def _open(self, el: Any) -> dict[str, str]:
        """Enter an element: depth, xml:base, xml:lang; its attributes as feedparser keys."""
        self.depth += 1
        items = el.items()
        if not items:
            attrs = _NO_ATTRS
            given_base = None
        else:
            attrs = {}
            for key, value in items:
                if not key.isascii():
                    raise _Decline  # see _name
                key = key.rsplit("}", 1)[-1].lower()
                if key in attrs:
                    raise _Decline  # feedparser would see one of them, hard to say which
                attrs[key] = value.lower() if key in ("rel", "type") else value
            given_base = attrs.get("base")
        if self.plain:
            if "base" not in attrs and "lang" not in attrs:
                return attrs
            # The first xml:base or xml:lang: every enclosing element had base ""
            # and lang None; keep the stacks from here on.
            self.plain = False
            self.bases = [""] * (self.depth - 1)
            self.langs = [None] * (self.depth - 1)
        if self.base or given_base:
            self.base = self._rebase(self.base, given_base or self.base)
        self.bases.append(self.base)
        if "lang" in attrs:
            self.lang = attrs["lang"] or None
        self.langs.append(self.lang)
        return attrs

    def _rebase(self, current: str, given: str) -> str:
        key = (current, given)
        joined = self._joins.get(key)
        if joined is None:
            if current:
                joined = make_safe_absolute_uri(current, given) or current
            else:
                joined = _urljoin(current, given)
            self._joins[key] = joined
        return joined

    def _resolve(self, uri: str) -> str:
        """feedparser's resolve_uri: `_urljoin(baseuri, uri)`."""
        if self.base:
            return _urljoin(self.base, uri)
        # urljoin("", uri) is uri: only the scheme-slash repair applies, and only to
        # something with "://" in it.
        return _urifixer.sub(r"\1\3", uri) if "://" in uri else uri

    def _close(self) -> None:
        self.depth -= 1
        if self.plain:
            return
        self.bases.pop()
        # feedparser restores a base only when the outer one is non-empty: a base set
        # inside an element without one stays in force after it ends.
        if self.bases and self.bases[-1]:
            self.base = self.bases[-1]
        self.langs.pop()
        if self.langs:
            self.lang = self.langs[-1]

    # -- feed level -------------------------------------------------------------------------

    def _feed_child(self, el: Any, entry_tag: str) -> None:
        name = _name(el.tag)
        if name == entry_tag:
            self._entry(el)
            return
        attrs = self._open(el)
        feed = self.feed
        if name == "image" or name == "textinput":
            self._box(el, _IMAGE_PARTS if name == "image" else _TEXTINPUT_PARTS)
        elif name in _AUTHORS or name == "contributor":
            self._person(el)
        elif len(el):
            if name in _TRANSPARENT or self._unknown(name):
                self._skip_children(el)
            else:
                raise _Decline
        elif name in _TITLES:
            self._title(el, attrs, feed)
        elif name == "link":
            self._link(el, attrs, feed, in_entry=False)
        elif name in _IDS:
            self._id(el, attrs, feed)
        elif name in _LANGUAGES:
            feed["language"] = self._pop(el.text, "language")
        elif name in _FEED_HARMLESS or self._unknown(name):
            pass
        else:
            raise _Decline
        self._close()

    def _box(self, el: Any, parts: frozenset[str]) -> None:
        """An RSS image or textinput: only its title matters (through title_depth)."""
        self.title_depth = -1
        scratch: dict[str, Any] = {}
        for child in el:
            name = _name(child.tag)
            if name not in parts or len(child):
                # Any other plain element ends feedparser's "in image" state early.
                raise _Decline
            attrs = self._open(child)
            if name == "title":
                self._title(child, attrs, scratch)
            self._close()

    # -- entries ----------------------------------------------------------------------------

    def _entry(self, el: Any) -> None:
        attrs = self._open(el)
        if any(key not in ("base", "lang") for key in attrs):
            raise _Decline  # rdf:about, CDF lastmod/href
        entry: dict[str, Any] = {}
        self.entries.append(entry)
        self.title_depth = -1
        handlers = _ENTRY_HANDLERS
        for child in el:
            tag = child.tag
            name = _names.get(tag) or _name(tag)
            attrs = self._open(child)
            if len(child):
                if name in _AUTHORS:
                    self._author(child, entry)
                elif name == "contributor":
                    self._person(child)
                elif name in _TRANSPARENT or self._unknown(name):
                    self._skip_children(child)
                else:
                    raise _Decline
            else:
                handler = handlers.get(name)
                if handler is not None:
                    handler(self, child, attrs, entry, name)
                elif not self._unknown(name):
                    raise _Decline
            self._close()
        self.has_content = False
        self._close()

    # Leaf elements of an entry, by feedparser name (see _ENTRY_HANDLERS).

    def _entry_title(self, el: Any, attrs: dict[str, str], entry: dict[str, Any], _: str) -> None:
        self._title(el, attrs, entry)

    def _entry_link(self, el: Any, attrs: dict[str, str], entry: dict[str, Any], _: str) -> None:
        self._link(el, attrs, entry, in_entry=True)

    def _entry_id(self, el: Any, attrs: dict[str, str], entry: dict[str, Any], _: str) -> None:
        self._id(el, attrs, entry)

    def _entry_description(
        self, el: Any, attrs: dict[str, str], entry: dict[str, Any], _: str
    ) -> None:
        self._description(el, attrs, entry, "text/html")

    def _entry_summary(self, el: Any, attrs: dict[str, str], entry: dict[str, Any], _: str) -> None:
        self._description(el, attrs, entry, "text/plain")

    def _entry_content(
        self, el: Any, attrs: dict[str, str], entry: dict[str, Any], name: str
    ) -> None:
        self._content(el, attrs, entry, _CONTENTS[name])

    def _entry_date(self, el: Any, attrs: dict[str, str], entry: dict[str, Any], name: str) -> None:
        entry[_DATES[name]] = _parse_date(self._pop(el.text, "published"))

    def _entry_author(self, el: Any, attrs: dict[str, str], entry: dict[str, Any], _: str) -> None:
        self._author(el, entry)

    def _entry_source(self, el: Any, attrs: dict[str, str], entry: dict[str, Any], _: str) -> None:
        self.title_depth = -1

    def _entry_skip(self, el: Any, attrs: dict[str, str], entry: dict[str, Any], _: str) -> None:
        pass

    # -- harmless elements ----------------------------------------------------------------

    def _unknown(self, name: str) -> bool:
        """An element feedparser has no handler for, stored under a key nobody reads."""
        tables = _tables()
        if name[0] == "?":
            return name[1:] not in tables.dangerous_local
        return name not in tables.handlers and name not in _PROTECTED

    def _skip_children(self, el: Any) -> None:
        """Walk a harmless element's subtree for its xml:base side effects only."""
        for child in el:
            name = _name(child.tag)
            self._open(child)
            if len(child):
                if not (name in _TRANSPARENT or self._unknown(name)):
                    raise _Decline
                self._skip_children(child)
            elif not (name in _HARMLESS or self._unknown(name)):
                raise _Decline
            self._close()

    # -- feedparser's pop() -----------------------------------------------------------------

    def _pop(self, text: str | None, element: str) -> str:
        """A non-content element's value, as `_FeedParserMixin.pop` returns it."""
        output = (text or "").strip()
        if output and element in _RELATIVE and (element != "id" or self.guid_is_link):
            output = self._resolve(output)
        return _repair(output, self.c1)

    def _pop_content(
        self, text: str | None, attrs: dict[str, str], default: str
    ) -> tuple[str, dict[str, Any]]:
        """A text field's value and its detail (type, language), as push_content/pop do."""
        if "mode" in attrs:
            raise _Decline  # Atom 0.3 modes, base64
        kind = _map_type(attrs.get("type", default))
        if kind not in _TEXT_TYPES:
            raise _Decline  # xhtml, base64-encoded and other types
        language = self.lang.replace("_", "-") if self.lang else self.lang
        output = (text or "").strip()
        if not self.atom and kind == "text/plain" and _looks_like_html(output):
            kind = "text/html"
        output = _repair(output, self.c1)
        return output, {"type": kind, "language": language, "value": output}

    # -- handlers ---------------------------------------------------------------------------

    def _title(self, el: Any, attrs: dict[str, str], context: dict[str, Any]) -> None:
        output, detail = self._pop_content(el.text, attrs, "text/plain")
        if not -1 < self.title_depth <= self.depth:
            context["title"] = output
            context["title_detail"] = detail
        if output:
            self.title_depth = self.depth

    def _link(
        self, el: Any, attrs: dict[str, str], context: dict[str, Any], *, in_entry: bool
    ) -> None:
        if attrs and self._link_href(attrs, context):
            return
        # No address attribute: feedparser reads the text.
        output = self._pop(el.text, "link")
        if "&" in output:
            if in_entry:
                output = output.replace("&amp;", "&")
            output = _LINK_REF.sub(r"&\g<1>", output)
        context["link"] = output

    def _link_href(self, attrs: dict[str, str], context: dict[str, Any]) -> bool:
        """`_start_link` for a link with an address attribute (Atom style); False if none."""
        if "href" not in attrs and "url" not in attrs and "uri" not in attrs:
            return False
        attrs = dict(attrs)
        rel = attrs.setdefault("rel", "alternate")
        attrs.setdefault("type", "application/atom+xml" if rel == "self" else "text/html")
        href = attrs.get("url", attrs.get("uri", attrs.get("href")))
        if href:
            attrs.pop("url", None)
            attrs.pop("uri", None)
            attrs["href"] = href
        if "href" not in attrs:
            return False  # url="" or uri="": _enforce_href leaves no address
        href = self._resolve(attrs["href"])
        if attrs["rel"] == "alternate" and _map_type(attrs["type"]) in _HTML_TYPES:
            context["link"] = href
        return True

    def _id(self, el: Any, attrs: dict[str, str], context: dict[str, Any]) -> None:
        self.guid_is_link = attrs.get("ispermalink", "true") == "true"
        output = self._pop(el.text, "id")
        context["id"] = output
        if self.guid_is_link:
            context.setdefault("link", output)

    def _description(
        self, el: Any, attrs: dict[str, str], entry: dict[str, Any], default: str
    ) -> None:
        if "summary" in entry and not self.has_content:
            # A second description or summary: feedparser reads it as content.
            self._content(el, attrs, entry, "text/plain")
            return
        output, detail = self._pop_content(el.text, attrs, default)
        entry["summary"] = output
        entry["summary_detail"] = detail

    def _content(self, el: Any, attrs: dict[str, str], entry: dict[str, Any], default: str) -> None:
        self.has_content = True
        output, detail = self._pop_content(el.text, attrs, default)
        entry.setdefault("content", []).append(detail)
        entry.setdefault("summary", output)

    def _author(self, el: Any, entry: dict[str, Any]) -> None:
        entry.setdefault("authors", []).append({})
        for child in el:
            part = _PERSON_PARTS.get(_name(child.tag))
            if part is None or len(child):
                raise _Decline
            self._open(child)
            # name and email are pushed without expecting text: only stripped.
            value = self._pop(child.text, "href") if part == "href" else (child.text or "").strip()
            self._sync_author(entry)
            entry["authors"][-1][part] = value
            self._close()
        text = (el.text or "") + "".join(child.tail or "" for child in el)
        entry["author"] = self._pop(text, "author")
        self._sync_author(entry)

    def _person(self, el: Any) -> None:
        """A feed-level author or any contributor: checked, not kept."""
        for child in el:
            if _name(child.tag) not in _PERSON_PARTS or len(child):
                raise _Decline
            self._open(child)
            self._close()

    @staticmethod
    def _sync_author(entry: dict[str, Any]) -> None:
        """feedparser's `_sync_author_detail` on an entry, for the keys that feed back."""
        detail = entry.get("authors", [{}])[-1]
        if detail:
            name = detail.get("name")
            email = detail.get("email")
            if name and email:
                entry["author"] = f"{name} ({email})"
            elif name:
                entry["author"] = name
            elif email:
                entry["author"] = email
            return
        author = entry.get("author")
        if not author:
            return
        email = None
        match = _EMAIL.search(author)
        if match:
            email = match.group(0)
            author = author.replace(email, "").replace("()", "").replace("<>", "")
            author = author.replace("&lt;&gt;", "").strip()
            if author and author[0] == "(":
                author = author[1:]
            if author and author[-1] == ")":
                author = author[:-1]
            author = author.strip()
        if author:
            detail["name"] = author
        if email:
            detail["email"] = email


# Which handler reads which leaf element of an entry; anything else must be unknown to
# feedparser (see _Reader._unknown) or the document is declined.
_ENTRY_HANDLERS: dict[str, _EntryHandler] = {
    **dict.fromkeys(_TITLES, _Reader._entry_title),
    "link": _Reader._entry_link,
    **dict.fromkeys(_IDS, _Reader._entry_id),
    **dict.fromkeys(_DESCRIPTIONS, _Reader._entry_description),
    **dict.fromkeys(_SUMMARIES, _Reader._entry_summary),
    **dict.fromkeys(_CONTENTS, _Reader._entry_content),
    **dict.fromkeys(_DATES, _Reader._entry_date),
    **dict.fromkeys(_AUTHORS, _Reader._entry_author),
    "source": _Reader._entry_source,
    "contributor": _Reader._entry_skip,
    **dict.fromkeys(_HARMLESS | _LANGUAGES, _Reader._entry_skip),
}
