"""The keyword query language of rules: parse, print, fold and evaluate. Pure.

Grammar (operators bind NOT > AND > OR; adjacent terms are joined by an implicit AND)::

    query    := or_expr END
    or_expr  := and_expr ("OR" and_expr)*
    and_expr := unary (["AND"] unary)*
    unary    := ("NOT" | "-") unary | primary
    primary  := WORD | PHRASE | "(" or_expr ")"

- WORD: a run of characters up to whitespace, a parenthesis or a double quote,
  e.g. ``Kim``, ``cost-sharing``, ``U.S.``, ``28,500``.
- PHRASE: text between double quotes, e.g. ``"troop cost sharing"``. There is no escape
  for ``"`` inside a phrase: quotes fold to a separator anyway.
- AND, OR and NOT are operators in any letter case (``kim and seoul`` means
  ``kim AND seoul``, as people type it). To search for the words themselves, quote them:
  ``"and"``.
- A leading ``-`` is a unary NOT: ``-kimchi``, ``-"cost sharing"``, ``-(a OR b)``.
  A hyphen inside a word is part of the word (``cost-sharing``).

Matching folds article text and terms with `fold_text`, so it is case-insensitive,
respects word boundaries ("Kim" does not match "Kimchi", "Korea" does match "Korea's"),
treats every run of punctuation, hyphens and dashes as one separator ("cost-sharing",
"cost sharing" and "cost–sharing" are one term), and collapses dotted single-letter
acronyms ("U.S." and "US" are one term; so is the pronoun "us": matching ignores case).

A `Query` is an immutable AST (`Term`, `Not`, `And`, `Or`); `format_query` prints the
canonical text, and ``parse_query(format_query(q)) == q`` for every valid AST.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "And",
    "Not",
    "Or",
    "Query",
    "QuerySyntaxError",
    "Term",
    "blank_separators",
    "evaluate",
    "fold_text",
    "fold_text_and_blanked",
    "format_query",
    "match_query",
    "parse_query",
    "positive_terms",
    "query_terms",
    "word_span",
]

#: Nesting deeper than this (parentheses and NOTs) is refused, so that parsing, printing
#: and evaluating can recurse without ever hitting Python's recursion limit.
MAX_DEPTH = 100

#: Operator keywords, compared after `str.upper`.
KEYWORDS = frozenset({"AND", "OR", "NOT"})


class _SeparatorTable(dict[int, int]):
    """`str.translate` table: separators -> " ", "." kept, word characters kept.

    Word characters are letters, digits and combining marks (accents, vowel signs of
    Indic scripts: without them a word would split at every mark); "_" is a separator.
    Filled lazily per code point, so folding costs one C-level translate per text. Every
    character maps to exactly one character, so offsets are preserved (`token_spans`).
    """

    def __missing__(self, code: int) -> int:
        char = chr(code)
        word_char = (char.isalnum() and char != "_") or unicodedata.category(char).startswith("M")
        value = code if word_char or char == "." else _SPACE
        if len(self) < _TABLE_CACHE_LIMIT:
            self[code] = value
        return value


_SPACE = ord(" ")
# Adversarial text could touch every code point; past this many the table stops caching.
_TABLE_CACHE_LIMIT = 200_000
_SEPARATORS = _SeparatorTable()
# A dot followed by a single letter and then a dot, a separator or the end: the tail
# of a dotted acronym like "U.S." or "e.g." (checked with `_is_acronym`). A literal
# first character keeps this search fast on long texts.
_ACRONYM_HINT_RE = re.compile(r"\.[^\W\d_](?![^\W_])")
# Stands in for the dots of an acronym in `blank_separators` (a non-space character that the
# separator table never produces), so offsets are preserved until the final fold.
ACRONYM_JOINER = "\x00"
_QUERY_SPECIAL = frozenset('()"')
_SPACE_RUN_RE = re.compile("  +")


def _is_acronym(word: str) -> bool:
    """Whether a dotted word is single letters joined by dots: "u.s.", "u.s.a", "e.g."."""
    parts = word.strip(".").split(".")
    return len(parts) >= 2 and all(len(part) == 1 and part.isalpha() for part in parts)


def blank_separators(text: str) -> str:
    """Same-length copy of `text`: separators and non-acronym dots -> " ".

    The dots of single-letter acronyms become `ACRONYM_JOINER`, so "U.S." stays one word.
    Whitespace-separated words of the result are the words of the folded text.
    """
    spaced = text.translate(_SEPARATORS)
    if "." not in spaced:
        return spaced
    if _ACRONYM_HINT_RE.search(spaced):
        pieces: list[str] = []
        last = 0
        for hint in _ACRONYM_HINT_RE.finditer(spaced):
            if hint.start() < last:
                continue
            left = spaced.rfind(" ", 0, hint.start()) + 1
            right = spaced.find(" ", hint.start())
            right = len(spaced) if right < 0 else right
            word = spaced[left:right]
            if _is_acronym(word):
                pieces += (spaced[last:left], word.replace(".", ACRONYM_JOINER))
                last = right
        if pieces:
            pieces.append(spaced[last:])
            spaced = "".join(pieces)
    return spaced.replace(".", " ")


def fold_text(text: str) -> str:
    """Normalize text for matching: NFKC, casefold, acronyms, one space per separator run.

    The result starts and ends with a space, so ``f" {term} " in fold_text(text)`` is a
    whole-word test. Applied to article text and to query terms alike; idempotent.
    Dotted single-letter acronyms lose their dots ("U.S." folds like "US"); other dots,
    like all punctuation, hyphens, dashes and "_", are separators.
    """
    text = unicodedata.normalize("NFKC", text)
    return _collapse(blank_separators(unicodedata.normalize("NFKC", text.casefold())))


def fold_text_and_blanked(text: str) -> tuple[str, str | None]:
    """``fold_text(text)``, and ``blank_separators(text).lower()`` when the same pass gives it.

    For ASCII text NFKC changes nothing and casefolding is lowercasing, which commutes
    with `blank_separators`; so one separator pass serves both the fold and the word
    offsets snippets need (`word_span`), and the fold is the second item collapsed.
    For other text the second item is None.
    """
    if not text.isascii():
        return fold_text(text), None
    lowered = blank_separators(text).lower()
    return _collapse(lowered), lowered


def _collapse(spaced: str) -> str:
    """The folded form of a `blank_separators` result: one space per run, padded.

    In such a result " " is the only whitespace, so this is ``" ".join(spaced.split())``
    padded, without splitting the text into words: 11 against 16 us for an ASCII BBC
    article. The joiners of acronyms' dots are dropped last.
    """
    return _SPACE_RUN_RE.sub(" ", f" {spaced} ").replace(ACRONYM_JOINER, "")


def word_span(
    text: str, first: int, count: int, blanked: str | None = None
) -> tuple[int, int] | None:
    """Offsets in `text` of words `first` .. `first + count - 1` of `fold_text(text)`.

    Exact whenever NFKC and casefolding do not move word boundaries, which holds for
    nearly all news text; callers check the result (e.g. by folding the span). Maps a
    match found in folded text back to the original text, for snippets. Pass
    `blanked` (``blank_separators(text)``) when mapping several words of one text.
    """
    spaced = blank_separators(text) if blanked is None else blanked
    rest = spaced.split(None, first)
    if len(rest) <= first:
        return None
    tail = rest[-1]
    start = len(spaced) - len(tail)
    words = tail.split(None, count)
    if len(words) < count:
        return None
    used = tail if len(words) == count else tail[: len(tail) - len(words[-1])]
    return start, start + len(used.rstrip())


def fold_term(text: str) -> str:
    """Fold a query term or phrase: `fold_text` without the padding spaces."""
    return fold_text(text).strip()


class QuerySyntaxError(ValueError):
    """A query that cannot be parsed; the message says where and what was expected.

    `position` is the 0-based offset in the query text, `column` the 1-based column.
    """

    def __init__(self, message: str, position: int) -> None:
        self.position = position
        self.column = position + 1
        self.reason = message
        super().__init__(f"column {self.column}: {message}")


# --- AST -------------------------------------------------------------------------------


def _needs_quotes(text: str) -> bool:
    """Whether a term must be quoted to be read back as one term."""
    return (
        text.upper() in KEYWORDS
        or text.startswith("-")
        or any(ch.isspace() or ch in _QUERY_SPECIAL for ch in text)
    )


@dataclass(frozen=True, slots=True)
class Term:
    """A word or phrase, kept as written; `key` is its folded form used for matching."""

    text: str
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if '"' in self.text:
            raise ValueError(f"a term cannot contain a double quote: {self.text!r}")
        if self.text != self.text.strip():
            raise ValueError(f"a term cannot start or end with whitespace: {self.text!r}")
        key = fold_term(self.text)
        if not key:
            raise ValueError(f"a term needs at least one letter or digit: {self.text!r}")
        object.__setattr__(self, "key", key)


@dataclass(frozen=True, slots=True)
class Not:
    """Negation: true when the operand is false."""

    operand: Query


@dataclass(frozen=True, slots=True)
class And:
    """Conjunction of two or more operands."""

    operands: tuple[Query, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("And needs at least two operands")


@dataclass(frozen=True, slots=True)
class Or:
    """Disjunction of two or more operands."""

    operands: tuple[Query, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("Or needs at least two operands")


Query = Term | Not | And | Or


# --- tokenizer -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "term", "and", "or", "not", "(", ")", "end"
    text: str
    position: int


def _describe(token: _Token) -> str:
    """Human wording of a token for error messages."""
    if token.kind == "end":
        return "end of query"
    if token.kind == "term":
        return f"term {token.text!r}"
    return f"{token.text!r}"


def _tokenize(text: str) -> Iterator[_Token]:
    """Split query text into tokens; raises QuerySyntaxError on a bad quote or term."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            yield _Token(ch, ch, i)
            i += 1
        elif ch == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise QuerySyntaxError("unterminated quote: expected a closing '\"'", i)
            phrase = text[i + 1 : end].strip()
            if not fold_term(phrase):
                raise QuerySyntaxError("expected letters or digits inside the quotes", i)
            yield _Token("term", phrase, i)
            i = end + 1
        elif ch == "-" and i + 1 < n and not text[i + 1].isspace():
            yield _Token("not", "-", i)
            i += 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in _QUERY_SPECIAL:
                i += 1
            word = text[start:i]
            upper = word.upper()
            if upper in KEYWORDS:
                yield _Token(upper.lower(), word, start)
            elif not fold_term(word):
                raise QuerySyntaxError(f"term {word!r} has no letters or digits", start)
            else:
                yield _Token("term", word, start)
    yield _Token("end", "", n)


