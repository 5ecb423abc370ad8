"""Matching many keyword rules against an article at once. Pure.

Per rule set, once (`CompiledRules(specs)`):
    parse every query; give every distinct folded term an id
    one Aho–Corasick automaton over " term " patterns (spaces = word boundaries)
    inverted index: term id -> rules in which the term is positive (not under NOT)
    rules true with no positive term present (e.g. ``NOT kimchi``): always candidates
    each query compiled to a Python predicate over the set of present term ids

Per article (`CompiledRules.match(title, text, topics)`):
    fold title + text once; run the automaton once -> present term ids (+ first offsets)
    candidates = rules of the present terms + the always-candidates
    filter by topic, evaluate the candidates' predicates -> hits and their lead terms
    one snippet per distinct lead, all leads of a text located in one walk of its words

So the cost per article is one pass over the text plus the candidates, not the rule count.
Why candidates are enough: a rule that is true with a set P of present terms, none of
them positive in it, is also true with no term present — in negation normal form a
present term that only occurs negated can only make its literals false.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass

import ahocorasick

from tasks.models import Match
from tasks.query import (
    And,
    Not,
    Query,
    QuerySyntaxError,
    Term,
    blank_separators,
    evaluate,
    fold_text,
    fold_text_and_blanked,
    parse_query,
    positive_terms,
    query_terms,
    word_span,
)

__all__ = ["CompiledRules", "RuleError", "RuleSpec", "make_snippet"]

#: Target length of an alert snippet, in characters (before the ellipses).
SNIPPET_CHARS = 200
#: Marks a snippet cut inside the text.
ELLIPSIS = "…"


class RuleError(ValueError):
    """A rule that cannot be compiled (bad query, duplicate id); names the rule."""

    def __init__(self, rule_id: int, message: str) -> None:
        self.rule_id = rule_id
        super().__init__(f"rule {rule_id}: {message}")


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A keyword rule as stored: id, query text, optional topic filter (any of these slugs)."""

    id: int
    query: str
    topics: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class _Rule:
    rule_id: int
    query: Query
    predicate: Callable[[Container[int]], bool]
    positive: tuple[tuple[int, str], ...]  # (term id, spelling in the query)
    topics: frozenset[str]


def _expression(query: Query, ids: dict[str, int]) -> str:
    """Python source of a predicate over the set `p` of present term ids."""
    if isinstance(query, Term):
        return f"({ids[query.key]} in p)"
    if isinstance(query, Not):
        return f"(not {_expression(query.operand, ids)})"
    joiner = " and " if isinstance(query, And) else " or "
    return "(" + joiner.join(_expression(op, ids) for op in query.operands) + ")"


def _compile_predicate(query: Query, ids: dict[str, int]) -> Callable[[Container[int]], bool]:
    """Compile a query to a lambda; 3-5x faster than walking the AST for every candidate.

    The generated source contains only integer ids, operators and parentheses (never
    user text), and parse depth is bounded by `tasks.query.MAX_DEPTH`.
    """
    code = compile(f"lambda p: {_expression(query, ids)}", "<rule>", "eval")
    predicate: Callable[[Container[int]], bool] = eval(code, {"__builtins__": {}})
    return predicate


