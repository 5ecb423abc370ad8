"""Tests for compiled matching of many rules (tasks.rules)."""

from __future__ import annotations

import pickle
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
    evaluate,
    fold_term,
    fold_text,
    fold_text_and_blanked,
    format_query,
    parse_query,
    positive_terms,
    query_terms,
    word_span,
)
from tasks.rules import (
    _ASCII_CONTROL_SPACES,
    ELLIPSIS,
    SNIPPET_CHARS,
    CompiledRules,
    RuleError,
    RuleSpec,
    _add_snippets,
    _blanked,
    _fold,
    _lowered_words,
    _required,
    _residual,
    _spaced_span,
    _Window,
    _Words,
    fold_article,
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


def test_snippet_of_a_phrase_first_written_across_punctuation() -> None:
    rules = CompiledRules([RuleSpec(1, '"kim seoul"')])
    text = "Kim, Seoul said. " + "filler " * 40 + "Then Kim Seoul again. " + "end " * 40
    [match] = rules.match("", text, ())
    assert match.snippet.startswith("Kim, Seoul said.")


def test_snippet_of_an_acronym_written_before_the_plain_word() -> None:
    rules = CompiledRules([RuleSpec(1, "US")])
    text = "Start. " + "filler " * 40 + "The U.S. said no. " + "filler " * 40 + "tell us more"
    [match] = rules.match("", text, ())
    assert "The U.S. said no." in match.snippet
    assert "tell us" not in match.snippet


def test_snippet_of_a_word_that_folds_to_other_letters() -> None:
    # "Straße" folds to "strasse": the first occurrence, though not written that way.
    rules = CompiledRules([RuleSpec(1, "strasse")])
    text = "Straße opens. " + "filler " * 40 + "Strasse closes. " + "end " * 40
    [match] = rules.match("", text, ())
    assert match.snippet.startswith("Straße opens.")


def test_snippet_collapses_runs_of_spaces() -> None:
    rules = CompiledRules([RuleSpec(1, "kim")])
    assert rules.match("", "Kim  met   Caine.", ())[0].snippet == "Kim met Caine."


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


def long_texts(words: list[str], gaps: list[str]) -> st.SearchStrategy[str]:
    """Texts longer than a snippet (so that where it is cut shows) of a few words, so that
    terms recur."""
    return st.lists(
        st.tuples(st.sampled_from(words), st.sampled_from(gaps)), min_size=50, max_size=150
    ).map(lambda parts: "".join(word + gap for word, gap in parts))


# As articles come (`tasks.normalize`): single spaces, punctuation, paragraph breaks; then
# a few other kinds of whitespace or non-ASCII words, so that each shows on its own.
PLAIN_GAPS = [" ", " ", " ", ", ", ". ", "-", "\n\n"]
OTHER_GAPS = ["  ", "\n", "\n\n\n", " \n\n", "\n\n ", "\t", "\r\n", "\x1c", "\xa0"]
LONG_WORDS = ["kim", "Kim", "seoul", "cost", "sharing", "us", "U.S.", "e.g.", "a"]
NON_ASCII_WORDS = ["Korea’s", "Straße", "ﬁne"]
LONG_SNIPPET_TEXTS = st.tuples(
    st.lists(st.sampled_from(OTHER_GAPS), max_size=2, unique=True),
    st.lists(st.sampled_from(NON_ASCII_WORDS), max_size=2, unique=True),
).flatmap(lambda extra: long_texts([*LONG_WORDS, *extra[1]], [*PLAIN_GAPS, *extra[0]]))


@given(LONG_SNIPPET_TEXTS, st.booleans())
@settings(max_examples=200, deadline=None)
def test_snippets_of_all_terms_equal_make_snippet(text: str, folded_from_known: bool) -> None:
    # Every word and phrase of up to three words of the text as a lead term, at its
    # first occurrence.
    folded, blanked = _fold(text)
    words = folded.split()
    keys = sorted({" ".join(words[i : i + n]) for n in (1, 2, 3) for i in range(len(words))})
    located = [(folded.find(f" {key} "), term_id) for term_id, key in enumerate(keys)]
    snippets: dict[int, str] = {}
    _add_snippets(snippets, text, folded, blanked if folded_from_known else None, located, keys)
    for offset, term_id in located:
        assert snippets[term_id] == make_snippet(text, keys[term_id], folded, offset), keys[term_id]


@given(LONG_SNIPPET_TEXTS)
@settings(max_examples=200, deadline=None)
def test_spaced_span_is_the_first_occurrence_in_words(text: str) -> None:
    # Where the lowercase blanked text has the folded words, a term found in it is at the
    # words of its first folded occurrence, however many spaces apart they are there.
    folded, blanked = _fold(text)
    joiner = blank_separators("U.S.")[1]
    if blanked is None or joiner in blanked:
        blanked = _lowered_words(text, folded, _blanked(text))
        if blanked is None:
            return  # acronyms: a word folds to another
    words = folded.split()
    keys = {" ".join(words[i : i + n]) for n in (1, 2, 3) for i in range(len(words))}
    for key in keys:
        index = folded.count(" ", 0, folded.find(f" {key} ") + 1) - 1
        expected = word_span(text, index, key.count(" ") + 1)
        assert _spaced_span(f" {blanked} ", key, 0) == expected, key


def plain_window(text: str, start: int, end: int, width: int = SNIPPET_CHARS) -> str:
    """A snippet window as first written: whitespace always split and joined."""
    left, right = start, end
    room = width - (end - start)
    if room > 0:
        left = max(start - room // 2, 0)
        right = min(end + room - (start - left), len(text))
        left = max(left - (width - (right - left)), 0)
    if left > 0 and not text[left - 1].isspace():
        cut = text.find(" ", left, start)
        left = cut + 1 if cut >= 0 else start
    if right < len(text) and not text[right].isspace():
        cut = text.rfind(" ", end, right)
        right = cut if cut >= 0 else end
    prefix = ELLIPSIS if text[:left].strip() else ""
    suffix = ELLIPSIS if text[right:].strip() else ""
    return prefix + " ".join(text[left:right].split()) + suffix


@given(st.one_of(LONG_SNIPPET_TEXTS, st.text()), st.data())
@settings(max_examples=300, deadline=None)
def test_window_equals_splitting_and_joining_whitespace(text: str, data: st.DataObject) -> None:
    window = _Window(text)
    for _ in range(5):
        start = data.draw(st.integers(0, len(text)))
        end = data.draw(st.integers(start, min(start + 30, len(text))))
        assert window.around(start, end) == plain_window(text, start, end)


def test_ascii_control_spaces_are_all_other_ascii_whitespace() -> None:
    others = {chr(code) for code in range(128) if chr(code).isspace()} - {" ", "\n"}
    assert set(_ASCII_CONTROL_SPACES) == others


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
    assert blanked == (blank_separators(text).lower() if text.isascii() else None)


# --- the compiled matcher equals each rule evaluated on its own ----------------------------

SLUGS = ["x", "y"]
RICH_WORDS = [
    *VOCAB,
    "Kim",
    "kimchi",
    "U.S.",
    "u.s.a",
    "e.g.",
    "Korea’s",
    "£28",
    "™",
    "ⓐ",  # a separator that NFKC turns into a letter
    "Ⅰ",
    "ﬁne",
    "Straße",
    "é",
    "cost-sharing",
    "A.B",
]
RICH_SEPARATORS = [*SEPARATORS, ".\n\n", " — ", "   ", "\t", ": “", "” ", "…", "_"]
RICH_TEXTS = st.lists(
    st.tuples(st.sampled_from(RICH_WORDS), st.sampled_from(RICH_SEPARATORS)), max_size=40
).map(lambda parts: "".join(word + sep for word, sep in parts))


def recurring_words(words: list[str]) -> st.SearchStrategy[str]:
    """ASCII texts longer than a snippet (so that where it is cut shows) of a few words,
    so that terms recur, written with and without punctuation between them."""
    return st.lists(
        st.tuples(
            st.sampled_from(words),
            st.sampled_from([" ", " ", ", ", ". ", "-", "\n\n", "   "]),
        ),
        min_size=60,
        max_size=150,
    ).map(lambda parts: "".join(word + sep for word, sep in parts))


# ASCII text takes other paths (one pass for folding and word offsets, snippets by find),
# which acronyms ("U.S.") turn off for the whole text.
ASCII_TEXTS = st.one_of(
    recurring_words(["kim", "Kim", "seoul", "cost", "sharing", "us", "a"]),
    # "us" rarer than "U.S.": the first "us" is often an acronym far before a plain one.
    recurring_words(["kim", "seoul", "cost", "U.S.", "e.g.", "a", "kim", "U.S.", "us"]),
)
ARTICLE_TEXTS = st.one_of(ASCII_TEXTS, RICH_TEXTS)
RULE_SPECS = st.lists(
    st.tuples(
        st.one_of(
            RULE_QUERIES,
            # Terms starting at the same offset: ties in the matched order.
            st.permutations([Term("kim"), Term("kim seoul"), Term("kim seoul cost")]).map(
                lambda terms: Or(tuple(terms[:2]))
            ),
        ),
        st.frozensets(st.sampled_from(SLUGS)),
    ),
    min_size=1,
    max_size=10,
).map(lambda rules: [RuleSpec(i, format_query(q), t) for i, (q, t) in enumerate(rules)])


def reference_match(
    specs: list[RuleSpec], title: str, text: str, topics: frozenset[str]
) -> list[tuple[int, tuple[str, ...], str]]:
    """Every rule on its own: `evaluate` over the folded article, one snippet per match.

    Matched terms in order of first occurrence; two terms found at one offset in order
    of the ids `CompiledRules` gives terms (first seen, each rule's terms sorted).
    """
    whole = fold_text(f"{title}\n{text}")
    ids: dict[str, int] = {}
    for spec in specs:
        for key in sorted(query_terms(parse_query(spec.query))):
            ids.setdefault(key, len(ids))
    result = []
    for spec in specs:
        if spec.topics and spec.topics.isdisjoint(topics):
            continue
        query = parse_query(spec.query)
        first = {key: whole.find(f" {key} ") for key in query_terms(query)}
        if not evaluate(query, {key for key, at in first.items() if at >= 0}):
            continue
        found = sorted(
            (first[key], ids[key], spelling)
            for key, spelling in positive_terms(query).items()
            if first[key] >= 0
        )
        matched = tuple(spelling for _, _, spelling in found)
        snippet = single_snippet(title, text, matched[0] if matched else None)
        result.append((spec.id, matched, snippet))
    return result


@given(
    RULE_SPECS,
    st.lists(
        st.tuples(ARTICLE_TEXTS, ARTICLE_TEXTS, st.frozensets(st.sampled_from(SLUGS))),
        min_size=1,
        max_size=2,
    ),
)
@settings(max_examples=200, deadline=None)
def test_compiled_rules_equal_each_rule_on_its_own(
    specs: list[RuleSpec], articles: list[tuple[str, str, frozenset[str]]]
) -> None:
    rules = CompiledRules(specs)
    for title, text, topics in articles:
        got = [(m.rule_id, m.matched, m.snippet) for m in rules.match(title, text, topics)]
        assert got == reference_match(specs, title, text, topics), (title, text, topics)


RECURRING = ["us", "kim", "seoul", '"kim seoul"', '"cost sharing"', '"seoul us"', "a", '"e g"']


@given(ASCII_TEXTS, st.one_of(st.just(""), ASCII_TEXTS))
@settings(max_examples=200, deadline=None)
def test_recurring_terms_in_long_text_equal_each_rule_on_its_own(text: str, title: str) -> None:
    # Every term many times, plain, across punctuation and as acronyms: the first
    # occurrence, not just any, must give the snippet.
    specs = [RuleSpec(i, query) for i, query in enumerate(RECURRING)]
    got = [(m.rule_id, m.matched, m.snippet) for m in CompiledRules(specs).match(title, text)]
    assert got == reference_match(specs, title, text, frozenset())


# --- partial evaluation of a rule under known terms ------------------------------------------


def term_ids_of(query: Query) -> dict[str, int]:
    return {key: i for i, key in enumerate(sorted(query_terms(query)))}


@given(RULE_QUERIES, st.data())
@settings(max_examples=300, deadline=None)
def test_residual_and_required_agree_with_evaluation(query: Query, data: st.DataObject) -> None:
    # Under any terms fixed as present or absent, the residual predicate is the query's
    # value on every set of present terms agreeing with them, and the required terms are
    # present whenever the query holds.
    ids = term_ids_of(query)
    known = data.draw(st.dictionaries(st.sampled_from(sorted(ids.values())), st.booleans()))
    residual = _residual(query, ids, known)
    required = _required(query, ids, known)
    keys = sorted(ids)
    for mask in range(2 ** len(keys)):
        present = {key for bit, key in enumerate(keys) if mask >> bit & 1}
        p = {ids[key] for key in present}
        if any((term_id in p) != value for term_id, value in known.items()):
            continue
        expected = evaluate(query, present)
        got = residual if isinstance(residual, bool) else eval(residual, {}, {"p": p})
        assert got == expected, (residual, p)
        if expected:
            assert required <= p, (required, p)


def test_residual_simplifies_known_terms_away() -> None:
    query = parse_query('(kim OR seoul) "cost sharing" -tokyo')
    ids = term_ids_of(query)  # cost sharing 0, kim 1, seoul 2, tokyo 3
    assert _residual(query, ids, {1: True}) == "((0 in p) and (not (3 in p)))"
    assert _residual(query, ids, {1: False, 2: False}) is False
    assert _residual(query, ids, {0: True, 1: True, 3: False}) is True
    assert _required(query, ids, {}) == {0}
    assert _required(query, ids, {1: False}) == {0, 2}


def test_rules_with_several_positive_terms_report_the_present_ones_in_order() -> None:
    # Under each trigger term the other positive terms may or may not be present.
    rules = CompiledRules(
        [RuleSpec(1, "kim OR seoul OR tokyo OR osaka"), RuleSpec(2, "(kim OR seoul) tokyo")]
    )
    assert [m.matched for m in rules.match("", "Tokyo", ())] == [("tokyo",)]
    assert [m.matched for m in rules.match("", "Seoul and Kim", ())] == [("seoul", "kim")]
    assert [m.matched for m in rules.match("", "Osaka, Tokyo, Seoul", ())] == [
        ("osaka", "tokyo", "seoul"),
        ("tokyo", "seoul"),
    ]
    assert [m.matched for m in rules.match("", "Tokyo, Kim, Seoul", ())] == [
        ("tokyo", "kim", "seoul"),
        ("tokyo", "kim", "seoul"),
    ]


def test_terms_at_one_offset_are_ordered_by_term_id() -> None:
    # "kim" and "kim seoul" both start at "Kim"; ids: "kim" first unless a rule before
    # brought "kim seoul" in.
    rules = CompiledRules([RuleSpec(1, '"kim seoul" OR kim'), RuleSpec(2, 'kim OR "kim seoul"')])
    assert [m.matched for m in rules.match("", "Kim Seoul", ())] == [
        ("kim", "kim seoul"),
        ("kim", "kim seoul"),
    ]
    rules = CompiledRules([RuleSpec(1, '"kim seoul"'), RuleSpec(2, 'kim OR "kim seoul"')])
    assert rules.match("", "Kim Seoul", ())[1].matched == ("kim seoul", "kim")


def test_rules_triggered_by_several_present_terms_match_once() -> None:
    rules = CompiledRules([RuleSpec(1, "kim OR seoul OR tokyo"), RuleSpec(2, "(kim OR seoul) -x")])
    assert [m.rule_id for m in rules.match("Seoul", "Kim in Tokyo and Seoul", ())] == [1, 2]


@given(st.one_of(st.text(), RICH_TEXTS, SNIPPET_TEXTS), st.one_of(st.text(), RICH_TEXTS))
@settings(max_examples=500, deadline=None)
def test_fast_folding_equals_fold_text(text: str, title: str) -> None:
    folded, blanked = _fold(text)
    assert folded == fold_text(text)
    if text.isascii():
        assert blanked == blank_separators(text).lower()
    if blanked is not None:
        # Lowercase, the words of the text at its offsets, and the folded words.
        assert blanked == blanked.lower()
        spans = [w.span() for w in re.finditer(r"\S+", blank_separators(text))]
        assert [w.span() for w in re.finditer(r"\S+", blanked)] == spans
        joiner = blank_separators("U.S.")[1]
        assert f" {' '.join(blanked.replace(joiner, '').split())} ".replace("  ", " ") == folded
    assert _blanked(text) == blank_separators(text)
    article = fold_article(title, text)
    assert article.joined == fold_text(f"{title}\n{text}")
    assert article.joined[article.body_start :] == article.folded_text


# --- Match ---------------------------------------------------------------------------------


def test_match_with_a_deferred_snippet_is_plain_data() -> None:
    calls: list[int] = []

    def snippet() -> str:
        calls.append(1)
        return "around the term"

    match = Match(3, ("kim",), snippet)
    assert match.rule_id == 3 and match.matched == ("kim",)
    assert calls == []
    plain = Match(3, ("kim",), "around the term")
    assert match == plain and hash(match) == hash(plain)
    assert match != Match(3, ("kim",), "elsewhere")
    assert repr(match) == "Match(rule_id=3, matched=('kim',), snippet='around the term')"
    copy = pickle.loads(pickle.dumps(match))
    assert copy == plain and copy.snippet == "around the term"
    with pytest.raises(AttributeError):
        match.rule_id = 4  # type: ignore[misc]


def test_matches_survive_pickling_with_their_snippets() -> None:
    rules = CompiledRules([RuleSpec(1, "kim"), RuleSpec(2, "seoul -tokyo")])
    matches = rules.match("Talks", "Kim went to Seoul. " * 30, ())
    copies = pickle.loads(pickle.dumps(matches))
    assert copies == matches
    assert [m.snippet for m in copies] == [m.snippet for m in matches]
    assert copies[0].snippet.startswith("Kim went to Seoul.")


def test_matches_from_rules_behave_as_plain_matches() -> None:
    rules = CompiledRules([RuleSpec(1, "kim"), RuleSpec(2, "kim OR seoul")])
    matches = rules.match("Talks", "Kim went to Seoul.", ())
    plain = [
        Match(1, ("kim",), "Kim went to Seoul."),
        Match(2, ("kim", "seoul"), "Kim went to Seoul."),
    ]
    assert matches == plain and plain == matches
    assert [hash(m) for m in matches] == [hash(m) for m in plain]
    assert [repr(m) for m in matches] == [repr(m) for m in plain]
    assert all(isinstance(m, Match) for m in matches)
    assert [type(m) for m in pickle.loads(pickle.dumps(matches))] == [Match, Match]
    with pytest.raises(AttributeError):
        matches[0].snippet = "elsewhere"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        matches[0].extra = 1  # type: ignore[attr-defined]


DISJUNCTIONS = st.lists(
    st.one_of(RULE_QUERIES, st.lists(TERMS, min_size=2, max_size=4).map(lambda t: Or(tuple(t)))),
    min_size=1,
    max_size=8,
)


@given(DISJUNCTIONS, ARTICLE_TEXTS, ARTICLE_TEXTS)
@settings(max_examples=200, deadline=None)
def test_disjunctions_of_terms_match_as_generated_code_does(
    queries: list[Query], title: str, text: str
) -> None:
    # Without a topic filter a disjunction of terms is matched from precomputed hits
    # per term, merged when several of its terms are present; with one (always met) it
    # goes through generated code like any other rule.
    plain = CompiledRules([RuleSpec(i, format_query(q)) for i, q in enumerate(queries)])
    coded = CompiledRules(
        [RuleSpec(i, format_query(q), frozenset({"x"})) for i, q in enumerate(queries)]
    )
    got = [(m.rule_id, m.matched, m.snippet) for m in plain.match(title, text, ())]
    assert got == [(m.rule_id, m.matched, m.snippet) for m in coded.match(title, text, {"x"})]
    specs = [RuleSpec(i, format_query(q)) for i, q in enumerate(queries)]
    assert got == reference_match(specs, title, text, frozenset())


@pytest.mark.parametrize("topics", [frozenset(), frozenset({"x"})])
def test_a_term_starting_first_but_ending_last_is_matched_first(topics: frozenset[str]) -> None:
    rules = CompiledRules(
        [
            RuleSpec(1, 'seoul OR "kim seoul cost"', topics),
            RuleSpec(2, 'seoul OR "kim seoul cost" OR tokyo', topics),
            RuleSpec(3, 'seoul "kim seoul cost"', topics),
        ]
    )
    assert [m.matched for m in rules.match("", "Kim Seoul cost", {"x"})] == [
        ("kim seoul cost", "seoul")
    ] * 3