# --- parser ----------------------------------------------------------------------------


class _Parser:
    """Recursive-descent parser over the token stream, with a depth limit."""

    def __init__(self, text: str) -> None:
        self.tokens = list(_tokenize(text))
        self.index = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def parse(self) -> Query:
        if self.current.kind == "end":
            raise QuerySyntaxError('empty query: expected a word or a "quoted phrase"', 0)
        query = self.or_expr(0)
        token = self.current
        if token.kind == ")":
            raise QuerySyntaxError("unbalanced ')': no matching '('", token.position)
        if token.kind != "end":  # pragma: no cover - and_expr consumes every other token
            raise QuerySyntaxError(f"unexpected {_describe(token)}", token.position)
        return query

    def or_expr(self, depth: int) -> Query:
        operands = [self.and_expr(depth)]
        while self.current.kind == "or":
            operator = self.advance()
            operands.append(self.and_expr(depth, after=operator))
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expr(self, depth: int, after: _Token | None = None) -> Query:
        operands = [self.unary(depth, after)]
        while self.current.kind in ("and", "not", "term", "("):
            operator = self.advance() if self.current.kind == "and" else None
            operands.append(self.unary(depth, operator))
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def unary(self, depth: int, after: _Token | None) -> Query:
        if self.current.kind == "not":
            operator = self.advance()
            self._check_depth(depth + 1, operator)
            return Not(self.unary(depth + 1, operator))
        return self.primary(depth, after)

    def primary(self, depth: int, after: _Token | None) -> Query:
        token = self.current
        if token.kind == "term":
            self.advance()
            return Term(token.text)
        if token.kind == "(":
            self.advance()
            self._check_depth(depth + 1, token)
            if self.current.kind == ")":
                raise QuerySyntaxError(
                    "empty parentheses: expected a term inside", self.current.position
                )
            inner = self.or_expr(depth + 1)
            if self.current.kind != ")":
                raise QuerySyntaxError(
                    f"missing ')' to close the '(' at column {token.position + 1}, "
                    f"found {_describe(self.current)}",
                    self.current.position,
                )
            self.advance()
            return inner
        context = f" after {after.text!r}" if after is not None else ""
        raise QuerySyntaxError(
            f"expected a term or '('{context}, found {_describe(token)}", token.position
        )

    @staticmethod
    def _check_depth(depth: int, token: _Token) -> None:
        if depth > MAX_DEPTH:
            raise QuerySyntaxError(f"nesting deeper than {MAX_DEPTH} levels", token.position)


