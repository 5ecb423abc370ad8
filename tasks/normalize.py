"""Normalize step: raw feed entries and pages -> clean story text plus metadata.

Pure functions only (no Celery, HTTP or database), so the whole step is testable in
microseconds. The pipeline calls `normalize_entry` once per entry:

    raw HTML or text
      -> html_to_text      lxml for feed snippets, trafilatura for full article pages
      -> clean_text        characters, paragraphs, boilerplate, metadata lines
      -> normalize_entry   title, guid, canonical URL, source/author/dateline fields

Boilerplate is recognised by general mechanisms rather than by the exact strings seen in
the seed corpus: line patterns kept as data in `LINE_RULES` (one comment each), a
"story ends here" cut at related-stories / comments / syndication-disclaimer markers,
link-dense blocks in HTML, runs of very short lines at the edges, and teaser paragraphs
that repeat the start of a later paragraph.
"""

from __future__ import annotations

import hashlib
import html as htmllib
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from lxml import etree

from tasks.models import Article, RawEntry

__all__ = [
    "CleanedText",
    "canonical_url",
    "clean_text",
    "html_to_text",
    "normalize_entry",
]

# --- characters -----------------------------------------------------------------------

# Typographic quotes and dashes folded to ASCII after NFKC, so that a straight and a
# curly quote never make two copies of a story look different to dedup or to rules.
_CHAR_FOLDS = str.maketrans(
    {
        **dict.fromkeys("‘’‚‛′‵`´", "'"),
        **dict.fromkeys("“”„‟″‶«»", '"'),
        **dict.fromkeys("‐‑‒–—―−⁃﹘﹣－", "-"),
        "\t": " ",
        "\r": "\n",
        "\u2028": "\n",
        "\u2029": "\n",
    }
)
# The same folds as (character, replacement) pairs. No replacement is itself folded, so
# replacing only the characters present gives what `str.translate` gives, without its
# per-character dict look-up over the whole text (most texts hold none of them).
_CHAR_FOLD_PAIRS = tuple((chr(code), folded) for code, folded in _CHAR_FOLDS.items())
# The folds that can apply to an ASCII text (backtick, tab, carriage return).
_ASCII_FOLD_PAIRS = tuple((char, folded) for char, folded in _CHAR_FOLD_PAIRS if char.isascii())
# Control and format characters (zero-width spaces, soft hyphens, bidi marks, NUL...),
# except newline and tab. Removed *before* NFKC so composition sees the final sequence.
_INVISIBLE_RE = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e"
    r"\u2060-\u206f\ufeff\ufff9-\ufffb]"
)
# The ASCII characters outside _INVISIBLE_RE: deleting them from a text's UTF-8 bytes
# leaves its non-ASCII characters and ASCII controls, usually a handful, which is all
# _INVISIBLE_RE needs to look at (see `_without_invisible`).
_VISIBLE_ASCII = bytes(code for code in range(128) if not _INVISIBLE_RE.match(chr(code)))
_CURLY_QUOTE_RE = re.compile("[“”]")
_BLANK_LINES_RE = re.compile(r"\n\s*\n")
_SPACE_RUN_RE = re.compile(r" {2,}")
_WORD_RE = re.compile(r"\w+")
# Without a tag, a feed's "HTML" field is plain text (perhaps with entities).
_HAS_TAG_RE = re.compile(r"<[a-zA-Z!/?]")

# --- boilerplate rules (data) ---------------------------------------------------------


class LineAction(Enum):
    """What a boilerplate rule does with a line it fully matches."""

    DROP = "drop"  # remove the line, keep going
    END = "end"  # the story ends before this line (if enough story precedes it)