class CompiledRules:
    """A rule set compiled for matching articles; build once, call `match` per article."""

    def __init__(self, specs: Iterable[RuleSpec]) -> None:
        """Parse and index all rules; raise RuleError for a malformed query or duplicate id."""
        self._term_ids: dict[str, int] = {}
        self._rules: list[_Rule] = []
        parsed: list[tuple[RuleSpec, Query]] = []
        seen: set[int] = set()
        for spec in specs:
            if spec.id in seen:
                raise RuleError(spec.id, "duplicate rule id")
            seen.add(spec.id)
            try:
                query = parse_query(spec.query)
            except QuerySyntaxError as exc:
                raise RuleError(spec.id, f"query {spec.query!r}: {exc}") from exc
            parsed.append((spec, query))
            for key in sorted(query_terms(query)):
                self._term_ids.setdefault(key, len(self._term_ids))

        self._keys: list[str] = list(self._term_ids)
        postings: list[list[int]] = [[] for _ in self._keys]
        always: list[int] = []
        for index, (spec, query) in enumerate(parsed):
            positive = tuple(
                (self._term_ids[key], spelling) for key, spelling in positive_terms(query).items()
            )
            self._rules.append(
                _Rule(
                    rule_id=spec.id,
                    query=query,
                    predicate=_compile_predicate(query, self._term_ids),
                    positive=positive,
                    topics=frozenset(spec.topics),
                )
            )
            for term_id, _ in positive:
                postings[term_id].append(index)
            if evaluate(query, frozenset()):
                always.append(index)
        self._postings: list[tuple[int, ...]] = [tuple(p) for p in postings]
        self._always: tuple[int, ...] = tuple(always)

        self._automaton: ahocorasick.Automaton | None = None
        if self._keys:
            automaton = ahocorasick.Automaton()
            for term_id, key in enumerate(self._keys):
                automaton.add_word(f" {key} ", term_id)
            automaton.make_automaton()
            self._automaton = automaton

    def __len__(self) -> int:
        """Number of rules."""
        return len(self._rules)

    @property
    def term_count(self) -> int:
        """Number of distinct folded terms over all rules (patterns in the automaton)."""
        return len(self._keys)

    def _scan(self, folded: str, body_start: int) -> tuple[dict[int, int], dict[int, int]]:
        """One automaton pass: first folded offset of each term, overall and in the body."""
        first: dict[int, int] = {}
        in_body: dict[int, int] = {}
        if self._automaton is None:
            return first, in_body
        keys = self._keys
        for end, term_id in self._automaton.iter(folded):
            if term_id in in_body:
                continue
            # `end` is the index of the pattern's trailing space; store the leading one.
            start = end - len(keys[term_id]) - 1
            if term_id not in first:
                first[term_id] = start
            if start >= body_start:
                in_body[term_id] = start
        return first, in_body

    def match(self, title: str, text: str, topics: Iterable[str] = ()) -> list[Match]:
        """Every rule matching the article, in rule order, with matched terms and a snippet.

        `topics` are the article's topic slugs, for rules with a topic filter. Matched
        terms are the rule's present positive terms, spelled as in its query, in order of
        first occurrence (title first); the snippet surrounds the first of them in `text`,
        or in `title` when the term occurs only there.
        """
        folded_title = fold_text(title)
        folded_text, blanked_text = fold_text_and_blanked(text)
        # Title and text folded apart and joined on their shared padding space, so that
        # offsets past `body_start` are offsets into `folded_text`.
        body_start = len(folded_title) - 1
        first, in_body = self._scan(folded_title + folded_text[1:], body_start)
        candidates: set[int] = set(self._always)
        for term_id in first:
            candidates.update(self._postings[term_id])
        if not candidates:
            return []
        topic_set = frozenset(topics)
        # Matching rules first, then one snippet per distinct lead term: many rules share
        # a lead, and locating all leads of a text together walks its words once.
        hits: list[tuple[int, tuple[str, ...], int]] = []  # rule id, matched, lead term
        for index in sorted(candidates):
            rule = self._rules[index]
            if rule.topics and rule.topics.isdisjoint(topic_set):
                continue
            if not rule.predicate(first):
                continue
            positive = rule.positive
            if len(positive) == 1:
                term_id, spelling = positive[0]
                if term_id in first:
                    hits.append((rule.rule_id, (spelling,), term_id))
                else:
                    hits.append((rule.rule_id, (), -1))
                continue
            found = sorted(
                (first[term_id], term_id, spelling)
                for term_id, spelling in positive
                if term_id in first
            )
            lead = found[0][1] if found else -1
            hits.append((rule.rule_id, tuple(spelling for _, _, spelling in found), lead))
        if not hits:
            return []
        # One snippet per distinct lead term (-1: none), located in text order per source.
        snippets: dict[int, str] = {}
        in_text: list[tuple[int, int]] = []  # (folded offset of the leading space, term id)
        in_title: list[tuple[int, int]] = []
        for lead in {lead for _, _, lead in hits}:
            if lead < 0:
                snippets[lead] = make_snippet(text if text.strip() else title, None)
            elif lead in in_body:
                in_text.append((in_body[lead] - body_start, lead))
            else:
                in_title.append((first[lead], lead))
        if in_text:
            _add_snippets(snippets, text, folded_text, blanked_text, in_text, self._keys)
        if in_title:
            _add_snippets(snippets, title, folded_title, None, in_title, self._keys)
        return [Match(rule_id, matched, snippets[lead]) for rule_id, matched, lead in hits]


# --- snippets --------------------------------------------------------------------------


@functools.lru_cache(maxsize=16384)
def _term_pattern(key: str) -> re.Pattern[str]:
    """A regex finding a folded term in unfolded text, approximately.

    Tokens are separated by any run of non-word characters; short letter-only tokens
    allow dots between letters so "us" finds "U.S.".
    """

    def token(word: str) -> str:
        if word.isalpha() and len(word) <= 6:
            return r"\.?".join(re.escape(ch) for ch in word)
        return re.escape(word)

    body = r"[\W_]+".join(token(word) for word in key.split())
    return re.compile(rf"(?<![^\W_]){body}(?![^\W_])", re.IGNORECASE)