def parse_query(text: str) -> Query:
    """Parse query text into an immutable AST; raise QuerySyntaxError saying where it fails."""
    return _Parser(text).parse()


# --- printing --------------------------------------------------------------------------


def _format(query: Query, parent: str) -> str:
    """Print `query` as an operand of `parent` ("or", "and", "not" or "top")."""
    if isinstance(query, Term):
        return f'"{query.text}"' if _needs_quotes(query.text) else query.text
    if isinstance(query, Not):
        return f"NOT {_format(query.operand, 'not')}"
    if isinstance(query, And):
        text = " AND ".join(_format(op, "and") for op in query.operands)
        return f"({text})" if parent in ("and", "not") else text
    text = " OR ".join(_format(op, "or") for op in query.operands)
    return f"({text})" if parent != "top" else text


def format_query(query: Query) -> str:
    """Print the canonical text of a query: explicit AND, minimal parentheses, round-trips."""
    return _format(query, "top")


# --- inspection and evaluation ---------------------------------------------------------


def _walk_terms(query: Query, negated: bool) -> Iterator[tuple[Term, bool]]:
    """Yield every term with whether it sits under an odd number of NOTs."""
    if isinstance(query, Term):
        yield query, negated
    elif isinstance(query, Not):
        yield from _walk_terms(query.operand, not negated)
    else:
        for operand in query.operands:
            yield from _walk_terms(operand, negated)