# (pattern, action). Each pattern must match a whole line (case-insensitive) after
# character cleanup. Keep them general: they describe a kind of boilerplate, not one
# site's wording.
LINE_RULES: tuple[tuple[str, LineAction], ...] = (
    # Ad slots and "continue below" markers left where an ad was.
    (
        r"(?:advertisement|advertising|sponsored(?: content)?|ad|promoted"
        r"|(?:story|article) continues below(?: this)?(?: ad(?:vertisement)?)?"
        r"|continue reading(?: below| the main story)?|scroll to continue(?: with content)?)",
        LineAction.DROP,
    ),
    # App-install prompts ("Open in App", "Download our app ...").
    (
        r"(?:open in (?:the )?app|get the app|download (?:the|our) .{0,40}app.{0,60})",
        LineAction.DROP,
    ),
    # Cross-links to other stories ("READ ALSO ...", "Also read: ...", "Watch: ...").
    (
        r"(?:read also|also read|read more|see also|more on this)"
        r"(?:\s*[:|>-]\s*|\s+(?-i:[A-Z0-9\"'])).{0,200}"
        r"|(?:recommended|related|watch)\s*[:|>]\s*.{0,200}|read more\.*",
        LineAction.DROP,
    ),
    # Inline cross-link blocks: a "Don't miss" label and teaser headlines tagged with a
    # section label in capitals ("Plague fears grow [INSIGHT]").
    (r"don'?t miss(?: this)?\s*:?|.{3,200}\[(?-i:[A-Z ]{3,15})\]\s*\|?", LineAction.DROP),
    # Share prompts and bare lists of social networks.
    (
        r"(?:share(?: this)?(?: (?:article|story|post|page))?(?: (?:on|via))?|tweet|email|e-mail"
        r"|print|facebook|twitter|x|whatsapp|linkedin|reddit|telegram|pinterest|copy link"
        r"|(?:click|tap) (?:here )?to share.{0,60})"
        r"(?:\s*[,|/•·]?\s*(?:facebook|twitter|x|whatsapp|linkedin|reddit|telegram|pinterest"
        r"|email|e-mail|print|copy link))*\s*:?|like this (?:story|article|post)\?.{0,60}",
        LineAction.DROP,
    ),
    # Newsletter / subscription prompts.
    (
        r"(?:subscribe|sign up|sign in|log ?in|register)(?: now| today| here)?"
        r"(?: (?:to|for) (?:our|the) .{0,80})?[.!]?",
        LineAction.DROP,
    ),
    # Navigation crumbs and section labels left over from page chrome.
    (
        r"(?:e-?paper|home|menu|search|city|world|nation|business|sports?"
        r"|you are here.{0,80})",
        LineAction.DROP,
    ),
    # Stand-alone photo credits ("Photo: AFP", "Image credit: Getty Images").
    (
        r"\(?(?:photo|image|picture|file photo|photograph|video)s?(?: credits?)?\s*(?::|by)\s*"
        r"[^.]{1,60}\)?",
        LineAction.DROP,
    ),
    # "Follow <people> on Twitter: @handles" (the names become the author if none).
    (
        r"follow .{1,120}? on (?:twitter|x|facebook|instagram|linkedin|threads|bluesky)\b.{0,200}",
        LineAction.DROP,
    ),
    # Relative timestamps of teaser cards ("4 hours ago").
    (r"(?:updated )?\d{1,2} (?:second|minute|hour|day|week|month)s? ago", LineAction.DROP),
    # Related-stories headings: everything after them is other stories.
    (
        r"(?:[\w-]+ )?(?:related|realted|relted|more|recommended|similar|trending|popular"
        r"|latest|top|other|most (?:read|popular|viewed|shared)|editor'?s? picks?)"
        r" ?(?:articles?|stories|storeis|news|posts|reads?|videos|content|coverage|links)\s*:?"
        r"|(?:more|also) (?:from|on|in) .{1,40}|you (?:may|might) (?:also )?(?:like|enjoy)\b.{0,40}"
        r"|recommended for you|in other news\s*:?",
        LineAction.END,
    ),
    # Comment widgets.
    (
        r"(?:\d+ )?comments?(?: \(\d+\))?\s*:?|no comments yet.{0,40}|(?:leave|post|add|write)"
        r" a (?:comment|reply).{0,40}|(?:view|show|load|read) (?:all )?comments.{0,20}"
        r"|join the (?:conversation|discussion).{0,40}|be the first to comment.{0,40}"
        r"|tell us what you think.{0,20}",
        LineAction.END,
    ),
    # Product promos of aggregator pages ("Try Our AI Features", "Explore what X AI can do").
    (r"try our .{0,30}features?|explore what .{1,40} can do for you\s*:?", LineAction.END),
    # Tag lists ("Hashtags", "Tags: defence, Korea").
    (r"(?:hash)?tags?(?:\s*:.{0,200})?|(?:topics?|filed under)\s*:.{0,200}", LineAction.END),
    # Syndication disclaimers ("This post has been auto-published from an agency feed ...").
    (
        r"disclaimer\s*:.{0,400}|.{0,80}\b(?:this|the) (?:post|story|article|report|content)\b"
        r".{0,80}(?:auto-?published|automatically generated|syndicated feed|agency feed"
        r"|has not been edited|not been reviewed).{0,200}",
        LineAction.END,
    ),
    # Copyright footers ("© 2019 Associated Press. All Rights Reserved.", "© Reuters").
    (
        r"(?:©|\(c\))\s*.{1,150}|copyright\s*(?:©|\(c\))?\s*\d{4}.{0,150}|all rights reserved\.?",
        LineAction.END,
    ),
)

_LINE_RULE_RES: dict[LineAction, re.Pattern[str]] = {
    action: re.compile(
        "|".join(f"(?:{pattern})" for pattern, a in LINE_RULES if a is action), re.IGNORECASE
    )
    for action in LineAction
}
# The same, looked up once (an Enum's hash is a Python call).
_END_RULES_RE = _LINE_RULE_RES[LineAction.END]
_DROP_RULES_RE = _LINE_RULE_RES[LineAction.DROP]
# Boilerplate lines are short; longer lines skip the rule table (keeps clean_text fast).
_MAX_RULE_LINE = 420
# A story-end marker only cuts once a real paragraph (a sentence-ending line at least
# this long, which a headline or crumb is not) precedes it; before that it is a stray
# line and is only dropped.
_MIN_PARAGRAPH_BEFORE_END = 80
_SENTENCE_END_CHARS = frozenset(".!?\"')")

