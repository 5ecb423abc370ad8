"""Tests for the keyword query language (tasks.query)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.query import (
    MAX_DEPTH,
    And,
    Not,
    Or,
    Query,
    QuerySyntaxError,
    Term,
    evaluate,
    fold_text,
    format_query,
    match_query,
    parse_query,
    query_terms,
    word_span,
)


def matches(query: str, text: str) -> bool:
    return match_query(parse_query(query), text)[0]


# --- folding and word boundaries --------------------------------------------------------


def test_fold_text_pads_and_collapses_separators() -> None:
    assert fold_text("  Cost–Sharing,  talks!! ") == " cost sharing talks "
    assert fold_text("") == " "
    assert fold_text("?!") == " "
    assert fold_text("a:_b") == " a b "  # a mixed run is still one separator


def test_fold_text_compatibility_forms_and_case() -> None:
    assert fold_text("ＫＩＭ") == " kim "  # full-width letters (NFKC)
    assert fold_text("STRASSE straße") == " strasse strasse "  # casefold, not lower
    assert fold_text("ﬁnance") == " finance "


def test_fold_text_dotted_acronyms_collapse_but_initials_do_not() -> None:
    assert fold_text("the U.S. and the U.S.A") == " the us and the usa "
    assert fold_text("U.S.-Japan ties") == " us japan ties "
    assert fold_text("S. Korea") == " s korea "
    assert fold_text("bbc.co.uk") == " bbc co uk "


def test_word_boundaries_kim_vs_kimchi() -> None:
    assert matches("Kim", "Admiral Kim Myung-soo said")
    assert not matches("Kim", "A plate of Kimchi")
    assert not matches("kimchi", "Kim said")
    assert matches("Kim", "Kim's office said")  # possessive: apostrophe is a separator
    assert matches("Kim", "(KIM)")


def test_hyphen_and_dash_variants_are_folded() -> None:
    for text in ("cost sharing", "cost-sharing", "cost–sharing", "cost—sharing", "COST SHARING"):
        assert matches("cost-sharing", text), text
        assert matches('"cost sharing"', text), text
    assert not matches("cost-sharing", "costsharing")
    assert not matches("cost-sharing", "cost of sharing")


def test_us_matches_dotted_and_plain_forms() -> None:
    assert matches("U.S.", "talks with the US on troops")
    assert matches("US", "talks with the U.S. on troops")
    assert not matches("US", "a USB stick")


def test_digits_with_separators() -> None:
    assert matches("28,500", "hosting 28,500 US troops")
    assert matches("28,500", "hosting 28 500 US troops")
    assert not matches("28,500", "hosting 128,500 troops")


def test_word_span_maps_folded_words_back_to_the_original() -> None:
    text = "The U.S.-Japan cost–sharing deal (e.g. Kim's)"
    assert fold_text(text) == " the us japan cost sharing deal eg kim s "
    spans = [word_span(text, k, 1) for k in range(8)]
    assert [text[a:b] for a, b in filter(None, spans)] == [
        "The",
        "U.S.",
        "Japan",
        "cost",
        "sharing",
        "deal",
        "e.g.",
        "Kim",
    ]
    span = word_span(text, 3, 2)
    assert span is not None and text[span[0] : span[1]] == "cost–sharing"
    assert word_span(text, 9, 1) is None
    assert word_span(text, 8, 2) is None


# --- grammar -----------------------------------------------------------------------------


def test_phrase_requires_adjacent_words_in_order() -> None:
    assert matches('"troop cost sharing"', "talks on troop cost-sharing")
    assert not matches('"troop cost sharing"', "cost sharing for a troop")


def test_implicit_and() -> None:
    assert parse_query("kim seoul") == And((Term("kim"), Term("seoul")))
    assert matches("kim seoul", "Kim in Seoul")
    assert not matches("kim seoul", "Kim in Tokyo")


def test_operators_are_case_insensitive_and_quoting_makes_them_words() -> None:
    assert parse_query("kim and seoul") == parse_query("Kim AND Seoul".lower())
    assert parse_query("a or b") == Or((Term("a"), Term("b")))
    assert parse_query('"and"') == Term("and")
    assert parse_query('war "and" peace') == And((Term("war"), Term("and"), Term("peace")))


def test_precedence_not_over_and_over_or() -> None:
    assert parse_query("a OR b AND c") == Or((Term("a"), And((Term("b"), Term("c")))))
    assert parse_query("NOT a AND b") == And((Not(Term("a")), Term("b")))
    assert parse_query("a b OR NOT c") == Or((And((Term("a"), Term("b"))), Not(Term("c"))))


def test_parentheses_group() -> None:
    assert parse_query("(a OR b) c") == And((Or((Term("a"), Term("b"))), Term("c")))
    assert matches("(tariffs OR levies) Korea", "levies on Korea")
    assert not matches("(tariffs OR levies) Korea", "levies on Japan")


def test_not_and_leading_minus() -> None:
    assert parse_query("-kimchi") == Not(Term("kimchi"))
    assert parse_query('kim -"kim jong un"') == And((Term("kim"), Not(Term("kim jong un"))))
    assert parse_query("-(a OR b)") == Not(Or((Term("a"), Term("b"))))
    assert parse_query("cost-sharing") == Term("cost-sharing")  # inner hyphen: a word
    assert matches("kim NOT kimchi", "Kim spoke")
    assert not matches("kim NOT kimchi", "Kim ate kimchi")
    assert matches("NOT kimchi", "nothing here")


def test_match_query_reports_positive_terms_in_text_order() -> None:
    query = parse_query('Seoul OR "cost sharing" OR Tokyo -kimchi')
    assert match_query(query, "Cost-sharing talks in Seoul") == (True, ("cost sharing", "Seoul"))
    assert match_query(query, "nothing") == (False, ())


def test_query_terms_are_folded() -> None:
    assert query_terms(parse_query('U.S. "Cost-Sharing" -Kimchi')) == {
        "us",
        "cost sharing",
        "kimchi",
    }


def test_evaluate_accepts_set_or_predicate() -> None:
    query = parse_query("a (b OR NOT c)")
    assert evaluate(query, {"a", "b", "c"})
    assert not evaluate(query, {"a", "c"})
    assert evaluate(query, lambda key: key == "a")


def test_format_is_canonical() -> None:
    assert format_query(parse_query("a b OR -c")) == "a AND b OR NOT c"
    assert format_query(parse_query("(a b) c")) == "(a AND b) AND c"
    assert (
        format_query(parse_query('"and" "kim jong un" -x')) == '"and" AND "kim jong un" AND NOT x'
    )


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("", 1, "empty query"),
        ("   ", 1, "empty query"),
        ("(kim seoul", 11, "missing ')' to close the '(' at column 1"),
        ("kim) seoul", 4, "unbalanced ')'"),
        ("kim AND", 8, "after 'AND', found end of query"),
        ("OR kim", 1, "found 'OR'"),
        ("kim OR OR seoul", 8, "after 'OR', found 'OR'"),
        ("kim NOT", 8, "after 'NOT'"),
        ('kim "cost sharing', 5, "unterminated quote"),
        ("kim ()", 6, "empty parentheses"),
        ('kim ""', 5, "inside the quotes"),
        ("kim !!!", 5, "no letters or digits"),
        ("a - b", 3, "no letters or digits"),
    ],
)
def test_malformed_queries_say_where(text: str, column: int, fragment: str) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        parse_query(text)
    assert info.value.column == column
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"column {column}: ")
    assert "\n" not in str(info.value)


def test_deep_nesting_is_refused_not_crashing() -> None:
    with pytest.raises(QuerySyntaxError, match="nesting deeper"):
        parse_query("(" * 5000 + "a" + ")" * 5000)
    with pytest.raises(QuerySyntaxError, match="nesting deeper"):
        parse_query("NOT " * 5000 + "a")
    deep = "(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH
    assert parse_query(deep) == Term("a")


def test_query_syntax_error_is_a_value_error() -> None:
    assert issubclass(QuerySyntaxError, ValueError)


def test_invalid_asts_are_refused() -> None:
    with pytest.raises(ValueError):
        Term('a"b')
    with pytest.raises(ValueError):
        Term("...")
    with pytest.raises(ValueError):
        Term(" a")
    with pytest.raises(ValueError):
        And((Term("a"),))


# --- properties --------------------------------------------------------------------------


def _valid_term(text: str) -> bool:
    try:
        Term(text)
    except ValueError:
        return False
    return True


TERM_TEXT = (
    st.one_of(
        st.sampled_from(["kim", "AND", "or", "Not", "-x", "cost-sharing", "U.S.", "a(b", "x y"]),
        st.text(st.characters(exclude_characters='"'), min_size=1, max_size=10),
    )
    .map(str.strip)
    .filter(_valid_term)
)

QUERIES: st.SearchStrategy[Query] = st.recursive(
    TERM_TEXT.map(Term),
    lambda children: st.one_of(
        children.map(Not),
        st.lists(children, min_size=2, max_size=4).map(lambda ops: And(tuple(ops))),
        st.lists(children, min_size=2, max_size=4).map(lambda ops: Or(tuple(ops))),
    ),
    max_leaves=12,
)

QUERYISH_TEXT = st.one_of(
    st.text(),
    st.lists(
        st.sampled_from(
            ["a", "Kim", " ", "AND", "or", "not", "-", "(", ")", '"', "x y", "-b", "!", "é", "\n"]
        ),
        max_size=20,
    ).map("".join),
)


@given(QUERIES)
@settings(max_examples=400)
def test_format_then_parse_round_trips(query: Query) -> None:
    assert parse_query(format_query(query)) == query


@given(QUERYISH_TEXT)
@settings(max_examples=600)
def test_parse_raises_only_query_syntax_error(text: str) -> None:
    try:
        query = parse_query(text)
    except QuerySyntaxError as exc:
        assert 0 <= exc.position <= len(text)
    else:
        assert parse_query(format_query(query)) == query


@given(st.text())
@settings(max_examples=1000)
def test_fold_text_is_idempotent_and_padded(text: str) -> None:
    folded = fold_text(text)
    assert fold_text(folded) == folded
    assert folded.startswith(" ") and folded.endswith(" ")
    assert "  " not in folded