def query_terms(query: Query) -> frozenset[str]:
    """All folded terms of a query (what a text must be searched for)."""
    return frozenset(term.key for term, _ in _walk_terms(query, False))


def positive_terms(query: Query) -> dict[str, str]:
    """Folded key -> spelling (first in query order) of terms not under an odd number of NOTs.

    These are the terms that can make a query true by being present, so they are the
    ones reported as "matched" and the ones that make a rule a candidate.
    """
    result: dict[str, str] = {}
    for term, negated in _walk_terms(query, False):
        if not negated:
            result.setdefault(term.key, term.text)
    return result


def evaluate(query: Query, present: Callable[[str], bool] | set[str] | frozenset[str]) -> bool:
    """Evaluate a query given which folded terms are present (a set or a predicate)."""
    test: Callable[[str], bool] = (
        present.__contains__ if isinstance(present, set | frozenset) else present
    )
    return _evaluate(query, test)


def _evaluate(query: Query, test: Callable[[str], bool]) -> bool:
    if isinstance(query, Term):
        return test(query.key)
    if isinstance(query, Not):
        return not _evaluate(query.operand, test)
    if isinstance(query, And):
        return all(_evaluate(op, test) for op in query.operands)
    return any(_evaluate(op, test) for op in query.operands)


def match_query(query: Query, text: str) -> tuple[bool, tuple[str, ...]]:
    """Test one query against one text: (matches, matched terms in order of occurrence).

    For single tests such as ``rules test``; many rules at once go through
    `tasks.rules.CompiledRules`. Matched terms are the present non-negated terms, spelled
    as in the query.
    """
    folded = fold_text(text)
    positions = {key: folded.find(f" {key} ") for key in query_terms(query)}
    matches = _evaluate(query, lambda key: positions[key] >= 0)
    if not matches:
        return False, ()
    found = [(positions[key], spelling) for key, spelling in positive_terms(query).items()]
    return True, tuple(spelling for pos, spelling in sorted(found) if pos >= 0)