# --- metadata lines -------------------------------------------------------------------

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
_NAME = r"[A-Z][\w.'-]*"
# "By IANS | Updated: May 21, 2025 10:47 IST", "By Jane Doe and John Roe".
_BYLINE_RE = re.compile(
    rf"(?:By|BY)\s+(?P<author>(?!The\b){_NAME}"
    rf"(?:(?:\s+|,\s*)(?:{_NAME}|and|&|de|da|van|von|der|bin|al)){{0,8}}?)"
    r"(?:\s*[|,•·-]\s*(?i:(?:last )?(?:updated|published|posted)\s*:?\s*|on\s+)?"
    r"(?P<date>[^|]{0,60}\d[^|]{0,40}))?"
    rf"(?:\s*\|.{{0,60}})?"
)
# "Updated: May 21, 2025 10:47 IST" on its own line.
_DATE_LINE_RE = re.compile(
    r"(?:(?:last )?(?:updated|published|posted)\s*(?:on|at)?\s*:?\s*)(?P<date>.{0,60}\d.{0,30})",
    re.IGNORECASE,
)
# "Via Financial Times", "Source: Reuters", "Courtesy of The Korea Herald".
_SOURCE_LINE_RE = re.compile(
    r"(?:via|source|courtesy(?: of)?|originally published (?:by|in|on|at))\s*:?\s*"
    r"(?P<source>[A-Z][\w&.' -]{1,60}?)\.?",
    re.IGNORECASE,
)
# Syndication header at the start of the story: " date 2025-07-10 MENAFN - Live Mint) ".
_SYNDICATION_HEAD_RE = re.compile(
    r"\(?\s*date\s+(?P<date>\d{4}-\d{2}-\d{2})\s+(?P<wire>[A-Z][A-Za-z]{2,20})\s*-\s*"
    r"(?P<source>[^()\n]{1,60}?)\s*\)\s*",
    re.IGNORECASE,
)
# Datelines that open the first story paragraph: "Seoul, May 21 ", "SEOUL, May 21 (Yonhap) --",
# "WASHINGTON (Reuters) - ".
_DATELINE_RES: tuple[re.Pattern[str], ...] = (
    re.compile(
        rf"(?P<dateline>(?P<place>[A-Z][A-Za-z.'-]+(?:[ -][A-Z][A-Za-z.'-]+){{0,3}}),\s+"
        rf"(?P<date>{_MONTH}\s+\d{{1,2}}(?:,\s*\d{{4}})?))\s*"
        r"(?:\((?P<agency>[A-Z][\w .-]{1,30})\)\s*)?"
        r"(?:-{1,2}|:)?\s+(?=[\"'A-Z0-9])"
    ),
    re.compile(
        r"(?P<dateline>(?P<place>[A-Z]{3,}(?:[ ,-]+[A-Z]{2,}){0,3}))\s*"
        r"\((?P<agency>[A-Z][\w .-]{1,30})\)\s*(?:-{1,2}|:)\s*(?=[\"'A-Z0-9])"
    ),
)
# Wire credit closing the story: "... against Ukraine. (Yonhap)".
_AGENCY_CREDIT_RE = re.compile(
    r"(?:(?<=[.!?\"'])\s*|^)\((?P<agency>[A-Z][A-Za-z]{1,14}(?: [A-Z][A-Za-z]{1,14})?)\)$"
)
# "Follow Demetri Sevastopulo and Robin Harding on Twitter: ..." -> the people.
_FOLLOW_RE = re.compile(r"follow (?P<who>.{1,120}?) on \w+", re.IGNORECASE)
_PEOPLE_RE = re.compile(rf"{_NAME}(?: {_NAME})+(?:(?:, | and | & ){_NAME}(?: {_NAME})+)*")
# A caption that ends with a photo credit: "... inspect a guard of honour. Photo: AFP".
_CAPTION_RE = re.compile(
    r"[.!?)\"']\s*\(?(?:photo|image|picture|file photo|photograph)s?(?: credits?)?\s*(?::|by)\s*"
    r"[^.]{1,60}\)?$",
    re.IGNORECASE,
)

# Line-break repair: a line that stops on one of these words, or on a comma, continues on
# the next line (text wrapped at a fixed width or a broken scrape).
_CONTINUATION_WORDS = frozenset(
    (
        "a", "an", "and", "as", "at", "between", "beyond", "but", "by", "for", "from", "in",
        "into", "is", "are", "was", "were", "its", "of", "on", "or", "our", "over", "than",
        "that", "the", "their", "these", "this", "those", "to", "under", "which", "who",
        "whose", "with", "amid", "against", "about", "after", "before", "his", "her",
    )
)  # fmt: skip
_FRAGMENT_EXCLUDED_CHARS = frozenset(".!?\"'。！？")
_TERMINAL_CHARS = frozenset(".!?:;\"')]")
_LAST_WORD_RE = re.compile(r"(\w+)\W*$")

_TITLE_MIN_CHARS, _TITLE_MAX_CHARS = 15, 200
_MAX_CLEAN_PASSES = 4
_DERIVED_TITLE_CHARS = 120
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z0-9])")


@dataclass(frozen=True, slots=True)
class CleanedText:
    """Clean story text and the metadata lines pulled out of it.

    `text` is paragraphs separated by one blank line. A headline found at the top stays
    in `text` (so cleaning is idempotent) and is also reported as `title`;
    `normalize_entry` removes it from the body. `published` is the date as printed.
    """

    text: str
    title: str | None = None
    author: str | None = None
    dateline: str | None = None
    source: str | None = None
    published: str | None = None


# --- HTML -----------------------------------------------------------------------------

# Elements whose content is never story text.
_DROP_TAGS = (
    "script", "style", "noscript", "iframe", "form", "button", "nav", "aside", "footer",
    "figure", "figcaption", "svg", "template", "select", "input", "object", "embed", "head",
)  # fmt: skip
_BLOCK_TAGS = frozenset(
    (
        "address", "article", "blockquote", "dd", "div", "dl", "dt", "h1", "h2", "h3", "h4",
        "h5", "h6", "header", "hr", "li", "main", "ol", "p", "pre", "section", "table", "tr",
        "ul", "body", "html",
    )
)  # fmt: skip
# Link-dense blocks (menus, "related" lists) in snippets: at least this share of the
# block's text is link text, and the block is not most of the document.
_LINK_DENSITY = 0.6
_LINK_BLOCK_TAGS = ("ul", "ol", "div", "p", "table", "section", "dl")
# A whole page (fetched article) rather than a feed snippet: look at its first 2 KB.
_FULL_DOCUMENT_RE = re.compile(r"<!doctype html|<html[\s>]|<body[\s>]", re.IGNORECASE)


def html_to_text(html: str, *, url: str | None = None, full_page: bool = False) -> str:
    """Convert HTML to plain text with paragraphs separated by blank lines.

    Full article pages go through trafilatura to find the main story; feed snippets
    (summaries, content:encoded) use a light lxml walk, which is fast enough for the
    per-entry budget. Never raises: unusable input gives "".
    """
    return _html_to_text(html, url, full_page)[0]