def _locate(
    text: str, key: str, folded: str | None, offset: int, blanked: str | None
) -> tuple[str, int, int] | None:
    """Find a folded term in `text`: (text searched, start, end), or None.

    Fast path: the term's word index in the folded text (from `offset`, the folded offset
    of its leading space) mapped back with `word_span`, checked by folding the span.
    Otherwise an approximate regex search, then the same search in NFKC-casefolded text.
    """
    if folded is not None and offset >= 0:
        index = folded.count(" ", 0, offset + 1) - 1
        span = word_span(text, index, key.count(" ") + 1, blanked)
        if span is not None and fold_text(text[span[0] : span[1]]) == f" {key} ":
            return text, span[0], span[1]
    pattern = _term_pattern(key)
    found = pattern.search(text)
    if found:
        return text, found.start(), found.end()
    # Compatibility forms and case folding that change letters ("ﬁ", "ß"): search the
    # NFKC-casefolded text instead; the snippet then shows that normalized text.
    normalized = unicodedata.normalize("NFKC", text).casefold()
    found = pattern.search(normalized)
    if found:
        return normalized, found.start(), found.end()
    return None


class _Words:
    """`word_span` over one text for word indices asked for in ascending order.

    Each call splits only the words since the previous one off the remaining tail, so
    locating all lead terms of a text walks its words once instead of once per term.
    """

    __slots__ = ("_done", "_index", "_size", "_tail")

    def __init__(self, blanked: str) -> None:
        """Words of a text, given as ``blank_separators(text)``."""
        self._tail = blanked
        self._size = len(self._tail)
        self._index = 0  # `_tail` starts at word `_index` once `_done` is False
        self._done: bool | None = None  # None: nothing split yet; True: past the last word

    def span(self, first: int, count: int) -> tuple[int, int] | None:
        """``word_span(text, first, count)``; `first` never less than on the previous call."""
        if self._done:
            return None
        skip = first - self._index
        if skip or self._done is None:
            rest = self._tail.split(None, skip)
            if len(rest) <= skip:
                self._done = True
                return None
            self._tail, self._index, self._done = rest[-1], first, False
        tail = self._tail
        start = self._size - len(tail)
        words = tail.split(None, count)
        if len(words) < count:
            return None
        used = tail if len(words) == count else tail[: len(tail) - len(words[-1])]
        return start, start + len(used.rstrip())


class _Window:
    """`_window` over one text, with the text's non-blank extent computed once."""

    __slots__ = ("_high", "_low", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._low = len(text) - len(text.lstrip())  # first non-blank character
        self._high = len(text.rstrip())  # just past the last one

    def __call__(self, start: int, end: int, width: int = SNIPPET_CHARS) -> str:
        """About `width` characters of the text around [start, end), cut at whitespace."""
        text = self._text
        left, right = start, end
        room = width - (end - start)
        if room > 0:
            left = max(0, start - room // 2)
            right = min(len(text), end + room - (start - left))
            left = max(0, left - (width - (right - left)))
        if left > 0 and not text[left - 1].isspace():
            cut = text.find(" ", left, start)
            left = cut + 1 if cut >= 0 else start
        if right < len(text) and not text[right].isspace():
            cut = text.rfind(" ", end, right)
            right = cut if cut >= 0 else end
        body = " ".join(text[left:right].split())
        # Text was cut where a non-blank character lies outside [left, right).
        prefix = ELLIPSIS if left > self._low else ""
        suffix = ELLIPSIS if right < self._high else ""
        return f"{prefix}{body}{suffix}"


def _window(text: str, start: int, end: int, width: int) -> str:
    """About `width` characters of `text` around [start, end), cut at whitespace."""
    return _Window(text)(start, end, width)


def _add_snippets(
    snippets: dict[int, str],
    text: str,
    folded: str,
    blanked: str | None,
    located: list[tuple[int, int]],
    keys: list[str],
) -> None:
    """Add ``make_snippet(text, key, folded, offset)`` for each (offset, term id) located.

    Same result, but the text's words are walked once for all terms (in offset order)
    and its non-blank extent is measured once. `blanked` is ``blank_separators(text)``
    if already known.
    """
    words = _Words(blank_separators(text) if blanked is None else blanked)
    window = _Window(text)
    for offset, term_id in sorted(located):
        key = keys[term_id]
        span = words.span(folded.count(" ", 0, offset + 1) - 1, key.count(" ") + 1)
        if span is not None and fold_text(text[span[0] : span[1]]) == f" {key} ":
            snippets[term_id] = window(span[0], span[1])
        else:
            snippets[term_id] = make_snippet(text, key)


def make_snippet(
    text: str,
    key: str | None,
    folded: str | None = None,
    offset: int = -1,
    blanked: str | None = None,
    width: int = SNIPPET_CHARS,
) -> str:
    """About `width` characters of `text` around the first occurrence of folded term `key`.

    Cut at whitespace, with "…" where text was cut. `folded`/`offset` (the text's
    `fold_text` and the folded offset of the term's leading space) make locating exact
    and cheap (`blanked`, ``blank_separators(text)``, saves recomputing it per call);
    without them the term is searched for. With no term (a rule matched by
    NOT alone) or no occurrence found, returns the beginning of the text.
    """
    if key is not None:
        located = _locate(text, key, folded, offset, blanked)
        if located is not None:
            return _window(*located, width)
    return _window(text, 0, 0, width)
