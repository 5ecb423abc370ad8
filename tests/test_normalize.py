"""Tests for tasks.normalize: HTML to text, cleaning, canonical URLs, whole entries."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import unicodedata
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tasks.models import RawEntry
from tasks.normalize import (
    _CAPTION_RE,
    _CHAR_FOLDS,
    _INVISIBLE_RE,
    _PLAIN_URL_RE,
    CleanedText,
    _blocks_of_lines,
    _canonical_url,
    _clean_text,
    _collapse_whitespace,
    _comparable,
    _html_to_text,
    _is_printable,
    _is_short_fragment,
    _join_broken_lines,
    _looks_like_headline,
    _normalize_chars,
    _repeats_title,
    _single_line_blocks,
    _single_spaced,
    _snippet_text,
    _without_invisible,
    canonical_url,
    clean_text,
    html_to_text,
    normalize_entry,
    parse_printed_date,
)

SEEDS_DIR = Path(__file__).resolve().parent.parent / "seeds"

STORY = (
    "The defence ministers of both countries met in Seoul on Friday to discuss the cost of "
    "stationing troops on the peninsula, officials said after the talks ended."
)
STORY_2 = (
    "Negotiators agreed to meet again next month, although neither side would say whether "
    "a figure for the new cost-sharing agreement had been discussed in detail."
)


# --- html_to_text -------------------------------------------------------------------


def test_snippet_html_keeps_paragraph_breaks_and_decodes_entities() -> None:
    html = "<p>First  paragraph &amp; more.</p>\n<p>Second\nparagraph.</p>"
    assert html_to_text(html) == "First paragraph & more.\n\nSecond paragraph."


def test_snippet_html_turns_br_into_line_break_not_paragraph() -> None:
    assert html_to_text("<p>Line one<br>line two</p>") == "Line one\nline two"


def test_snippet_html_drops_scripts_styles_and_figures() -> None:
    html = (
        "<div><script>var tracking = 1;</script><style>p {color: red}</style>"
        "<figure><img src=x><figcaption>Caption text</figcaption></figure>"
        f"<p>{STORY}</p></div>"
    )
    text = html_to_text(html)
    assert text == STORY


def test_snippet_html_drops_link_dense_lists_but_keeps_story() -> None:
    html = (
        f"<p>{STORY}</p>"
        "<ul><li><a href='/a'>Another headline here</a></li>"
        "<li><a href='/b'>Yet another headline</a></li></ul>"
        f"<p>{STORY_2} See <a href='/report'>the report</a>.</p>"
    )
    text = html_to_text(html)
    assert "Another headline" not in text
    assert "Yet another headline" not in text
    assert STORY in text
    assert "See the report." in text


def test_snippet_html_that_is_only_a_link_is_kept() -> None:
    assert html_to_text("<a href='/x'>Seoul and Washington agree on troop costs</a>") == (
        "Seoul and Washington agree on troop costs"
    )


@pytest.mark.parametrize(
    "garbage",
    ["", "   ", "<", "<<<>>>", "<html></html>", "\x00\x01<p>", "<!-- -->", "<?xml ?>", "&#0;"],
)
def test_html_to_text_never_raises_on_garbage(garbage: str) -> None:
    for full_page in (False, True):
        assert isinstance(html_to_text(garbage, full_page=full_page), str)


def test_full_page_extracts_main_story_not_navigation() -> None:
    menu = "".join(f"<li><a href='/s{i}'>Section {i}</a></li>" for i in range(12))
    paragraphs = "".join(
        f"<p>{sentence} This is paragraph {i} of the story about troop costs.</p>"
        for i, sentence in enumerate([STORY, STORY_2] * 3)
    )
    page = (
        "<html><head><title>Troop cost talks</title></head><body>"
        f"<nav><ul>{menu}</ul></nav><article><h1>Troop cost talks</h1>{paragraphs}</article>"
        "<footer><p>Copyright 2025 Example News. All rights reserved.</p></footer>"
        "</body></html>"
    )
    text = html_to_text(page, url="https://news.example/a", full_page=True)
    assert STORY in text
    assert "paragraph 5 of the story" in text
    assert "Section 3" not in text
    assert "All rights reserved" not in text
    assert "\n\n" in text


# --- clean_text: characters and whitespace ------------------------------------------


def test_clean_text_applies_nfkc_and_folds_quotes_and_dashes() -> None:
    cleaned = clean_text("“Quoted” ‘single’ – en — em ﬁnal ＡＢＣ 1\u00a0000")
    assert cleaned.text == "\"Quoted\" 'single' - en - em final ABC 1 000"


def test_clean_text_removes_control_and_zero_width_characters() -> None:
    cleaned = clean_text("Sou\u200bth Ko\x00rea\u00ad's tro\x07ops\ufeff")
    assert cleaned.text == "South Korea's troops"


def test_clean_text_collapses_whitespace_and_separates_paragraphs_by_one_blank_line() -> None:
    text = f"  {STORY}   \r\n\r\n\r\n\t\n{STORY_2}  \n"
    assert clean_text(text).text == f"{STORY}\n\n{STORY_2}"


def test_clean_text_rejoins_lines_broken_mid_sentence() -> None:
    text = (
        "Officials said the talks covered the cost of hosting troops beyond the\n"
        "Korean peninsula and the wider region.\n"
        "A second paragraph starts here."
    )
    assert clean_text(text).text == (
        "Officials said the talks covered the cost of hosting troops beyond the Korean "
        "peninsula and the wider region.\n\nA second paragraph starts here."
    )


def test_glued_curly_quote_gets_its_space_back() -> None:
    assert clean_text("Trump said South Korea“went crazy”when asked.").text == (
        'Trump said South Korea "went crazy" when asked.'
    )


# --- clean_text: boilerplate --------------------------------------------------------


def test_related_block_and_everything_after_it_is_cut() -> None:
    text = f"{STORY}\n{STORY_2}\nRelated Stories\nOther outlet\nA different story entirely."
    assert clean_text(text).text == f"{STORY}\n\n{STORY_2}"


@pytest.mark.parametrize(
    "marker",
    [
        "Related Articles",
        "More Stories",
        "International Realted Stories",
        "You may also like",
        "Comments",
        "12 comments",
        "No comments yet. Be the first!",
        "Try Our AI Features",
        "Explore what Example AI can do for you:",
        "Tags: defence, Korea",
        "Disclaimer: This post has been auto-published from an agency feed",
    ],
)
def test_story_end_markers_cut_the_tail(marker: str) -> None:
    text = f"{STORY}\n\n{marker}\n\nUnrelated tail story about football results today."
    cleaned = clean_text(text)
    assert cleaned.text == STORY


def test_end_marker_before_any_story_is_dropped_not_used_as_a_cut() -> None:
    text = f"Comments\n\n{STORY}\n\n{STORY_2}"
    assert clean_text(text).text == f"{STORY}\n\n{STORY_2}"


@pytest.mark.parametrize(
    "line",
    [
        "Advertisement",
        "ADVERTISEMENT",
        "Open in App",
        "READ ALSO\u00a0 ECB to review format of private calls",
        "Also read: Another story about something else",
        "Share this article",
        "Facebook Twitter WhatsApp Email",
        "Photo: AFP",
        "Image credit: Getty Images",
        "Follow Jane Doe on Twitter: @janedoe",
        "4 hours ago",
        "Subscribe to our newsletter",
        "Epaper",
    ],
)
def test_boilerplate_lines_are_removed_between_story_paragraphs(line: str) -> None:
    text = f"{STORY}\n\n{line}\n\n{STORY_2}"
    assert clean_text(text).text == f"{STORY}\n\n{STORY_2}"


def test_story_sentences_that_start_like_boilerplate_are_kept() -> None:
    paragraphs = [
        "Related talks in Tokyo stalled last year, when both sides refused to move on costs.",
        "Comments from the ministry suggested a compromise was close, officials said.",
        "Share prices of defence contractors rose 3% after the announcement on Friday.",
        "Follow-up talks are scheduled for March, the ministry said in a statement.",
    ]
    text = "\n\n".join([STORY, *paragraphs])
    assert clean_text(text).text == text


def test_caption_ending_in_photo_credit_is_removed() -> None:
    caption = "Officials inspect a guard of honour in Seoul on Thursday. Photo: AFP"
    assert clean_text(f"{STORY}\n{caption}\n{STORY_2}").text == f"{STORY}\n\n{STORY_2}"


def test_teaser_repeating_the_start_of_a_later_paragraph_is_removed() -> None:
    teaser = STORY[:70].rsplit(" ", 1)[0] + " ..."
    assert clean_text(f"{teaser}\n\n{STORY}\n\n{STORY_2}").text == f"{STORY}\n\n{STORY_2}"


def test_leading_navigation_crumbs_are_removed() -> None:
    text = f"City\nEpaper\nWorld\n\nTroop cost talks resume in Seoul\n\n{STORY}"
    assert clean_text(text).text == f"Troop cost talks resume in Seoul\n\n{STORY}"


# --- clean_text: metadata -----------------------------------------------------------


def test_byline_with_update_time_becomes_author_and_published() -> None:
    cleaned = clean_text(f"By IANS | Updated: May 21, 2025 10:47 IST\n\n{STORY}")
    assert cleaned.text == STORY
    assert cleaned.author == "IANS"
    assert cleaned.published == "May 21, 2025 10:47 IST"


def test_byline_with_several_people() -> None:
    cleaned = clean_text(f"By Jane Doe and John Roe\n\n{STORY}")
    assert cleaned.author == "Jane Doe and John Roe"
    assert cleaned.text == STORY


def test_via_line_becomes_source() -> None:
    cleaned = clean_text(f"Via Financial Times\n\n{STORY}")
    assert cleaned.source == "Financial Times"
    assert cleaned.text == STORY


def test_place_and_date_dateline_is_moved_to_metadata() -> None:
    cleaned = clean_text(f"Seoul, May 21 {STORY}\n\n{STORY_2}")
    assert cleaned.dateline == "Seoul, May 21"
    assert cleaned.text == f"{STORY}\n\n{STORY_2}"


def test_wire_dateline_with_agency_gives_source() -> None:
    cleaned = clean_text(f"SEOUL (Reuters) - {STORY}")
    assert cleaned.dateline == "SEOUL"
    assert cleaned.source == "Reuters"
    assert cleaned.text == STORY


def test_syndication_header_gives_date_and_outlet() -> None:
    cleaned = clean_text(f" date 2024-01-02 MENAFN - Example Times) {STORY}")
    assert cleaned.text == STORY
    assert cleaned.source == "Example Times"
    assert cleaned.published == "2024-01-02"


def test_closing_wire_credit_becomes_source() -> None:
    cleaned = clean_text(f"{STORY}\n{STORY_2} (Yonhap)")
    assert cleaned.source == "Yonhap"
    assert cleaned.text == f"{STORY}\n\n{STORY_2}"


def test_follow_line_names_the_authors_when_there_is_no_byline() -> None:
    cleaned = clean_text(f"{STORY}\n\nFollow Jane Doe and John Roe on Twitter: @jd, @jr")
    assert cleaned.author == "Jane Doe and John Roe"
    assert cleaned.text == STORY


def test_headline_is_reported_as_title_and_kept_in_text() -> None:
    cleaned = clean_text(f"Troop cost talks resume in Seoul\n{STORY}")
    assert cleaned.title == "Troop cost talks resume in Seoul"
    assert cleaned.text.startswith("Troop cost talks resume in Seoul\n\n")


def test_no_title_when_text_opens_with_a_sentence() -> None:
    assert clean_text(f"{STORY}\n\n{STORY_2}").title is None


def test_clean_text_returns_frozen_dataclass() -> None:
    cleaned = clean_text(STORY)
    assert isinstance(cleaned, CleanedText)
    with pytest.raises(AttributeError):
        cleaned.text = "x"  # type: ignore[misc]


# --- clean_text: properties ---------------------------------------------------------

BOILERPLATE_LINES = [
    "Advertisement",
    "Related Articles",
    "Comments",
    "No comments yet...",
    "Open in App",
    "READ ALSO Something else",
    "By IANS | Updated: May 21, 2025 10:47 IST",
    "Via Financial Times",
    "Photo: AFP",
    "City",
    "Hashtags",
    "4 hours ago",
    "(Yonhap)",
    "Seoul, May 21",
]
article_like_text = st.lists(
    st.one_of(
        st.sampled_from(BOILERPLATE_LINES),
        st.sampled_from([STORY, STORY_2, STORY[:80] + "...", "Short headline for a story"]),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
    ),
    max_size=12,
).flatmap(
    lambda parts: st.lists(st.sampled_from(["\n", "\n\n", " ", "\r\n"]), min_size=len(parts)).map(
        lambda seps: "".join(p + s for p, s in zip(parts, seps, strict=False))
    )
)
any_text = st.one_of(st.text(), article_like_text)


@settings(max_examples=400, deadline=None)
@given(any_text)
def test_clean_text_is_idempotent(text: str) -> None:
    once = clean_text(text).text
    assert clean_text(once).text == once


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_clean_text_never_doubles_whitespace(text: str) -> None:
    cleaned = clean_text(text).text
    assert "  " not in cleaned
    assert "\n\n\n" not in cleaned
    assert cleaned == cleaned.strip()
    for paragraph in cleaned.split("\n\n"):
        assert paragraph == paragraph.strip()
        assert "\n" not in paragraph
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", cleaned)


# The hot path replaces regexes and str.translate with cheaper str methods; these pin
# the results to the regex definitions they replace.
spacey_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(" \t\n\r\x0b\x0c\x1c\x85\xa0\u2000\u2028\u3000“”‘’—`´«\u200b\u00ad_a1é"),
        st.characters(),
    )
)


@settings(max_examples=500, deadline=None)
@given(spacey_text)
def test_whitespace_helpers_equal_their_regex_definitions(text: str) -> None:
    assert _collapse_whitespace(text) == re.sub(r"\s+", " ", text)
    for line in text.split("\n"):
        assert _single_spaced(line) == re.sub(r"[^\S\n]+", " ", line).strip()


@settings(max_examples=500, deadline=None)
@given(st.one_of(spacey_text, st.sampled_from(["Short headline for a story", "a b", "x y z."])))
def test_line_shape_checks_count_words_as_a_full_split_does(line: str) -> None:
    if not line:
        return
    words = len(line.split())
    assert _looks_like_headline(line) == (
        15 <= len(line) <= 200 and words >= 3 and line[-1] not in ".,;:"
    )
    for max_words in (2, 3):
        assert _is_short_fragment(line, max_words) == (
            len(line) <= 30
            and words <= max_words
            and not any(ch in ".!?\"'。！？" or ch.isdigit() for ch in line)
        )


ascii_text = st.text(alphabet=st.characters(max_codepoint=127))


@settings(max_examples=500, deadline=None)
@given(st.one_of(spacey_text, ascii_text))
def test_normalize_chars_equals_its_regex_and_translate_definition(text: str) -> None:
    expected = _INVISIBLE_RE.sub("", text.replace("\r\n", "\n"))
    expected = unicodedata.normalize("NFKC", expected)
    expected = re.sub(r"(?<=[^\W_])(?=“)|(?<=”)(?=[^\W_])", " ", expected)
    assert _normalize_chars(text) == expected.translate(_CHAR_FOLDS)


@settings(max_examples=500, deadline=None)
@given(st.one_of(spacey_text, ascii_text, st.text()))
@example("lone \ud800 surrogate \u200b\x00 and \udfff")
def test_byte_table_shortcuts_equal_the_plain_definitions(text: str) -> None:
    assert _without_invisible(text) == _INVISIBLE_RE.sub("", text)
    assert _is_printable(text) == text.isprintable()


# Feed snippets: block and inline tags, links and dropped elements, entities, spaces of
# every kind, and text of any characters.
snippet_html = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "<p>", "</p>", "<div>", "</div>", "<br>", "<td>", "<th>", "</td>", "<span>",
                "</span>", "<b>", "</b>", "<ul><li>", "</li></ul>", "<a href='/x'>", "</a>",
                "<!-- note -->", "<script>x = 1</script>", "<figure>Photo</figure>", " ", "  ",
                "\n", "\t", "\r\n", "&amp;", "&nbsp;", "&#8203;", "&#32;", "&#x2028;", "\xa0",
                "\u200b", "“", "”", "é", "£", "Word", "two words", "Sentence. ", " lead",
                "trail ",
            ]
        ),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    ),
    max_size=30,
).map("".join)  # fmt: skip


def _outcome(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except Exception as exc:  # compared, not raised: both paths must fail alike
        return type(exc)


@settings(max_examples=500, deadline=None)
@given(snippet_html)
@example("<p>One  two</p><p> three </p>")
@example("<p>a</p>\n<p>b<br>c</p><table><tr><td>x</td><td>y</td></tr></table>")
def test_snippet_fast_path_equals_the_general_path(html: str) -> None:
    assert _outcome(_snippet_text, html) == _outcome(_snippet_text, html, fast=False)


@settings(max_examples=500, deadline=None)
@given(snippet_html)
@example("<p>Seoul, May 21 (Yonhap) -- Talks resumed.</p><p>Advertisement</p>")
@example("<p>“Quoted”text and ﬁne print</p><p>a&#8203;b</p>")
def test_clean_text_shortcut_for_snippets_equals_clean_text(html: str) -> None:
    text, spaced = _html_to_text(html, None, False)
    assert text == html_to_text(html)
    if spaced and text:
        # What the shortcut relies on: single spaces inside lines, one or two newlines
        # between them, nothing at either end.
        assert text == text.strip()
        assert "  " not in text and "\n\n\n" not in text
        assert " \n" not in text and "\n " not in text
        assert not re.search(r"[^\S \n]", text)
    assert _clean_text(text, spaced=spaced) == clean_text(text)


# Texts in the form `_snippet_text` gives: single-spaced lines, one or two newlines apart.
spaced_text = st.lists(
    st.from_regex(r"[A-Za-z0-9.,'()]+( [A-Za-z0-9.,'()]+){0,6}", fullmatch=True),
    min_size=1,
    max_size=8,
).flatmap(
    lambda lines: st.lists(
        st.sampled_from(["\n", "\n\n"]), min_size=len(lines) - 1, max_size=len(lines) - 1
    ).map(lambda seps: "".join(line + sep for line, sep in zip(lines, [*seps, ""], strict=True)))
)


@settings(max_examples=500, deadline=None)
@given(spaced_text)
@example("One.\n\nTwo and\nthree.")
@example("One line")
def test_spaced_text_shortcuts_equal_the_general_split(text: str) -> None:
    assert _blocks_of_lines(text, spaced=True) == _blocks_of_lines(text)
    single = _single_line_blocks(text)
    if single is not None:
        assert single == [line for block in _blocks_of_lines(text) for line in block]
        assert single == [
            line for block in _blocks_of_lines(text) for line in _join_broken_lines(block)
        ]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_clean_text_and_html_to_text_never_raise(text: str) -> None:
    assert isinstance(clean_text(text), CleanedText)
    assert isinstance(html_to_text(text), str)
    assert isinstance(html_to_text(f"<p>{text}</p><div>{text}</div>"), str)


# --- canonical_url ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://Example.COM:80/Path/Page?b=2&a=1#frag", "http://example.com/Path/Page?a=1&b=2"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        (
            "https://news.example/story?utm_source=rss&utm_medium=feed&id=7&fbclid=abc&gclid=x",
            "https://news.example/story?id=7",
        ),
        (
            "https://news.example/s?mc_cid=1&mc_eid=2&igshid=3&ref=home&ocid=4&cmpid=5",
            ("https://news.example/s"),
        ),
        ("https://news.example/s?", "https://news.example/s"),
        ("https://news.example", "https://news.example/"),
        ("  https://news.example/a  ", "https://news.example/a"),
        ("https://bücher.example/Buch", "https://xn--bcher-kva.example/Buch"),
        ("https://[2001:DB8::1]:443/x", "https://[2001:db8::1]/x"),
        ("mailto:someone@example.com", "mailto:someone@example.com"),
        ("not a url", "not a url"),
        ("http://[::1/broken", "http://[::1/broken"),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


def test_canonical_url_keeps_query_encoding_and_repeated_keys() -> None:
    url = "https://example.com/search?q=a%20b&tag=z&tag=y"
    assert canonical_url(url) == "https://example.com/search?q=a%20b&tag=y&tag=z"


url_like = st.builds(
    lambda scheme, host, port, path, query, fragment: (
        f"{scheme}://{host}{port}{path}{query}{fragment}"
    ),
    st.sampled_from(["http", "HTTPS", "https", "ftp", "Http"]),
    st.one_of(st.from_regex(r"[A-Za-z0-9.-]{1,20}", fullmatch=True), st.text(max_size=10)),
    st.sampled_from(["", ":80", ":443", ":8080", ":", ":x"]),
    st.text(max_size=20).map(lambda s: "/" + s),
    st.lists(
        st.tuples(
            st.sampled_from(["utm_source", "id", "ref", "q", "A", "fbclid", "", "b"]),
            st.text(max_size=5),
        ),
        max_size=4,
    ).map(lambda pairs: "?" + "&".join(f"{k}={v}" for k, v in pairs) if pairs else ""),
    st.sampled_from(["", "#x", "#"]),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), url_like))
def test_canonical_url_is_idempotent_and_never_raises(url: str) -> None:
    once = canonical_url(url)
    assert isinstance(once, str)
    assert canonical_url(once) == once
    assert once == _canonical_url(url)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.from_regex(_PLAIN_URL_RE, fullmatch=True), url_like))
@example("http://bench/0/story/e0")
@example("https://a.example")
@example("https://a.example./x")
def test_canonical_url_shortcut_equals_the_general_path(url: str) -> None:
    assert canonical_url(url) == _canonical_url(url)


# --- dates --------------------------------------------------------------------------


def test_parse_printed_date_converts_zone_to_utc() -> None:
    assert parse_printed_date("May 21, 2025 10:47 IST") == datetime(2025, 5, 21, 5, 17, tzinfo=UTC)
    assert parse_printed_date("2025-07-10") == datetime(2025, 7, 10, tzinfo=UTC)
    assert parse_printed_date("yesterday") is None
    assert parse_printed_date("Feb 31, 2025") is None


# --- normalize_entry ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.text(), st.sampled_from(["", "Photo: AFP", " (Image credit: Getty Images)", "Pictures by"])
)
def test_a_line_ending_in_a_full_stop_is_never_a_caption(text: str, credit: str) -> None:
    # clean_text skips the caption search for such lines.
    assert _CAPTION_RE.search(f"{text}. {credit}.") is None
    assert _CAPTION_RE.search(f"{text}.") is None


title_words = st.lists(
    st.one_of(
        st.sampled_from(["Troop", "cost", "talks", "ΣΊΣΥΦΟΣ", "Straße", "STRASSE", "naïve", "İ"]),
        st.text(max_size=6),
    ),
    max_size=8,
).map(" ".join)


@settings(max_examples=500, deadline=None)
@given(title_words, title_words, st.sampled_from(["", " ", "... ", " -- ", "!"]))
@example("Troop cost talks", "troop-cost talks!", "")
@example("Straße", "STRASSE", "")
def test_title_repeat_check_equals_comparing_the_keys(title: str, text: str, tail: str) -> None:
    for paragraph in (text + tail, title + tail, tail + title, title + tail + text):
        assert _repeats_title(paragraph, _comparable(title)) == (
            _comparable(paragraph) == _comparable(title)
        )


def test_feed_title_wins_and_is_not_repeated_at_head_of_text() -> None:
    raw = RawEntry(
        guid="g1",
        url="https://News.example/a?utm_source=rss",
        title="Troop cost talks resume in Seoul",
        content=f"<h2>Troop cost talks resume in Seoul</h2><p>{STORY}</p><p>Advertisement</p>",
    )
    article = normalize_entry(raw)
    assert article.title == "Troop cost talks resume in Seoul"
    assert article.text == STORY
    assert article.guid == "g1"
    assert article.url == "https://News.example/a?utm_source=rss"
    assert article.canonical_url == "https://news.example/a"


def test_derived_headline_becomes_title_and_leaves_the_text() -> None:
    raw = RawEntry(
        guid=None,
        url=None,
        title=None,
        content=f"Troop cost talks resume in Seoul\n{STORY}",
        content_type="text",
    )
    article = normalize_entry(raw)
    assert article.title == "Troop cost talks resume in Seoul"
    assert article.text == STORY


def test_title_falls_back_to_a_shortened_first_sentence() -> None:
    raw = RawEntry(guid="g", url=None, title=None, content=STORY, content_type="text")
    article = normalize_entry(raw)
    assert article.title.endswith("...")
    assert STORY.startswith(article.title[:-3])
    assert len(article.title) <= 125
    assert article.text == STORY


def test_whole_html_document_goes_through_full_page_extraction() -> None:
    menu = "".join(f"<li><a href='/s{i}'>Section {i}</a></li>" for i in range(12))
    paragraphs = "".join(f"<p>{STORY} Paragraph {i} of the story.</p>" for i in range(6))
    page = (
        "<!DOCTYPE html><html><head><title>Troop cost talks</title></head><body>"
        f"<div class='menu'>{menu}</div><article><h1>Troop cost talks resume in Seoul</h1>"
        f"{paragraphs}</article></body></html>"
    )
    raw = RawEntry(guid="g", url="https://news.example/a", title=None, content=page)
    article = normalize_entry(raw)
    assert "Paragraph 5 of the story." in article.text
    assert "Section 3" not in article.text
    assert not article.text.startswith("Troop cost talks")


def test_guid_falls_back_to_canonical_url_then_stable_hash() -> None:
    with_url = RawEntry(guid=None, url="https://Example.com/a#top", title="T", content=STORY)
    assert normalize_entry(with_url).guid == "https://example.com/a"

    without = RawEntry(guid=None, url=None, title="T", content=STORY)
    other = RawEntry(guid=None, url=None, title="T", content=STORY_2)
    assert normalize_entry(without).guid == normalize_entry(without).guid
    assert normalize_entry(without).guid != normalize_entry(other).guid
    assert normalize_entry(without).guid.startswith("sha256:")


def test_feed_metadata_wins_over_derived_and_derived_fills_gaps() -> None:
    published = datetime(2025, 1, 1, tzinfo=UTC)
    raw = RawEntry(
        guid="g",
        url=None,
        title="T",
        content=f"By Jane Doe | Updated: May 21, 2025 10:47 IST\n\nVia Example Post\n\n{STORY}",
        content_type="text",
        published=published,
        source="Feed Outlet",
        language="en",
    )
    article = normalize_entry(raw)
    assert article.source == "Feed Outlet"
    assert article.author == "Jane Doe"
    assert article.published_at == published
    assert article.language == "en"
    assert article.text == STORY

    no_date = normalize_entry(RawEntry(**{**_fields(raw), "published": None, "source": None}))
    assert no_date.published_at == datetime(2025, 5, 21, 5, 17, tzinfo=UTC)
    assert no_date.source == "Example Post"


def _fields(raw: RawEntry) -> dict[str, Any]:
    return {name: getattr(raw, name) for name in RawEntry.__slots__}


def test_normalize_entry_is_fast_for_feed_summaries() -> None:
    raw = RawEntry(
        guid="g",
        url="https://example.com/story?utm_source=rss",
        title="Troop cost talks resume in Seoul",
        content=f"<p>{STORY}</p><p>{STORY_2} <a href='/x'>More</a></p>",
    )
    normalize_entry(raw)
    runs = 300
    started = time.perf_counter()
    for _ in range(runs):
        normalize_entry(raw)
    per_entry_ms = (time.perf_counter() - started) * 1000 / runs
    # Budget is ~0.3 ms on one core; allow slack for slow CI machines.
    assert per_entry_ms < 1.5


def test_normalize_module_imports_no_celery_http_or_database() -> None:
    code = (
        "import sys, tasks.normalize; "
        "bad = [m for m in ('celery', 'httpx', 'sqlmodel', 'sqlalchemy', 'trafilatura') "
        "if m in sys.modules]; print(','.join(bad))"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


# --- the seed corpus ----------------------------------------------------------------


def _seed(prefix: str) -> tuple[str, str]:
    (path,) = SEEDS_DIR.glob(f"{prefix}_*.txt")
    return path.name, path.read_text("utf-8")


def _normalize_seed(prefix: str) -> tuple[str, str, RawEntry]:
    name, content = _seed(prefix)
    raw = RawEntry(guid=f"seeds/{name}", url=None, title=None, content=content, content_type="text")
    return name, content, raw


def _shingles(text: str, size: int = 4) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + size]) for i in range(max(1, len(words) - size + 1))}


def _jaccard(a: str, b: str) -> float:
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / len(sa | sb)


SEED_EXPECTATIONS = {
    "000": {
        "keeps": [
            "The highest-ranking military officer of the US visited Seoul",
            'Trump said South Korea "went crazy" when he demanded',
            "Sergei Shoigu, met with Kim in Pyongyang to discuss additional personnel deployment",
        ],
        "drops": ["MENAFN", "Live Mint", "date 2025"],
    },
    "001": {
        "keeps": [
            "The top military officers of South Korea and the United States vowed",
            "Adm. Kim Myung-soo, chairman of the Joint Chiefs of Staff, and his US counterpart",
            "in return for deploying troops in support of Moscow's war against Ukraine.",
        ],
        "drops": [
            "Try Our AI Features",
            "Daily8",
            "Comments",
            "Related Articles",
            "Korea Herald",
            "4 hours ago",
            "Russia's security chief meets Kim Jong-un",
            "Shoigu",
            "extremely hard",
            "What awaits President Lee",
            "(Yonhap)",
        ],
    },
    "002": {
        "keeps": [
            "The top military officers of South Korea and the US vowed",
            "Yonhap news agency reported",
            "took place in international waters south of the southern resort island of Jeju.",
        ],
        "drops": [
            "City",
            "Epaper",
            "By IANS",
            "Updated:",
            "Open in App",
            "Disclaimer",
            "auto-published",
            "Related Stories",
            "Realted",
            "PM Modi",
            "Aurangabad",
            "the ...",
            "Seoul, May 21",
        ],
    },
    "003": {
        "keeps": [
            "Japan in response to what he described as an 'unprecedented' military build-up by "
            "North Korea and China.",
            "beyond the Korean peninsula - a move that could test",
            "'The DPRK [North Korea] and China are undergoing an unprecedented military build-up",
            "reaffirming efforts to work towards the complete denuclearisation of North Korea.",
        ],
        "drops": [
            "Advertisement",
            "Hashtags",
            "Try Our AI Features",
            "Comments",
            "Related Articles",
            "Photo: AFP",
            "South China Morning Post",
            "Hong Kong should ban deepfake porn",
            "Mahathir",
            "close encounter between warplanes",
        ],
    },
    "004": {
        "keeps": [
            "Mark Esper, the US defence secretary, has called on South Korea to pay more",
            'Gen Milley called the US-Japan alliance "rock solid".',
            "Speaking to reporters en route to Seoul on Thursday",
            'wartime "comfort women", which was renounced by Mr Moon within months.',
        ],
        "drops": [
            "Via Financial Times",
            "READ ALSO",
            "ECB to review",
            "Conte threatens",
            "Follow Demetri",
            "@dimi",
            "Twitter",
        ],
    },
}


@pytest.mark.parametrize("prefix", sorted(SEED_EXPECTATIONS))
def test_seed_keeps_story_and_drops_boilerplate(prefix: str) -> None:
    name, _, raw = _normalize_seed(prefix)
    article = normalize_entry(raw)
    assert article.guid == f"seeds/{name}"
    for sentence in SEED_EXPECTATIONS[prefix]["keeps"]:
        assert sentence in article.text, sentence
    for junk in SEED_EXPECTATIONS[prefix]["drops"]:
        assert junk not in article.text, junk
    assert article.title
    assert not article.text.startswith(article.title)
    assert "  " not in article.text and "\n\n\n" not in article.text


def test_seed_metadata_is_kept_as_fields() -> None:
    seed_000 = normalize_entry(_normalize_seed("000")[2])
    assert seed_000.source == "Live Mint"
    assert seed_000.dateline == "2025-07-10"
    assert seed_000.published_at == datetime(2025, 7, 10, tzinfo=UTC)
    assert seed_000.text.startswith("The highest-ranking military officer")

    seed_001 = normalize_entry(_normalize_seed("001")[2])
    assert seed_001.title == (
        "Military chiefs of S. Korea, US vow to strengthen trilateral security cooperation "
        "with Japan"
    )
    assert seed_001.source == "Yonhap"

    seed_002 = normalize_entry(_normalize_seed("002")[2])
    assert seed_002.title == (
        "Military chiefs of South Korea, US vow to strengthen trilateral security "
        "cooperation with Japan"
    )
    assert seed_002.author == "IANS"
    assert seed_002.dateline == "Seoul, May 21"
    assert seed_002.published_at == datetime(2025, 5, 21, 5, 17, tzinfo=UTC)
    assert seed_002.text.startswith("The top military officers of South Korea")

    seed_003 = normalize_entry(_normalize_seed("003")[2])
    assert seed_003.title.startswith("US calls for closer South Korea, Japan defence ties")

    seed_004 = normalize_entry(_normalize_seed("004")[2])
    assert seed_004.source == "Financial Times"
    assert seed_004.author == "Demetri Sevastopulo, Edward White and Robin Harding"


def test_seed_texts_are_already_clean() -> None:
    for prefix in SEED_EXPECTATIONS:
        text = normalize_entry(_normalize_seed(prefix)[2]).text
        assert clean_text(text).text == text


def test_syndicated_seed_pair_is_near_duplicate_and_others_are_not() -> None:
    texts = {p: normalize_entry(_normalize_seed(p)[2]).text for p in SEED_EXPECTATIONS}
    paragraphs_001 = texts["001"].split("\n\n")
    paragraphs_002 = texts["002"].split("\n\n")
    # The wire story's paragraphs match one for one, apart from light edits.
    assert len(paragraphs_001) == 6 and len(paragraphs_002) == 8
    for p1, p2 in zip(paragraphs_001, paragraphs_002, strict=False):
        assert _jaccard(p1, p2) >= 0.5, (p1, p2)
    assert paragraphs_001[2] == paragraphs_002[2]
    assert paragraphs_001[5] == paragraphs_002[5]

    pair = _jaccard(texts["001"], texts["002"])
    assert pair >= 0.5
    for a, b in combinations(sorted(texts), 2):
        if {a, b} != {"001", "002"}:
            assert _jaccard(texts[a], texts[b]) < 0.1, (a, b)


def test_plain_text_in_an_html_field_keeps_its_paragraphs() -> None:
    raw = RawEntry(
        guid="p1",
        url="https://news.example/p1",
        title="Talks",
        content="READ ALSO: Markets rally\n\nWashington and Seoul resumed talks &amp; more.\n\nA second paragraph.",
        content_type="html",
    )
    article = normalize_entry(raw)
    assert article.text == "Washington and Seoul resumed talks & more.\n\nA second paragraph."