def _html_to_text(html: str, url: str | None, full_page: bool) -> tuple[str, bool]:
    """`html_to_text`, and whether the text came from `_snippet_text` (see `_clean_text`)."""
    if not html or not html.strip():
        return "", False
    html = _without_invisible(html)
    if full_page:
        text = _trafilatura_text(html, url)
        if text:
            return text, False
    elif not _HAS_TAG_RE.search(html):
        # Many feeds put plain text in their "HTML" fields: keep its line structure
        # (an HTML parser would fold every newline into one space).
        return htmllib.unescape(html), False
    try:
        return _snippet_text(html), True
    except Exception:  # lxml raises several unrelated types on hostile input
        return "", False


def _trafilatura_text(html: str, url: str | None) -> str:
    """Main story of a full page via trafilatura, one paragraph per block; "" if none."""
    import trafilatura  # imported lazily: heavy, and only full pages need it

    try:
        # Settings chosen by measuring on benchmarks/extraction.py (181 pages): precision
        # mode without comments scores F1 0.964 against 0.953 for the defaults; tables
        # stay in (dropping them lost recall), the fallback extractors stay on.
        text = trafilatura.extract(
            html, url=url, favor_precision=True, include_comments=False, include_tables=True
        )
    except Exception:  # trafilatura has no single exception root; garbage must not raise
        return ""
    if not text:
        return ""
    # trafilatura's txt output puts each block on its own line.
    return "\n\n".join(line.strip() for line in text.splitlines() if line.strip())


# What the walk adds where these elements start; blocks add a blank line where they
# start and end.
_INLINE_MARKS = {"br": "\n", "td": " ", "th": " "}
# Elements that call for pruning before the walk: content to drop, or links (link-dense
# blocks need links). Most feed snippets hold none, and skip pruning.
_PRUNE_TAGS = frozenset(("a", *_DROP_TAGS))
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


@lru_cache(maxsize=1)
def _snippet_parser() -> Any:
    """lxml.html's parser without its element classes: the same tree, plain elements.

    lxml.html looks up an element's class in Python for every element it hands out,
    which cost more than the parse itself; the walk needs none of those classes.
    """
    return etree.HTMLParser()


@lru_cache(maxsize=1)
def _string_content() -> Any:
    """The XPath that lxml.html's `text_content()` evaluates."""
    return etree.XPath("string()", smart_strings=False)


def _snippet_text(html: str, *, fast: bool = True) -> str:
    """Light lxml conversion: blocks become paragraphs, <br> a line break.

    The result's only whitespace is single spaces inside lines and one or two newlines
    between lines, which `_clean_text` relies on. `fast=False` turns the fast path off,
    so that tests can compare both.
    """
    root = etree.fromstring(html, _snippet_parser())
    if root is None:
        return ""  # an empty document
    walked = _snippet_parts(root, _PRUNE_TAGS)
    if walked is None:  # pruning to do first
        for element in root.iter(*_DROP_TAGS):
            if element.getparent() is not None:
                _drop_tree(element)
        _drop_link_dense_blocks(root)
        walked = _snippet_parts(root, frozenset())
    assert walked is not None
    parts, positions, plain = walked
    if fast and plain:
        texts = "".join([parts[i] for i in positions])
        if "  " not in texts and _is_printable(texts):
            # Every text is already collapsed, no space meets a newline and one blank
            # line separates blocks: only the ends are left to strip.
            return "".join(parts).strip("\n")
    for i in positions:
        parts[i] = _collapse_whitespace(parts[i])
    # The only whitespace left is single spaces inside parts, the spaces and newlines
    # added above, so plain replacements strip every line and collapse space runs.
    text = "".join(parts)
    if "  " in text:
        text = _SPACE_RUN_RE.sub(" ", text)
    text = text.replace("\n ", "\n").replace(" \n", "\n")
    return _BLANK_LINES_RE.sub("\n\n", text).strip()


def _snippet_parts(root: Any, stop: frozenset[str]) -> tuple[list[str], list[int], bool] | None:
    """Walk the tree: marks and raw texts in document order, and where the texts are.

    Blocks' blank lines in a row are added once (settling makes one of any run). The
    flag is true when every mark is a block's blank line and no text starts or ends with
    a space: then, if the texts are printable and single-spaced, there is nothing left
    to settle but the ends. None as soon as an element's tag is in `stop`.
    """
    parts: list[str] = []
    positions: list[int] = []
    plain = True
    gap = False  # the last part is a block's blank line
    for event, element in etree.iterwalk(root, events=("start", "end")):
        tag = element.tag  # a function, not a str, for comments and processing instructions
        if event == "start":
            if tag in stop:
                return None
            if tag in _BLOCK_TAGS:
                if not gap:
                    parts.append("\n\n")
                    gap = True
            elif tag in _INLINE_MARKS:
                parts.append(_INLINE_MARKS[tag])
                plain = gap = False
            text = element.text if isinstance(tag, str) else None
        else:
            if tag in _BLOCK_TAGS and not gap:
                parts.append("\n\n")
                gap = True
            text = element.tail if element is not root else None
        if text:
            positions.append(len(parts))
            parts.append(text)
            gap = False
            if text[0] == " " or text[-1] == " ":
                plain = False
    return parts, positions, plain


def _is_printable(text: str) -> bool:
    """`text.isprintable()`, through a byte table that skips printable ASCII (faster)."""
    rest = text.encode("utf-8", "surrogatepass").translate(None, _PRINTABLE_ASCII)
    return not rest or rest.decode("utf-8", "surrogatepass").isprintable()


# Whitespace is collapsed with str methods rather than a regex: this is the hot loop of
# every entry. str.split's whitespace is exactly the regex `\s` (the same character
# table), and every whitespace character but the space is unprintable, so a printable
# text without a double space needs no change at all (the common case).


