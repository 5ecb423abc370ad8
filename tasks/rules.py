"""Matching many keyword rules against an article at once. Pure.

Per rule set, once (`CompiledRules(specs)`):
    parse every query; give every distinct folded term an id
    one Aho–Corasick automaton over " term " patterns (spaces = word boundaries)
    a rule that is a disjunction of terms (or one term), with no topic filter: its hit
        under each of its terms, precomputed (the term alone as matched terms)
    the other rules, per rule, trigger terms: positive terms one of which must be
        present for it to be true (one term chosen per conjunction, every branch of a
        disjunction); rules true with no term present (e.g. ``NOT kimchi``): always
        evaluated
    one generated Python function per term, evaluating the rules it triggers (`_Codegen`):
        a rule runs under the first of its present triggers (by id) only, so there the
        query is partially evaluated with that term present and the earlier triggers
        absent (`_residual`); then the topic filter and what is left of the query; the
        hit's matched terms test only the positive terms not known present then
        (`_required`), usually leaving a constant

Per article (`CompiledRules.match(title, text, topics)`):
    fold title + text once (`fold_article`, shared with topic tagging)
    run the automaton once -> present term ids and the starts of their first occurrences
    precomputed hits of the present terms; one rule's under several terms merged into
        one hit, its terms ordered by first occurrence (`_merge_disjunctions`)
    the function of each present term, and the always-evaluated rules -> more hits
    hits sorted into rule order; matches share one deferred snippet source per article,
        each holding its lead term (`_DeferredMatch`); the snippets are computed
        together, one per distinct lead term, on the first read

So the cost per article is one pass over the text plus the rules of the present terms
and the matches, not the rule count. Why triggers are enough: in negation normal form,
a conjunction is true only if each operand is, and a disjunction only if one operand
is; so by induction a rule with a trigger set is false unless one of its trigger terms
is present, and a rule without one (every conjunct, or some disjunct, needs no term) is
true with none present.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter

import ahocorasick_rs

from tasks.models import Match
from tasks.query import (
    ACRONYM_JOINER,
    And,
    Not,
    Or,
    Query,
    QuerySyntaxError,
    Term,
    blank_separators,
    fold_text,
    fold_text_and_blanked,
    parse_query,
    positive_terms,
    query_terms,
    word_span,
)

__all__ = [
    "CompiledRules",
    "FoldedArticle",
    "RuleError",
    "RuleSpec",
    "fold_article",
    "make_snippet",
]

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


# --- folding ---------------------------------------------------------------------------

_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")
# Past this many bytes of non-ASCII characters (in UTF-8) a text is not "English with a few
# curly quotes", and replacing its separators one by one would not make it ASCII anyway.
_FEW_NON_ASCII_BYTES = 192


@functools.lru_cache(maxsize=4096)
def _is_separator(char: str) -> bool:
    """Whether `blank_separators` turns this (non-ASCII) character into a space."""
    return blank_separators(char) == " "


def _separators_in(text: str) -> set[str] | None:
    """The non-ASCII separators ("’", "—", "£"...) in `text`; None if it has many non-ASCII
    characters, which replacing one by one would not make ASCII anyway."""
    if len(text.encode("utf-8", "surrogatepass")) - len(text) > _FEW_NON_ASCII_BYTES:
        return None
    return {char for char in set(_NON_ASCII_RE.findall(text)) if _is_separator(char)}


def _blank_chars(text: str, chars: Iterable[str]) -> str:
    """`text` with each of `chars` replaced by a space."""
    for char in chars:
        text = text.replace(char, " ")
    return text


def _blank_non_ascii_separators(text: str) -> str:
    """`text` with its non-ASCII separators replaced by spaces.

    `blank_separators` maps every character on its own, and maps a separator and a space
    alike, so ``blank_separators(_blank_non_ascii_separators(t)) == blank_separators(t)``.
    The point: when the result is ASCII, `str.translate` inside `blank_separators` takes
    CPython's ASCII fast path, over ten times faster than on text with one "’" in it.
    """
    chars = _separators_in(text)
    return text if chars is None else _blank_chars(text, chars)


def _fold(text: str) -> tuple[str, str | None]:
    """``fold_text(text)``, and the words of `text` at its offsets when they come cheap.

    Same result as `fold_text`, faster for mostly-ASCII text: `fold_text` is
    ``collapse(blank_separators(nfkc(casefold(nfkc(text)))))``; this takes the inner
    part, blanks its non-ASCII separators (which leaves `blank_separators` unchanged),
    and when that leaves lowercase ASCII, folds it with the ASCII path of
    `fold_text_and_blanked`, whose lowercasing then changes nothing.

    The second item, for snippets, is ``blank_separators(text).lower()`` for ASCII text.
    For other text whose inner part differs from it only in letter case and those
    separators (curly quotes, "£"), it is the inner part's blanked form: lowercase too,
    with the same words at the same offsets. Otherwise None. Either way the fold is that
    item with its runs of spaces collapsed and the joiners of acronyms' dots dropped.
    """
    if text.isascii():
        return fold_text_and_blanked(text)
    inner = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    chars = _separators_in(inner)
    if chars is None:
        return fold_text(text), None
    blanked = _blank_chars(inner, chars)
    if not (blanked.isascii() and blanked == blanked.lower()):
        return fold_text(text), None
    folded, words = fold_text_and_blanked(blanked)
    if len(blanked) == len(text) and _blank_chars(text.lower(), chars) == blanked:
        return folded, words
    return folded, None


def _blanked(text: str) -> str:
    """``blank_separators(text)``, faster for mostly-ASCII text (see above)."""
    return blank_separators(_blank_non_ascii_separators(text))


@dataclass(frozen=True, slots=True)
class FoldedArticle:
    """An article's title and text folded for matching (`fold_text`), and their join.

    `joined` is the folded title and text joined on their shared padding space, so that
    offsets from `body_start` on are offsets into `folded_text`; it equals
    ``fold_text(f"{title}\n{text}")``. `blanked_text` is ``blank_separators(text)``
    lowercased, or a lowercase string with the same words at the same offsets, when
    folding produced it on the way (see `_fold`), else None; `folded_text` is then made
    from it, its runs of spaces collapsed and the joiners of acronyms' dots dropped.
    """

    title: str
    text: str
    folded_title: str
    folded_text: str
    blanked_text: str | None
    joined: str
    body_start: int


@functools.lru_cache(maxsize=8)
def fold_article(title: str, text: str) -> FoldedArticle:
    """Fold an article's title and text for matching; the last few results are kept.

    Topic tagging and rule matching both fold the same article one after the other
    (`tasks.pipeline.prepare`); keeping the last few folds makes that one fold.
    """
    folded_title, _ = _fold(title)
    folded_text, blanked_text = _fold(text)
    return FoldedArticle(
        title=title,
        text=text,
        folded_title=folded_title,
        folded_text=folded_text,
        blanked_text=blanked_text,
        joined=folded_title + folded_text[1:],
        body_start=len(folded_title) - 1,
    )


# --- compiling -------------------------------------------------------------------------

# A match before its Match object: (rule index, rule id, matched spellings, lead term id);
# the lead is the first matched term (-1: none), whose surroundings make the snippet.
_Hit = tuple[int, int, tuple[str, ...], int]
# Evaluates the rules a term triggers: (present term -> start of its first occurrence, the
# article's topics, append a hit).
_Program = Callable[[dict[int, int], frozenset[str], Callable[[_Hit], None]], None]
_NO_TOPICS: frozenset[str] = frozenset()


def _residual(query: Query, ids: dict[str, int], known: dict[int, bool]) -> str | bool:
    """`query` with the terms of `known` (term id -> present) replaced by their values.

    True or False when that decides it, else Python source of a predicate over the
    container `p` of present term ids, simplified: decided operands of a conjunction or
    disjunction dropped, or deciding it.
    """
    if isinstance(query, Term):
        term_id = ids[query.key]
        return known.get(term_id, f"({term_id} in p)")
    if isinstance(query, Not):
        inner = _residual(query.operand, ids, known)
        return (not inner) if isinstance(inner, bool) else f"(not {inner})"
    conjunction = isinstance(query, And)
    parts: list[str] = []
    for operand in query.operands:
        part = _residual(operand, ids, known)
        if isinstance(part, bool):
            if part != conjunction:  # False in a conjunction, True in a disjunction
                return part
            continue
        parts.append(part)
    if not parts:
        return conjunction
    joiner = " and " if conjunction else " or "
    return parts[0] if len(parts) == 1 else "(" + joiner.join(parts) + ")"


def _required(query: Query, ids: dict[str, int], known: dict[int, bool]) -> set[int]:
    """Term ids that are present whenever `query` is true, given the terms of `known`.

    A term itself; every operand's of a conjunction; those shared by the operands of a
    disjunction that `known` does not already make false; none under a NOT.
    """
    if isinstance(query, Term):
        return {ids[query.key]}
    if isinstance(query, Not):
        return set()
    if isinstance(query, And):
        return set().union(*(_required(op, ids, known) for op in query.operands))
    branches = [
        _required(op, ids, known) for op in query.operands if _residual(op, ids, known) is not False
    ]
    return set.intersection(*branches) if branches else set()


def _term_cost(key: str) -> float:
    """How likely a folded term is to occur in a text, roughly: phrases and long words less."""
    return 1.0 / (len(key) + 8 * key.count(" "))


def _triggers(
    query: Query, ids: dict[str, int], negated: bool = False
) -> tuple[frozenset[int], float] | None:
    """Term ids one of which must be present for `query` to be true, and their cost.

    None when the query can be true with no term present. Negations are pushed down
    (De Morgan): under an odd number of NOTs a term needs nothing, And acts as Or.
    A conjunction takes its cheapest operand's triggers, a disjunction all of them.
    """
    if isinstance(query, Term):
        return None if negated else (frozenset({ids[query.key]}), _term_cost(query.key))
    if isinstance(query, Not):
        return _triggers(query.operand, ids, not negated)
    parts = [_triggers(op, ids, negated) for op in query.operands]
    if isinstance(query, And) != negated:  # a conjunction
        known = [part for part in parts if part is not None]
        return min(known, key=lambda part: part[1]) if known else None
    if any(part is None for part in parts):
        return None
    terms = frozenset().union(*(part[0] for part in parts if part is not None))
    return terms, sum(part[1] for part in parts if part is not None)


def _ordered_hit(
    present: dict[int, int], positive: tuple[tuple[int, str, _Hit], ...], none: _Hit
) -> _Hit:
    """The hit of a matching rule: its present positive terms in order of first offset.

    `present` maps a term id to the start of its first occurrence (see
    `CompiledRules.match`). `positive` holds (term id, spelling, the hit when only this
    term is present) in query order; `none` is the hit with no positive term present.
    """
    found = [(present[t], t, spelling, alone) for t, spelling, alone in positive if t in present]
    if len(found) < 2:
        return found[0][3] if found else none
    found.sort()
    index, rule_id = none[0], none[1]
    return index, rule_id, tuple([f[2] for f in found]), found[0][1]


def _is_disjunction(query: Query) -> bool:
    """Whether `query` is one term or a disjunction of such: true when one is present."""
    if isinstance(query, Or):
        return all(map(_is_disjunction, query.operands))
    return isinstance(query, Term)


_rule_index = itemgetter(0)


def _merge_disjunctions(hits: list[_Hit], first: dict[int, int]) -> list[_Hit]:
    """`hits` with the hits of one rule under several present terms merged into one.

    Each of those hits has its term alone as matched terms and lead; the merged hit
    has them all, in order of first offset (ties: smaller term id first). `first` maps
    a present term to the start of its first occurrence.
    """
    by_rule: dict[int, list[_Hit]] = {}
    for hit in hits:
        by_rule.setdefault(hit[0], []).append(hit)
    merged: list[_Hit] = []
    for group in by_rule.values():
        if len(group) > 1:
            group.sort(key=lambda hit: (first[hit[3]], hit[3]))
            index, rule_id, _, lead = group[0]
            merged.append((index, rule_id, tuple(hit[2][0] for hit in group), lead))
        else:
            merged.append(group[0])
    return merged


# A rule's code under one trigger term: (rule index, condition, candidates, sure ids); see
# `_rule_code`.
_RuleCode = tuple[int, str | bool, tuple[tuple[int, str], ...], set[int]]


def _rule_code(
    index: int, query: Query, ids: dict[str, int], topics: str | None, known: dict[int, bool]
) -> _RuleCode | None:
    """How to evaluate rule `index` where the terms of `known` (id -> present) are known.

    The condition: the earlier triggers' absence tested first (the terms of `known`
    not present), then the topic filter (named `topics` in the generated code), then
    the query over the other terms (True: nothing to test). The hit's candidates: the
    positive terms not known absent; sure: those present whenever the condition holds.
    None when the query cannot hold under `known`.
    """
    residual = _residual(query, ids, known)
    if residual is False:
        return None
    tests = [f"not ({term_id} in p)" for term_id, present in known.items() if not present]
    if topics is not None:
        tests.append(f"not t.isdisjoint({topics})")
    if residual is not True:
        tests.append(residual)
    positive = [(ids[key], spelling) for key, spelling in positive_terms(query).items()]
    candidates = tuple(term for term in positive if known.get(term[0]) is not False)
    sure = {term_id for term_id, present in known.items() if present}
    sure |= _required(query, ids, known)
    return index, " and ".join(tests) if tests else True, candidates, sure


# The names `_Codegen` gives values in the generated code.
_NAME_RE = re.compile(r"\b_c[0-9]+\b")


class _Codegen:
    """Python source evaluating rules, with the values it refers to kept by name.

    The source holds only generated names, integer term ids, operators and
    parentheses, never user text: spellings, hits and topic sets are values in the
    namespace. Parse depth is bounded by `tasks.query.MAX_DEPTH`.
    """

    def __init__(self) -> None:
        self.namespace: dict[str, object] = {"__builtins__": {}, "_ordered_hit": _ordered_hit}
        self.names: dict[object, str] = {}
        self.lines: list[str] = []
        self._header = -1  # index in `lines` of the function being written, if any

    def constant(self, value: object) -> str:
        """A name for `value` in the generated code (one name per distinct value)."""
        name = self.names.get(value)
        if name is None:
            name = self.names[value] = f"_c{len(self.namespace)}"
            self.namespace[name] = value
        return name

    def rule(
        self,
        index: int,
        rule_id: int,
        condition: str | bool,
        candidates: tuple[tuple[int, str], ...],
        present: set[int],
    ) -> None:
        """Append the hit of rule `index` when `condition` holds (True: always).

        `candidates` are the rule's positive terms (id, spelling), in query order, that
        may be present when `condition` holds; `present` the ids of those that surely are.
        """
        hit = self.hit(index, rule_id, candidates, present)
        if condition is True:
            self.lines.append(f"    o({hit})")
        else:
            self.lines.append(f"    if {condition}: o({hit})")

    def hit(
        self,
        index: int,
        rule_id: int,
        candidates: tuple[tuple[int, str], ...],
        present: set[int],
    ) -> str:
        """An expression for the hit of a matching rule (see `rule` and `_ordered_hit`).

        Only the candidates not surely present are tested: when none of them is, the
        hit is that of the sure ones, usually a constant.
        """
        sure = tuple(term for term in candidates if term[0] in present)
        unsure = [term for term in candidates if term[0] not in present]
        if not unsure:
            return self.exact(index, rule_id, sure)
        if len(unsure) == 1:
            [(a, _)] = unsure
            with_a = self.exact(index, rule_id, candidates)
            return f"({with_a} if {a} in p else {self.exact(index, rule_id, sure)})"
        if not sure and len(unsure) == 2:
            (a, sa), (b, sb) = unsure
            both = self.exact(index, rule_id, candidates)
            a_only = self.exact(index, rule_id, ((a, sa),))
            b_only = self.exact(index, rule_id, ((b, sb),))
            none = self.exact(index, rule_id, ())
            return (
                f"(({both} if {b} in p else {a_only}) if {a} in p"
                f" else ({b_only} if {b} in p else {none}))"
            )
        general = self.ordered(index, rule_id, candidates)
        if not sure:
            return general
        others = " or ".join(f"({term} in p)" for term, _ in unsure)
        return f"({self.exact(index, rule_id, sure)} if not ({others}) else {general})"

    def exact(self, index: int, rule_id: int, present: tuple[tuple[int, str], ...]) -> str:
        """An expression for the hit of a matching rule whose present positive terms are
        exactly `present` (id, spelling), in query order: they are ordered by offset."""
        if not present:
            return self.constant((index, rule_id, (), -1))
        if len(present) == 1:
            [(a, spelling)] = present
            return self.constant((index, rule_id, (spelling,), a))
        if len(present) == 2:
            (a, sa), (b, sb) = present
            ab = self.constant((index, rule_id, (sa, sb), a))
            ba = self.constant((index, rule_id, (sb, sa), b))
            # `p` holds starts. Ties (two terms starting at one offset) go to the smaller
            # term id.
            before = "<=" if a < b else "<"
            return f"({ab} if p[{a}] {before} p[{b}] else {ba})"
        return self.ordered(index, rule_id, present)

    def ordered(self, index: int, rule_id: int, candidates: tuple[tuple[int, str], ...]) -> str:
        """A call of `_ordered_hit` over the candidates (id, spelling), in query order."""
        alone = tuple((t, spelling, (index, rule_id, (spelling,), t)) for t, spelling in candidates)
        none = self.constant((index, rule_id, (), -1))
        return f"_ordered_hit(p, {self.constant(alone)}, {none})"

    def function(self, name: str) -> None:
        """Start a function ``name(p, t, o)``: present terms, topics, append a hit."""
        self._finish()
        self._header = len(self.lines)
        self.lines.append(name)

    def _finish(self) -> None:
        """Write the header of the last function started: the values its body refers to
        are bound as parameter defaults, so that it reads them as locals."""
        if self._header < 0:
            return
        names = dict.fromkeys(_NAME_RE.findall("\n".join(self.lines[self._header + 1 :])))
        bound = "".join(f", {name}={name}" for name in names)
        self.lines[self._header] = f"def {self.lines[self._header]}(p, t, o{bound}):"
        self._header = -1

    def compile(self) -> dict[str, object]:
        """Run the source; returns the namespace holding the functions."""
        self._finish()
        code = compile("\n".join(self.lines) + "\n", "<rules>", "exec")
        exec(code, self.namespace)
        return self.namespace


class CompiledRules:
    """A rule set compiled for matching articles; build once, call `match` per article."""

    def __init__(self, specs: Iterable[RuleSpec]) -> None:
        """Parse and index all rules; raise RuleError for a malformed query or duplicate id."""
        term_ids: dict[str, int] = {}
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
                term_ids.setdefault(key, len(term_ids))

        self._keys: list[str] = list(term_ids)
        self._rule_count = len(parsed)
        self._topical = any(spec.topics for spec, _ in parsed)
        # Rules that are a disjunction of terms (one term or more): their hit under each
        # term, whenever it is present (see `_merge_disjunctions`).
        plain: list[list[_Hit]] = [[] for _ in self._keys]
        self._disjunctions = False  # whether a rule is a disjunction of several terms
        # The other rules' code, under each of their trigger terms, or always evaluated.
        triggered: list[list[_RuleCode]] = [[] for _ in self._keys]
        always: list[_RuleCode] = []
        code = _Codegen()
        for index, (spec, query) in enumerate(parsed):
            if not spec.topics and _is_disjunction(query):
                spellings = positive_terms(query)
                for key, spelling in spellings.items():
                    term_id = term_ids[key]
                    plain[term_id].append((index, spec.id, (spelling,), term_id))
                self._disjunctions |= len(spellings) > 1
                continue
            topics = code.constant(frozenset(spec.topics)) if spec.topics else None
            trigger = _triggers(query, term_ids)
            if trigger is None:
                rule = _rule_code(index, query, term_ids, topics, {})
                if rule is not None:
                    always.append(rule)
                continue
            # Evaluated only under the first of its present trigger terms (by id): there
            # the term is present and the earlier ones are absent.
            known: dict[int, bool] = {}
            for term_id in sorted(trigger[0]):
                known[term_id] = True
                rule = _rule_code(index, query, term_ids, topics, known)
                if rule is not None:
                    triggered[term_id].append(rule)
                known[term_id] = False

        rule_ids = [spec.id for spec, _ in parsed]
        for term_id, rules in enumerate(triggered):
            if rules:
                code.function(f"_t{term_id}")
                for index, condition, candidates, present in rules:
                    code.rule(index, rule_ids[index], condition, candidates, present)
        if always:
            code.function("_always")
            for index, condition, candidates, present in always:
                code.rule(index, rule_ids[index], condition, candidates, present)
        namespace = code.compile() if code.lines else {}
        self._plain: list[tuple[_Hit, ...]] = [tuple(hits) for hits in plain]
        self._programs: list[_Program | None] = [
            namespace.get(f"_t{term_id}") if rules else None  # type: ignore[misc]
            for term_id, rules in enumerate(triggered)
        ]
        self._always: _Program | None = namespace.get("_always")  # type: ignore[assignment]

        self._automaton: ahocorasick_rs.AhoCorasick | None = None
        if self._keys:
            # Pattern i is term id i. ahocorasick-rs (Rust) took 15-20% less time per
            # text than pyahocorasick at 10, 1,000 and 10,000 rules (benchmarks/rules.py,
            # same run: 47.5 -> 40.3, 64.4 -> 54.7, 120.3 -> 98.2 us).
            self._automaton = ahocorasick_rs.AhoCorasick([f" {key} " for key in self._keys])

    def __len__(self) -> int:
        """Number of rules."""
        return self._rule_count

    @property
    def term_count(self) -> int:
        """Number of distinct folded terms over all rules (patterns in the automaton)."""
        return len(self._keys)

    def match(self, title: str, text: str, topics: Iterable[str] = ()) -> list[Match]:
        """Every rule matching the article, in rule order, with matched terms and a snippet.

        `topics` are the article's topic slugs, for rules with a topic filter. Matched
        terms are the rule's present positive terms, spelled as in its query, in order of
        first occurrence (title first); the snippet surrounds the first of them in `text`,
        or in `title` when the term occurs only there. Snippets are computed when first
        read, all of an article's at once.
        """
        article = fold_article(title, text)
        # Term id -> folded offset of the leading space of its first occurrence.
        first: dict[int, int] = {}
        if self._automaton is not None:
            found = self._automaton.find_matches_as_indexes(article.joined, overlapping=True)
            if found:
                # Backwards, so that the first occurrence of a term is the one kept.
                first = {term_id: start for term_id, start, _ in reversed(found)}
        if not first and self._always is None:
            return []
        hits: list[_Hit] = list(chain.from_iterable(map(self._plain.__getitem__, first)))
        if self._disjunctions and len(set(map(_rule_index, hits))) < len(hits):
            hits = _merge_disjunctions(hits, first)
        topic_set = frozenset(topics) if self._topical else _NO_TOPICS
        append = hits.append
        for program in filter(None, map(self._programs.__getitem__, first)):
            program(first, topic_set, append)
        if self._always is not None:
            self._always(first, topic_set, append)
        if not hits:
            return []
        hits.sort()
        source = _Snippets(article, first, self._keys, hits)
        return [
            _DeferredMatch(rule_id, matched, source, lead) for _, rule_id, matched, lead in hits
        ]


class _DeferredMatch(Match):
    """A `Match` whose snippet is its article's snippet around its lead term, made when
    first read (by `_Snippets`, shared by the article's matches). Compared, hashed and
    pickled as a `Match`: its snippet read, a plain `Match` unpickled."""

    __slots__ = ("_lead", "_source")

    def __init__(
        self, rule_id: int, matched: tuple[str, ...], source: _Snippets, lead: int
    ) -> None:
        # The snippet slot of `Match` stays empty: `snippet` below replaces its reader.
        self._rule_id = rule_id
        self._matched = matched
        self._source = source
        self._lead = lead

    @property
    def snippet(self) -> str:
        """Text around the first matched term, computed on first read."""
        return self._source.get(self._lead)


class _Snippets:
    """The snippets of one article's matches, one per lead term, all made on the first read.

    Many matches share a lead term, and locating all leads of a text together walks
    its words once.
    """

    __slots__ = ("_article", "_first", "_hits", "_keys", "_snippets")

    def __init__(
        self, article: FoldedArticle, first: dict[int, int], keys: list[str], hits: list[_Hit]
    ) -> None:
        self._article = article
        self._first = first
        self._keys = keys
        self._hits = hits
        self._snippets: dict[int, str] | None = None

    def get(self, lead: int) -> str:
        """The snippet around lead term `lead` (-1: the start of the text)."""
        snippets = self._snippets
        if snippets is None:
            snippets = self._snippets = self._make()
        return snippets[lead]

    def _make(self) -> dict[int, str]:
        """A snippet per lead term, the leads located in text order per source."""
        article, first, keys = self._article, self._first, self._keys
        title, text = article.title, article.text
        snippets: dict[int, str] = {}
        in_text: list[tuple[int, int]] = []  # (folded offset of the leading space, term id)
        in_title: list[tuple[int, int]] = []
        body_start = article.body_start
        for term_id in {hit[3] for hit in self._hits}:
            if term_id < 0:
                snippets[term_id] = make_snippet(text if text.strip() else title, None)
                continue
            start = first[term_id]
            if start >= body_start:
                in_text.append((start - body_start, term_id))
                continue
            # First seen in the title: its first occurrence in the text, if any, wins.
            offset = article.folded_text.find(f" {keys[term_id]} ")
            if offset >= 0:
                in_text.append((offset, term_id))
            else:
                in_title.append((start, term_id))
        if in_text:
            _add_snippets(snippets, text, article.folded_text, article.blanked_text, in_text, keys)
        if in_title:
            _add_snippets(snippets, title, article.folded_title, None, in_title, keys)
        return snippets


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


@functools.lru_cache(maxsize=16384)
def _spaced_pattern(key: str) -> re.Pattern[str]:
    """A regex finding folded phrase `key` between spaces, its words any number of spaces
    apart: in `_lowered_words`, where runs of separators are runs of spaces."""
    return re.compile(" " + " +".join(map(re.escape, key.split(" "))) + " ")


def _spaced_span(spaced: str, key: str, since: int) -> tuple[int, int] | None:
    """Where folded term `key` first occurs in ``f" {lowered} "`` from offset `since` on,
    as offsets into `lowered` (the text's, see `_lowered_words`); None if it does not.

    A phrase's words may lie any runs of spaces apart there: ", " leaves two.
    """
    if " " not in key:
        at = spaced.find(f" {key} ", since)
        return (at, at + len(key)) if at >= 0 else None
    found = _spaced_pattern(key).search(spaced, since)
    # The match runs from the space before the first word to the one after the last.
    return (found.start(), found.end() - 2) if found else None


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


# The whitespace of ASCII text besides " " and "\n": control characters `str.split` splits on.
_ASCII_CONTROL_SPACES = "\t\x0b\x0c\r\x1c\x1d\x1e\x1f"


class _Window:
    """`_window` over one text, with the text's length, non-blank extent and kinds of
    whitespace measured once."""

    __slots__ = ("_high", "_low", "_plain_whitespace", "_size", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._size = len(text)
        self._low = len(text) - len(text.lstrip())  # first non-blank character
        self._high = len(text.rstrip())  # just past the last one
        # Whether " " and "\n" are its only whitespace: for ASCII text, a scan for each of
        # a few characters; other text is left to each window to check.
        self._plain_whitespace = text.isascii() and not any(
            map(text.__contains__, _ASCII_CONTROL_SPACES)
        )

    def around(self, start: int, end: int, width: int = SNIPPET_CHARS) -> str:
        """About `width` characters of the text around [start, end), cut at whitespace."""
        text, size = self._text, self._size
        left, right = start, end
        room = width - (end - start)
        if room > 0:
            # Centred on the span, then moved back inside the text, `width` long if it can.
            left = start - room // 2 if start > room // 2 else 0
            right = left + width if left + width < size else size
            left = right - width if right > width else 0
        if left > 0 and not text[left - 1].isspace():
            cut = text.find(" ", left, start)
            left = cut + 1 if cut >= 0 else start
        if right < size and not text[right].isspace():
            cut = text.rfind(" ", end, right)
            right = cut if cut >= 0 else end
        body = text[left:right]
        # Whitespace collapsed to single spaces. Articles separate paragraphs with a blank
        # line (`tasks.normalize`): when turning those into spaces leaves single spaces
        # between words as the only whitespace, that is the collapsed body, without the
        # split and join. Only " " is both whitespace and printable.
        flat = body.replace("\n\n", " ") if "\n" in body else body
        if (
            ("\n" not in flat if self._plain_whitespace else flat.isprintable())
            and "  " not in flat
            and flat[:1] != " " != flat[-1:]
        ):
            body = flat
        else:
            body = " ".join(body.split())
        # Text was cut where a non-blank character lies outside [left, right).
        prefix = ELLIPSIS if left > self._low else ""
        suffix = ELLIPSIS if right < self._high else ""
        return f"{prefix}{body}{suffix}"


def _window(text: str, start: int, end: int, width: int) -> str:
    """About `width` characters of `text` around [start, end), cut at whitespace."""
    return _Window(text).around(start, end, width)


def _lowered_words(text: str, folded: str, blanked: str) -> str | None:
    """``blanked.lower()`` if its words are the words of `folded`, else None.

    `folded` is ``fold_text(text)``, `blanked` is ``blank_separators(text)`` (or the
    stand-in `_fold` gives, lowercase ASCII with the same words at the same offsets). The
    result has the offsets of `text`, words where `text` has them, so a term can be
    found in it with `str.find` where otherwise the words of `text` must be walked.
    Blanked ASCII text is letters, digits, spaces and the joiners of acronyms' dots,
    which folding drops: its words are the folded ones when folding keeps every non-space
    character. Other text is compared word for word, and must keep its length.
    """
    if blanked.isascii():
        if len(blanked) - blanked.count(" ") == len(folded) - folded.count(" "):
            return blanked.lower()
        return None
    lowered = blanked.lower()
    if len(lowered) == len(blanked) and " ".join(lowered.split()) == folded[1:-1]:
        return lowered
    return None


def _add_snippets(
    snippets: dict[int, str],
    text: str,
    folded: str,
    folded_from: str | None,
    located: list[tuple[int, int]],
    keys: list[str],
) -> None:
    """Add ``make_snippet(text, key, folded, offset)`` for each (offset, term id) located.

    Same result, faster: the terms are found in `_lowered_words` (`_spaced_span`) when
    it applies, else the text's words are walked once for all terms (in offset order);
    its non-blank extent and kinds of whitespace are measured once (`_Window`).
    `folded_from` is the `FoldedArticle.blanked_text` that `folded` was made from, if
    any. The span found is checked by folding it, as `make_snippet` does, unless it is
    ASCII and holds no dot: folding it then gives back its lowercased words, which are
    the term's.
    """
    window = _Window(text).around
    if folded_from is None:
        blanked = _blanked(text)
        lowered = _lowered_words(text, folded, blanked)
    else:
        # Folding collapsed the spaces between these lowercase words; it changed a word
        # only where it dropped the joiners of an acronym's dots.
        blanked = folded_from
        lowered = None if ACRONYM_JOINER in blanked else blanked
    spaced = None if lowered is None else f" {lowered} "
    words: _Words | None = None
    # Terms come in text order, so none occurs before the previous one found.
    since = 0
    for offset, term_id in sorted(located):
        key = keys[term_id]
        span: tuple[int, int] | None = None
        if spaced is not None:
            # `spaced` has the words of `folded`, so the first occurrence from the previous
            # term's on is the one at `offset`.
            span = _spaced_span(spaced, key, since)
            if span is not None:
                since = span[0]
                written = text[span[0] : span[1]]
                if written.isascii() and "." not in written:
                    snippets[term_id] = window(*span)
                    continue
        if span is None:
            if words is None:
                words = _Words(blanked)
            span = words.span(folded.count(" ", 0, offset + 1) - 1, key.count(" ") + 1)
        if span is not None and fold_text(text[span[0] : span[1]]) == f" {key} ":
            snippets[term_id] = window(*span)
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
