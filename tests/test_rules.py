"""Tests for compiled matching of many rules (tasks.rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.models import Match
from tasks.query import (
    And,
    Not,
    Or,
    Query,
    Term,
    blank_separators,
    fold_term,
    fold_text,
    fold_text_and_blanked,
    format_query,
    parse_query,
    word_span,
)
from tasks.rules import (
    ELLIPSIS,
    SNIPPET_CHARS,
    CompiledRules,
    RuleError,
    RuleSpec,
    _Words,
    make_snippet,
)

SEEDS = Path(__file__).resolve().parent.parent / "seeds"


def rule_ids(rules: CompiledRules, text: str, topics: tuple[str, ...] = ()) -> list[int]:
    return [m.rule_id for m in rules.match("", text, topics)]


def test_adjacent_terms_sharing_a_space_are_both_found() -> None:
    # " a " and " b " overlap on the space between them in " a b ".
    rules = CompiledRules([RuleSpec(1, "a"), RuleSpec(2, "b"), RuleSpec(3, "a b")])
    assert rules.match("", "a b", ()) == [
        Match(1, ("a",), "a b"),
        Match(2, ("b",), "a b"),
        Match(3, ("a", "b"), "a b"),
    ]
    rules = CompiledRules([RuleSpec(1, "a AND a")])
    assert rule_ids(rules, "a a a") == [1]


def test_word_boundaries_and_folding() -> None:
    rules = CompiledRules(
        [RuleSpec(1, "Kim"), RuleSpec(2, "cost-sharing"), RuleSpec(3, '"US troops"')]
    )
    assert rule_ids(rules, "Kimchi for cost sharing") == [2]
    assert rule_ids(rules, "Kim's talks on cost–sharing for U.S. troops") == [1, 2, 3]
    assert rule_ids(rules, "the costsharing of USB troops") == []


def test_not_only_rules_match_without_any_present_term() -> None:
    rules = CompiledRules([RuleSpec(1, "NOT kimchi"), RuleSpec(2, "kim OR NOT seoul")])
    assert rule_ids(rules, "nothing relevant") == [1, 2]
    assert rule_ids(rules, "kimchi in Seoul") == []
    assert rule_ids(rules, "Kim in Seoul eats kimchi") == [2]


def test_matched_terms_are_query_spellings_in_text_order() -> None:
    rules = CompiledRules([RuleSpec(7, 'Seoul OR "Cost-Sharing" OR tokyo NOT kimchi')])
    [match] = rules.match("", "Talks on cost sharing moved from Tokyo to Seoul.", ())
    assert match.rule_id == 7
    assert match.matched == ("Cost-Sharing", "tokyo", "Seoul")


def test_matched_terms_are_ordered_by_start_not_end() -> None:
    rules = CompiledRules([RuleSpec(1, 'jong OR "kim jong un"')])
    [match] = rules.match("", "Leader Kim Jong Un spoke", ())
    assert match.matched == ("kim jong un", "jong")


def test_negated_terms_are_not_reported_as_matched() -> None:
    rules = CompiledRules([RuleSpec(1, "kim OR NOT (seoul AND tokyo)")])
    [match] = rules.match("", "Seoul only", ())
    assert match.matched == ()


def test_topic_filter() -> None:
    rules = CompiledRules(
        [
            RuleSpec(1, "troops", frozenset({"troop-cost-sharing"})),
            RuleSpec(2, "troops", frozenset({"trilateral-drills", "usfk-posture"})),
            RuleSpec(3, "troops"),
        ]
    )
    assert rule_ids(rules, "US troops") == [3]
    assert rule_ids(rules, "US troops", ("troop-cost-sharing",)) == [1, 3]
    assert rule_ids(rules, "US troops", ("usfk-posture", "x")) == [2, 3]


def test_terms_in_the_title_count() -> None:
    rules = CompiledRules([RuleSpec(1, "trilateral")])
    [match] = rules.match("Trilateral drills", "The navies met.", ())
    assert match.matched == ("trilateral",)
    assert match.snippet == "Trilateral drills"


def test_bad_rules_are_refused_with_their_id() -> None:
    with pytest.raises(RuleError, match=r"rule 5: query 'kim AND': column 8"):
        CompiledRules([RuleSpec(1, "kim"), RuleSpec(5, "kim AND")])
    with pytest.raises(RuleError, match="rule 1: duplicate rule id"):
        CompiledRules([RuleSpec(1, "kim"), RuleSpec(1, "seoul")])


def test_empty_rule_set() -> None:
    rules = CompiledRules([])
    assert len(rules) == 0
    assert rules.match("title", "text", ()) == []


def test_terms_are_shared_between_rules() -> None:
    rules = CompiledRules([RuleSpec(1, "cost-sharing seoul"), RuleSpec(2, '"cost sharing" OR x')])
    assert rules.term_count == 3


# --- snippets ----------------------------------------------------------------------------


def test_snippet_surrounds_first_match_on_word_boundaries() -> None:
    text = (SEEDS / "004_a4c9f0348441b866.txt").read_text(encoding="utf-8")
    rules = CompiledRules([RuleSpec(1, '"burden sharing"')])
    [match] = rules.match("", text, ())
    snippet = match.snippet
    assert "burden sharing" in snippet
    assert snippet.startswith(ELLIPSIS) and snippet.endswith(ELLIPSIS)
    assert SNIPPET_CHARS - 30 <= len(snippet) <= SNIPPET_CHARS + 2
    inner = snippet.strip(ELLIPSIS)
    assert inner in " ".join(text.split())  # whole words from the original text
    # Cut at word boundaries: the first and last words are whole words of the text.
    words = set(re.findall(r"\S+", text))
    assert inner.split()[0] in words and inner.split()[-1] in words


def test_snippet_finds_folded_forms_in_original_text() -> None:
    rules = CompiledRules([RuleSpec(1, "US"), RuleSpec(2, '"cost sharing"')])
    text = "Start. " + "filler " * 40 + "the U.S. asked for cost–sharing talks. " + "end " * 40
    first, second = rules.match("", text, ())
    assert "the U.S. asked" in first.snippet
    assert "cost–sharing talks" in second.snippet


def test_snippet_of_short_text_has_no_ellipsis() -> None:
    rules = CompiledRules([RuleSpec(1, "kim")])
    [match] = rules.match("", "Kim met\nCaine.", ())
    assert match.snippet == "Kim met Caine."


def test_snippet_for_not_only_rule_is_text_start() -> None:
    rules = CompiledRules([RuleSpec(1, "-kimchi")])
    [match] = rules.match("", "word " * 100, ())
    assert match.snippet.startswith("word word")
    assert match.snippet.endswith(ELLIPSIS)


# --- agreement with a naive reference ------------------------------------------------------

VOCAB = ["kim", "kimchi", "seoul", "cost", "sharing", "us", "troops", "a", "b", "korea"]
SEPARATORS = [" ", " ", "-", ", ", "–", "'s ", ". ", "\n", "  "]


def reference_present(key: str, text: str) -> bool:
    """A term is present if its words appear as whole words, separated by anything else."""
    words = key.split()
    pattern = r"(?<![^\W_])" + r"[\W_]+".join(map(re.escape, words)) + r"(?![^\W_])"
    return re.search(pattern, text, re.IGNORECASE) is not None


def reference_eval(query: Query, text: str) -> bool:
    if isinstance(query, Term):
        return reference_present(query.key, text)
    if isinstance(query, Not):
        return not reference_eval(query.operand, text)
    if isinstance(query, And):
        return all(reference_eval(op, text) for op in query.operands)
    return any(reference_eval(op, text) for op in query.operands)


TERMS = st.one_of(
    st.sampled_from(VOCAB),
    st.lists(st.sampled_from(VOCAB), min_size=2, max_size=3).map(" ".join),
    st.sampled_from(["cost-sharing", "Kim's", "U-S", "KOREA"]),
).map(Term)

RULE_QUERIES: st.SearchStrategy[Query] = st.recursive(
    TERMS,
    lambda children: st.one_of(
        children.map(Not),
        st.lists(children, min_size=2, max_size=3).map(lambda ops: And(tuple(ops))),
        st.lists(children, min_size=2, max_size=3).map(lambda ops: Or(tuple(ops))),
    ),
    max_leaves=6,
)

TEXTS = st.lists(
    st.tuples(st.sampled_from([*VOCAB, "kimchis", "usa", "troop"]), st.sampled_from(SEPARATORS)),
    max_size=25,
).map(lambda parts: "".join(word + sep for word, sep in parts))


@given(st.lists(RULE_QUERIES, min_size=1, max_size=8), st.lists(TEXTS, min_size=1, max_size=4))
@settings(max_examples=300, deadline=None)
def test_compiled_rules_agree_with_reference(queries: list[Query], texts: list[str]) -> None:
    specs = [RuleSpec(i, format_query(q)) for i, q in enumerate(queries)]
    rules = CompiledRules(specs)
    for text in texts:
        got = {m.rule_id: m for m in rules.match("", text, ())}
        expected = {i for i, q in enumerate(queries) if reference_eval(q, text)}
        assert set(got) == expected, text
        for rule_id, match in got.items():
            parsed = parse_query(specs[rule_id].query)
            for spelling in match.matched:
                assert reference_present(fold_text(spelling).strip(), text)
                assert spelling in format_query(parsed) or f'"{spelling}"' in format_query(parsed)


# --- batched snippets equal one make_snippet call per match --------------------------------

SNIPPET_TEXTS = st.lists(
    st.tuples(
        st.sampled_from([*VOCAB, "U.S.", "u.s.a", "U.S.Army", "Kim's", "ﬁne", "Straße", "é"]),
        st.sampled_from([*SEPARATORS, " " * 30, ".\n\n"]),
    ),
    max_size=60,
).map(lambda parts: "".join(word + sep for word, sep in parts))


def single_snippet(title: str, text: str, spelling: str | None) -> str:
    """The snippet as computed for one match on its own."""
    if spelling is None:
        return make_snippet(text if text.strip() else title, None)
    key = fold_term(spelling)
    for source in (text, title):
        folded = fold_text(source)
        offset = folded.find(f" {key} ")
        if offset >= 0:
            return make_snippet(source, key, folded, offset)
    return make_snippet(title, key)  # a phrase across title and text: not located


@given(
    st.lists(RULE_QUERIES, min_size=1, max_size=8),
    st.lists(st.tuples(SNIPPET_TEXTS, SNIPPET_TEXTS), min_size=1, max_size=3),
)
@settings(max_examples=300, deadline=None)
def test_snippets_equal_one_make_snippet_per_match(
    queries: list[Query], articles: list[tuple[str, str]]
) -> None:
    rules = CompiledRules([RuleSpec(i, format_query(q)) for i, q in enumerate(queries)])
    for title, text in articles:
        for match in rules.match(title, text, ()):
            lead = match.matched[0] if match.matched else None
            assert match.snippet == single_snippet(title, text, lead), (title, text, match)


@given(SNIPPET_TEXTS, st.lists(st.tuples(st.integers(0, 70), st.integers(1, 3)), max_size=12))
@settings(max_examples=300, deadline=None)
def test_words_walk_equals_word_span(text: str, asks: list[tuple[int, int]]) -> None:
    blanked = blank_separators(text)
    words = _Words(blanked)
    for first, count in sorted(asks):
        assert words.span(first, count) == word_span(text, first, count, blanked)


@given(st.one_of(st.text(), st.text(st.characters(max_codepoint=127)), SNIPPET_TEXTS))
@settings(max_examples=300, deadline=None)
def test_fold_text_and_blanked_equals_separate_calls(text: str) -> None:
    folded, blanked = fold_text_and_blanked(text)
    assert folded == fold_text(text)
    assert blanked == (blank_separators(text) if text.isascii() else None)