def _collapse_whitespace(text: str) -> str:
    """Each run of whitespace as one space, the leading and trailing runs included."""
    if text.isprintable() and "  " not in text:
        return text
    words = text.split()
    if not words:
        return " " if text else ""
    collapsed = " ".join(words)
    if text[0].isspace():
        collapsed = " " + collapsed
    if text[-1].isspace():
        collapsed += " "
    return collapsed


def _single_spaced(line: str) -> str:
    """A line without a newline: whitespace runs as one space, ends stripped."""
    if line.isprintable() and "  " not in line and line[:1] != " " and line[-1:] != " ":
        return line
    return " ".join(line.split())


def _drop_tree(element: Any) -> None:
    """Remove an element with its content, keeping its tail (lxml.html's `drop_tree`)."""
    parent = element.getparent()
    if element.tail:
        previous = element.getprevious()
        if previous is None:
            parent.text = (parent.text or "") + element.tail
        else:
            previous.tail = (previous.tail or "") + element.tail
    parent.remove(element)


def _text_length(element: Any) -> int:
    """Length of an element's text content without surrounding whitespace."""
    return len(_string_content()(element).strip())


def _drop_link_dense_blocks(root: Any) -> None:
    """Remove menus and link lists: blocks whose text is mostly link text."""
    if root.find(".//a") is None:
        return  # most snippets: no links, so nothing can be link-dense
    total = _text_length(root)
    if total == 0:
        return
    for block in list(root.iter(*_LINK_BLOCK_TAGS)):
        if block.getparent() is None:
            continue
        links = block.findall(".//a")
        if not links:
            continue
        block_len = _text_length(block)
        if block_len == 0 or block_len >= 0.8 * total:
            continue
        link_len = sum(_text_length(a) for a in links)
        dense = link_len / block_len >= _LINK_DENSITY
        if dense and (len(links) >= 2 or block.tag in ("ul", "ol")):
            _drop_tree(block)


# --- text -----------------------------------------------------------------------------


def _without_invisible(text: str) -> str:
    """`text` without the characters of _INVISIBLE_RE.

    A byte-table pass first deletes every ASCII character the regex cannot match (a
    few times cheaper than the regex, which then only looks at what is left: nothing,
    for an ASCII text without controls); the text itself is rewritten only when what
    is left holds an invisible character.
    """
    rest = text.encode("utf-8", "surrogatepass").translate(None, _VISIBLE_ASCII)
    if rest and _INVISIBLE_RE.search(rest.decode("utf-8", "surrogatepass")):
        return _INVISIBLE_RE.sub("", text)
    return text


def _normalize_chars(text: str) -> str:
    """Invisible characters out, NFKC, quotes/dashes folded, newlines unified."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    text = _without_invisible(text)
    if text.isascii():
        # NFKC leaves ASCII as it is and no curly quote can be present: the few ASCII
        # folds are all there is to do.
        for char, folded in _ASCII_FOLD_PAIRS:
            if char in text:
                text = text.replace(char, folded)
        return text
    text = unicodedata.normalize("NFKC", text)
    # A curly quote glued to a word ('South Korea“went crazy”') loses the space it
    # implied once folded to '"'; put it back while the direction is still known.
    if "“" in text or "”" in text:
        text = _CURLY_QUOTE_RE.sub(_unglue_quote, text)
    for char, folded in _CHAR_FOLD_PAIRS:
        if char in text:
            text = text.replace(char, folded)
    return text


def _unglue_quote(match: re.Match[str]) -> str:
    """A space between a letter or digit and an opening quote, or a closing quote and one.

    Looks at the neighbours in the original text, so adjacent quotes never see the
    spaces added for each other.
    """
    text, quote = match.string, match.group()
    if quote == "“":
        start = match.start()
        return " “" if start and text[start - 1].isalnum() else quote
    end = match.end()
    return "” " if end < len(text) and text[end].isalnum() else quote


def _blocks_of_lines(text: str, *, spaced: bool = False) -> list[list[str]]:
    """Blank-line separated blocks, each a list of whitespace-collapsed lines.

    `spaced` promises the form `_snippet_text` gives: nothing to collapse or strip, and
    lines separated by one or two newlines alone (checking it would cost more than the
    general path).
    """
    if spaced:
        return [block.split("\n") for block in text.split("\n\n")]
    blocks = []
    for raw_block in _BLANK_LINES_RE.split(text):
        lines = [_single_spaced(line) for line in raw_block.split("\n")]
        lines = [line for line in lines if line]
        if lines:
            blocks.append(lines)
    return blocks


def _single_line_blocks(text: str) -> list[str] | None:
    """The lines of a `spaced` text whose blocks are all one line long (most snippets).

    Such blocks have nothing to rejoin, so they are the lines; None for other texts.
    """
    lines = text.split("\n")
    single = lines[::2]
    # One line per block: every other line is the empty one between blocks.
    if all(single) and not any(lines[1::2]):
        return single
    return None


def _continues_on_next_line(line: str, next_line: str) -> bool:
    """True when `line` was broken mid-sentence and `next_line` is its continuation."""
    if line[-1] in _TERMINAL_CHARS:
        return False
    if line[-1] == "," or next_line[0].islower():
        return True
    match = _LAST_WORD_RE.search(line)
    return match is not None and match.group(1).lower() in _CONTINUATION_WORDS


def _join_broken_lines(lines: list[str]) -> list[str]:
    """Rejoin sentences split across lines inside one block."""
    joined = [lines[0]]
    for line in lines[1:]:
        if _continues_on_next_line(joined[-1], line):
            joined[-1] = f"{joined[-1]} {line}"
        else:
            joined.append(line)
    return joined


def _is_short_fragment(line: str, max_words: int) -> bool:
    """A very short line with no sentence punctuation or figures: a label, crumb, button."""
    return (
        len(line) <= 30
        and len(line.split(maxsplit=max_words)) <= max_words  # no need to split it all
        and not any(ch in _FRAGMENT_EXCLUDED_CHARS or ch.isdigit() for ch in line)
    )


def _matches_people(text: str) -> str | None:
    """Return `text` if it reads as a list of personal names, else None."""
    match = _PEOPLE_RE.fullmatch(text.strip())
    return match.group(0) if match else None


@dataclass(slots=True)
class _Meta:
    """Mutable scratch metadata while cleaning; frozen into CleanedText at the end."""

    author: str | None = None
    dateline: str | None = None
    source: str | None = None
    published: str | None = None


def _metadata_line(line: str, meta: _Meta) -> bool:
    """Record metadata carried by a whole line; True if the line is metadata only."""
    if len(line) > 160:
        return False
    if match := _BYLINE_RE.fullmatch(line):
        meta.author = meta.author or match.group("author").strip(" ,")
        if match.group("date"):
            meta.published = meta.published or match.group("date").strip()
        return True
    if match := _DATE_LINE_RE.fullmatch(line):
        meta.published = meta.published or match.group("date").strip()
        return True
    if match := _SOURCE_LINE_RE.fullmatch(line):
        meta.source = meta.source or match.group("source").strip()
        return True
    if match := _FOLLOW_RE.match(line):
        meta.author = meta.author or _matches_people(match.group("who"))
    return False


def _filter_lines(lines: list[str], meta: _Meta) -> list[str]:
    """Apply metadata lines and LINE_RULES; cut at the first story-end marker."""
    kept: list[str] = []
    story_started = False
    for line in lines:
        if _metadata_line(line, meta):
            continue
        if len(line) <= _MAX_RULE_LINE:
            if _END_RULES_RE.fullmatch(line):
                if story_started:
                    break
                continue
            if _DROP_RULES_RE.fullmatch(line):
                continue
            # A caption's credit ends the line and holds no full stop, so a line ending
            # in one (most story lines) skips the search.
            if line[-1:] != "." and _CAPTION_RE.search(line):
                continue
        kept.append(line)
        story_started = story_started or (
            len(line) >= _MIN_PARAGRAPH_BEFORE_END and line[-1] in _SENTENCE_END_CHARS
        )
    return kept


def _drop_teasers(lines: list[str]) -> list[str]:
    """Drop truncated teasers ("The top officers ... the ...") of a later paragraph.

    Repeated whole paragraphs are kept: pages legitimately repeat list items.
    """
    kept: list[str] = []
    for index, line in enumerate(lines):
        if line.endswith("...") and len(line) > 40:
            stem = line.rstrip(". ")
            others = lines[:index] + lines[index + 1 :]
            if any(other.startswith(stem) and len(other) > len(stem) for other in others):
                continue
        kept.append(line)
    return kept


def _trim_edge_fragments(lines: list[str]) -> list[str]:
    """Drop runs of crumb-like short lines before the first and after the last sentence."""
    start, end = 0, len(lines)
    while start < end - 1 and _is_short_fragment(lines[start], 2):
        start += 1
    while end - 1 > start and _is_short_fragment(lines[end - 1], 3):
        end -= 1
    return lines[start:end]


def _looks_like_headline(line: str) -> bool:
    """A short line without closing punctuation: a headline, not a sentence."""
    return (
        _TITLE_MIN_CHARS <= len(line) <= _TITLE_MAX_CHARS
        and len(line.split(maxsplit=2)) >= 3  # three words or more: no need to split it all
        and line[-1] not in ".,;:"
    )


def _extract_head_metadata(lines: list[str], meta: _Meta) -> list[str]:
    """Strip a syndication header or dateline opening the story into metadata."""
    first_story = 1 if lines and _looks_like_headline(lines[0]) and len(lines) > 1 else 0
    for index in range(first_story, min(first_story + 2, len(lines))):
        line = lines[index]
        if match := _SYNDICATION_HEAD_RE.match(line):
            meta.published = meta.published or match.group("date")
            meta.dateline = meta.dateline or match.group("date")
            meta.source = meta.source or match.group("source").strip()
        else:
            for dateline_re in _DATELINE_RES:
                if match := dateline_re.match(line):
                    meta.dateline = meta.dateline or match.group("dateline")
                    if match.group("agency"):
                        meta.source = meta.source or match.group("agency").strip()
                    break
        if match is not None and match.end() < len(line):
            lines = [*lines[:index], line[match.end() :], *lines[index + 1 :]]
            break
    return lines


def _extract_agency_credit(lines: list[str], meta: _Meta) -> list[str]:
    """Move a closing wire credit ("(Yonhap)") from the last paragraph to `source`."""
    # The credit closes the line, so a line not ending in ")" skips the (slow) search.
    while lines and lines[-1].endswith(")"):
        match = _AGENCY_CREDIT_RE.search(lines[-1])
        if not match:
            break
        meta.source = meta.source or match.group("agency")
        rest = lines[-1][: match.start()].rstrip()
        lines = [*lines[:-1], rest] if rest else lines[:-1]
    return lines


def clean_text(text: str) -> CleanedText:
    """Clean story text: characters, whitespace, boilerplate out, metadata lines kept.

    NFKC, ASCII quotes and dashes, whitespace collapsed in lines, one blank line
    between paragraphs, boilerplate (ads, app/share prompts, related-story blocks and
    everything after them, comment widgets, syndication disclaimers) removed, and
    bylines, source lines and datelines returned as fields instead of text. Idempotent
    on its own `text`, and never raises.
    """
    return _clean_text(text, spaced=False)


def _clean_text(text: str, *, spaced: bool) -> CleanedText:
    """`clean_text`; `spaced` says that `text` is `_snippet_text` output.

    Such a text's lines need no collapsing, unless character normalization changed it.
    """
    if not text:
        return CleanedText(text="")
    meta = _Meta()
    lines: list[str] = []
    normalized = _normalize_chars(text)
    if spaced and normalized == text and (single := _single_line_blocks(text)) is not None:
        lines = single
    else:
        for block in _blocks_of_lines(normalized, spaced=spaced and normalized == text):
            lines.extend(_join_broken_lines(block))
    # Taking a dateline or credit off a line can leave a line that is itself
    # boilerplate; repeat until nothing more changes (one extra pass at most, in practice).
    for _ in range(_MAX_CLEAN_PASSES):
        lines = _drop_teasers(_filter_lines(lines, meta))
        lines = _trim_edge_fragments(lines)
        trimmed = _extract_agency_credit(_extract_head_metadata(lines, meta), meta)
        if trimmed == lines:
            break
        lines = trimmed
    title = lines[0] if len(lines) > 1 and _looks_like_headline(lines[0]) else None
    if title is not None and len(lines[1]) <= len(title):
        title = None  # two short lines: no story below to be a headline of
    return CleanedText(
        text="\n\n".join(lines),
        title=title,
        author=meta.author,
        dateline=meta.dateline,
        source=meta.source,
        published=meta.published,
    )


# --- URLs -----------------------------------------------------------------------------

# Query parameters that only track the click, never select content. Exact names, plus
# any name starting with one of TRACKING_PARAM_PREFIXES.
TRACKING_PARAMS: tuple[str, ...] = (
    "fbclid", "gclid", "dclid", "gclsrc", "msclkid", "yclid", "twclid", "ttclid", "li_fat_id",
    "mc_cid", "mc_eid", "igshid", "igsh", "ref", "ref_src", "ref_url", "referrer", "ocid",
    "cmpid", "cmp", "cid", "icid", "ncid", "sr_share", "smid", "smtyp", "share", "s_cid",
    "_ga", "_gl", "_hsenc", "_hsmi", "mkt_tok", "spm", "at_medium", "at_campaign", "rss",
    "feedtype", "CMP", "ito", "xtor", "wt_mc", "WT.mc_id", "guccounter", "guce_referrer",
    "guce_referrer_sig", "soc_src", "soc_trk", "taid", "__twitter_impression", "fb_source",
)  # fmt: skip
TRACKING_PARAM_PREFIXES: tuple[str, ...] = ("utm_", "pk_", "mtm_", "hsa_", "vero_", "oly_")
_TRACKING_NAMES = frozenset(name.lower() for name in TRACKING_PARAMS)
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_C0_AND_SPACE = "".join(chr(code) for code in range(0x21))
_PORT_RE = re.compile(r"(?P<host>\[[^\]]*\]|[^:]*)(?::(?P<port>\d*))?")
# Already canonical but for a missing "/" path: lowercase http(s) scheme and host name,
# no user, port, query or fragment, a path of printable ASCII (most feed links).
_PLAIN_URL_RE = re.compile(r"https?://[a-z0-9_-]+(?:\.[a-z0-9_-]+)*(?P<path>/[!-\"$->@-~]*)?")


def _is_tracking_param(pair: str) -> bool:
    """True for query pairs such as utm_source=x or fbclid=y."""
    name = unquote(pair.partition("=")[0]).strip().lower()
    return name in _TRACKING_NAMES or name.startswith(TRACKING_PARAM_PREFIXES)


def _strip_url(url: str) -> str:
    """Strip whitespace and the C0 controls urlsplit ignores at either end."""
    while True:
        stripped = url.strip().strip(_C0_AND_SPACE)
        if stripped == url:
            return stripped
        url = stripped


def _canonical_host(host: str) -> str:
    """Lowercase host; internationalized names in their IDNA (punycode) form."""
    host = host.lower().rstrip(".")
    if host.isascii() or host.startswith("["):
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def canonical_url(url: str) -> str:
    """Canonical form of an http(s) URL, so copies of one link compare equal.

    Lowercases scheme and host (IDNA for non-ASCII hosts), drops default ports,
    fragments and tracking parameters, sorts the remaining query pairs (keeping their
    encoding) and keeps the path's case. Anything else, or anything unparsable, is
    returned stripped and unchanged; never raises.
    """
    if isinstance(url, str) and (plain := _PLAIN_URL_RE.fullmatch(url)):
        return url if plain.group("path") else url + "/"
    return _canonical_url(url)


def _canonical_url(url: str) -> str:
    """`canonical_url` without its shortcut for URLs that are already canonical."""
    current = _strip_url(url) if isinstance(url, str) else ""
    # Dropping a fragment or parameter can expose characters that stripping then
    # removes, which can reorder the query; a second pass settles it.
    for _ in range(3):
        canonical = _canonical_url_once(current)
        if canonical == current:
            break
        current = canonical
    return current


def _canonical_url_once(url: str) -> str:
    """One canonicalization pass over an already stripped URL."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.netloc:
            return url
        userinfo, _, hostport = parts.netloc.rpartition("@")
        match = _PORT_RE.fullmatch(hostport)
        if not match or not match.group("host"):
            return url
        host = _canonical_host(match.group("host"))
        port = match.group("port")
        netloc = host if not port or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
        if userinfo:
            netloc = f"{userinfo}@{netloc}"
        pairs = [pair for pair in parts.query.split("&") if pair and not _is_tracking_param(pair)]
        query = "&".join(sorted(pairs, key=lambda pair: (unquote(pair.partition("=")[0]), pair)))
        return _strip_url(urlunsplit((scheme, netloc, parts.path or "/", query, "")))
    except (ValueError, UnicodeError):
        return url


# --- dates ----------------------------------------------------------------------------

# Offsets of the timezone abbreviations news sites print after times.
_TZ_OFFSETS: dict[str, float] = {
    "UTC": 0, "GMT": 0, "Z": 0, "BST": 1, "CET": 1, "CEST": 2, "EET": 2, "MSK": 3, "IST": 5.5,
    "PKT": 5, "ICT": 7, "WIB": 7, "SGT": 8, "HKT": 8, "CST": -6, "KST": 9, "JST": 9,
    "AEST": 10, "AEDT": 11, "NZST": 12, "EST": -5, "EDT": -4, "CDT": -5, "MST": -7,
    "MDT": -6, "PST": -8, "PDT": -7,
}  # fmt: skip
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_ISO_DATE_RE = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})(?:[T ](?P<h>\d{2}):(?P<mi>\d{2}))?"
)
_PROSE_DATE_RE = re.compile(
    r"(?P<mon>[A-Za-z]{3,9})\.?\s+(?P<d>\d{1,2}),?\s+(?P<y>\d{4})"
    r"(?:,?\s+(?P<h>\d{1,2}):(?P<mi>\d{2})\s*(?P<ampm>[AaPp]\.?[Mm]\.?)?)?\s*(?P<tz>[A-Z]{1,4})?"
)


def parse_printed_date(printed: str) -> datetime | None:
    """Parse a date as printed in bylines ("May 21, 2025 10:47 IST", "2025-07-10").

    Returns an aware UTC datetime; dates without a zone are taken as UTC. None if the
    text is not a date this understands.
    """
    try:
        if match := _ISO_DATE_RE.search(printed):
            hour, minute, offset = int(match["h"] or 0), int(match["mi"] or 0), 0.0
            year, month, day = int(match["y"]), int(match["mo"]), int(match["d"])
        elif match := _PROSE_DATE_RE.search(printed):
            month = _MONTHS.get(match["mon"][:3].lower(), 0)
            year, day = int(match["y"]), int(match["d"])
            hour, minute = int(match["h"] or 0), int(match["mi"] or 0)
            if match["ampm"] and match["ampm"][0].lower() == "p" and hour < 12:
                hour += 12
            elif match["ampm"] and match["ampm"][0].lower() == "a" and hour == 12:
                hour = 0
            offset = _TZ_OFFSETS.get(match["tz"] or "UTC", 0.0)
        else:
            return None
        local = datetime(year, month, day, hour, minute, tzinfo=timezone(timedelta(hours=offset)))
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


# --- entries --------------------------------------------------------------------------


def _comparable(text: str) -> str:
    """Lowercased word characters only, for comparing headlines across outlets."""
    return "".join(_WORD_RE.findall(text.casefold()))


def _repeats_title(paragraph: str, title_key: str) -> bool:
    """`_comparable(paragraph) == title_key`, mostly decided on the paragraph's start.

    `_comparable` works character by character, so a prefix's key starts the whole
    key: one that is longer than the title's, or not a start of it, settles the answer.
    """
    head = _comparable(paragraph[: 2 * len(title_key) + 16])
    if len(head) > len(title_key) or not title_key.startswith(head):
        return False
    return _comparable(paragraph) == title_key


def _single_line(text: str | None) -> str:
    """A short field (title, author) as one clean line."""
    if not text:
        return ""
    return " ".join(_normalize_chars(text).split())


def _title_from_text(text: str) -> str:
    """First sentence of the story, cut at a word boundary, as a fallback title."""
    first_paragraph = text.split("\n\n", 1)[0]
    sentence = _SENTENCE_END_RE.split(first_paragraph, maxsplit=1)[0].strip()
    if len(sentence) <= _DERIVED_TITLE_CHARS:
        return sentence
    cut = sentence[:_DERIVED_TITLE_CHARS].rsplit(" ", 1)[0].rstrip(",;:- ")
    return f"{cut}..."


def normalize_entry(raw: RawEntry) -> Article:
    """Turn one raw feed entry or file into an Article: clean text plus metadata fields.

    The body is converted per `raw.content_type` ("html" or "text"; a whole HTML
    document, as opposed to a feed snippet, goes through full-page extraction), cleaned, and its
    headline removed from the top; fields given by the feed win over those derived
    from the text. The guid falls back to the canonical URL, then to a hash of title
    and text, so the same story always gets the same guid.
    """
    if raw.content_type == "html":
        full_page = _FULL_DOCUMENT_RE.search(raw.content, 0, 2048) is not None
        body, spaced = _html_to_text(raw.content, raw.url, full_page)
    else:
        body, spaced = raw.content, False
    cleaned = _clean_text(body, spaced=spaced)
    paragraphs = cleaned.text.split("\n\n") if cleaned.text else []

    title = _single_line(raw.title)
    if not title and cleaned.title:
        title = cleaned.title
    if paragraphs and title and _repeats_title(paragraphs[0], _comparable(title)):
        paragraphs = paragraphs[1:]
    text = "\n\n".join(paragraphs)
    if not title:
        title = _title_from_text(text)

    url = raw.url.strip() if raw.url and raw.url.strip() else None
    canonical = canonical_url(url) if url else None
    guid = (raw.guid or "").strip() or canonical
    if not guid:
        digest = hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()
        guid = f"sha256:{digest[:32]}"
    published_at = raw.published
    if published_at is None and cleaned.published:
        published_at = parse_printed_date(cleaned.published)
    return Article(
        guid=guid,
        url=url,
        canonical_url=canonical,
        title=title,
        text=text,
        published_at=published_at,
        author=_single_line(raw.author) or cleaned.author,
        source=_single_line(raw.source) or cleaned.source,
        language=(raw.language or "").strip() or None,
        dateline=cleaned.dateline,
    )
