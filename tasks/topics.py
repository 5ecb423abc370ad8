"""Topics as data: load them from TOML and tag articles with them. Pure except `load_topics`.

A topics file is a list of ``[[topic]]`` tables::

    [[topic]]
    slug = "troop-cost-sharing"          # ^[a-z0-9-]+$, unique in the file
    name = "US troop cost-sharing"
    description = "Who pays for stationing US forces abroad."   # optional
    threshold = 3.5                      # tag when score >= threshold; > 0
    exclusions = ["health insurance"]    # optional; any of these vetoes the topic

    [topic.phrases]                      # phrase = weight (a number; may be negative)
    "cost sharing" = 3
    "us troops" = 0.5

Scoring: phrases are folded like query terms (`tasks.query.fold_text`: case, punctuation
and hyphens do not matter, word boundaries do), and

    score = sum(weight * min(count, PHRASE_COUNT_CAP)) over the topic's phrases found

An exclusion vetoes the topic outright rather than subtracting: an exclusion says "this is
a different subject that shares our words" (health-insurance cost sharing), and no amount
of shared vocabulary should override that. For a soft penalty, give a phrase a negative
weight. Overlapping phrases ("trilateral" and "trilateral drills") both count: the longer
one is extra evidence on top of the shorter.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import ahocorasick_rs

from tasks.models import TopicTag
from tasks.query import fold_text
from tasks.rules import fold_article

__all__ = ["PHRASE_COUNT_CAP", "Topic", "TopicTagger", "TopicsFileError", "load_topics"]

#: A phrase counts at most this many times. A second mention shows the story dwells on
#: the subject; further repeats mostly say the story is long, and without a cap one
#: phrase repeated ten times would outweigh several distinct phrases.
PHRASE_COUNT_CAP = 2

SLUG_RE = re.compile(r"^[a-z0-9-]+$")
_TOPIC_KEYS = frozenset({"slug", "name", "description", "threshold", "phrases", "exclusions"})


class TopicsFileError(ValueError):
    """A topics file that cannot be read or is invalid; the message names file and problem."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True, slots=True)
class Topic:
    """One topic: weighted phrases, exclusions and the score threshold for tagging."""

    slug: str
    name: str
    description: str
    threshold: float
    phrases: tuple[tuple[str, float], ...]
    exclusions: tuple[str, ...] = ()


def _is_number(value: object) -> TypeGuard[int | float]:
    """A finite int or float, not a bool (TOML ``true`` is not a weight)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _topic_from_table(path: Path | str, number: int, table: Any) -> Topic:
    """Validate one ``[[topic]]`` table; `number` is its 1-based position in the file."""
    where = f"topic #{number}"
    if not isinstance(table, dict):
        raise TopicsFileError(path, f"{where}: expected a table")
    slug = table.get("slug")
    if not isinstance(slug, str) or not SLUG_RE.match(slug):
        raise TopicsFileError(
            path,
            f"{where}: slug must match {SLUG_RE.pattern} (lowercase, digits, '-'), got {slug!r}",
        )
    where = f"topic {slug!r}"
    unknown = sorted(set(table) - _TOPIC_KEYS)
    if unknown:
        raise TopicsFileError(
            path,
            f"{where}: unknown key(s) {', '.join(unknown)}; "
            f"expected {', '.join(sorted(_TOPIC_KEYS))}",
        )
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TopicsFileError(path, f"{where}: name must be a non-empty string")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise TopicsFileError(path, f"{where}: description must be a string")
    threshold = table.get("threshold")
    if not _is_number(threshold) or threshold <= 0:
        raise TopicsFileError(path, f"{where}: threshold must be a number > 0, got {threshold!r}")

    raw_phrases = table.get("phrases")
    if not isinstance(raw_phrases, dict) or not raw_phrases:
        raise TopicsFileError(path, f'{where}: needs a [topic.phrases] table of "phrase" = weight')
    folded_seen: dict[str, str] = {}
    phrases: list[tuple[str, float]] = []
    for phrase, weight in raw_phrases.items():
        if not _is_number(weight) and phrase in _TOPIC_KEYS:
            raise TopicsFileError(
                path,
                f"{where}: {phrase!r} ended up as a phrase: put the {phrase} key "
                "before the [topic.phrases] table",
            )
        if not _is_number(weight):
            raise TopicsFileError(
                path, f"{where}: weight of phrase {phrase!r} must be a number, got {weight!r}"
            )
        _check_phrase(path, where, phrase, folded_seen)
        phrases.append((phrase, float(weight)))

    raw_exclusions = table.get("exclusions", [])
    if not isinstance(raw_exclusions, list) or not all(isinstance(e, str) for e in raw_exclusions):
        raise TopicsFileError(path, f"{where}: exclusions must be a list of strings")
    for exclusion in raw_exclusions:
        _check_phrase(path, where, exclusion, folded_seen)

    return Topic(
        slug=slug,
        name=name.strip(),
        description=description.strip(),
        threshold=float(threshold),
        phrases=tuple(phrases),
        exclusions=tuple(raw_exclusions),
    )


def _check_phrase(path: Path | str, where: str, phrase: str, seen: dict[str, str]) -> None:
    """Refuse phrases with no letters/digits and phrases that fold like an earlier one."""
    key = fold_text(phrase).strip()
    if not key:
        raise TopicsFileError(path, f"{where}: phrase {phrase!r} has no letters or digits")
    if key in seen:
        raise TopicsFileError(
            path,
            f"{where}: phrases {seen[key]!r} and {phrase!r} match the same text "
            "(case, punctuation and hyphens are ignored)",
        )
    seen[key] = phrase


def load_topics(path: Path | str) -> list[Topic]:
    """Read and validate a topics TOML file; raise TopicsFileError naming file and problem."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise TopicsFileError(path, f"cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TopicsFileError(path, f"invalid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"topic"})
    if unknown:
        raise TopicsFileError(
            path, f"unknown top-level key(s) {', '.join(unknown)}; expected [[topic]] tables"
        )
    tables = data.get("topic")
    if not isinstance(tables, list) or not tables:
        raise TopicsFileError(path, "no topics: expected one or more [[topic]] tables")
    topics: list[Topic] = []
    slugs: set[str] = set()
    for number, table in enumerate(tables, start=1):
        topic = _topic_from_table(path, number, table)
        if topic.slug in slugs:
            raise TopicsFileError(path, f"duplicate topic slug {topic.slug!r}")
        slugs.add(topic.slug)
        topics.append(topic)
    return topics


class TopicTagger:
    """Tags articles with topics; all phrases of all topics in one Aho–Corasick automaton."""

    def __init__(self, topics: Sequence[Topic], cap: int = PHRASE_COUNT_CAP) -> None:
        """Compile the topics; `cap` bounds how often one phrase counts."""
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        slugs = [topic.slug for topic in topics]
        if len(set(slugs)) != len(slugs):
            raise ValueError("topic slugs must be unique")
        self.topics: tuple[Topic, ...] = tuple(topics)
        self.cap = cap
        # Per distinct folded phrase: (topic index, phrase as written, weight); weight None
        # marks an exclusion.
        self._entries: list[list[tuple[int, str, float | None]]] = []
        ids: dict[str, int] = {}

        def add(key: str, entry: tuple[int, str, float | None]) -> None:
            if key not in ids:
                ids[key] = len(self._entries)
                self._entries.append([])
            self._entries[ids[key]].append(entry)

        for index, topic in enumerate(self.topics):
            for phrase, weight in topic.phrases:
                add(fold_text(phrase).strip(), (index, phrase, weight))
            for exclusion in topic.exclusions:
                add(fold_text(exclusion).strip(), (index, exclusion, None))
        self._automaton: ahocorasick_rs.AhoCorasick | None = None
        if ids:
            # Pattern i is phrase id i.
            self._automaton = ahocorasick_rs.AhoCorasick([f" {key} " for key in ids])

    def _count(self, title: str, text: str) -> dict[int, int]:
        """Occurrences of each phrase id in the folded title and text (one pass).

        The fold is `tasks.rules.fold_article`'s, which rule matching of the same article
        then reuses instead of folding again.
        """
        counts: dict[int, int] = {}
        if self._automaton is not None:
            joined = fold_article(title, text).joined
            for phrase_id, _, _ in self._automaton.find_matches_as_indexes(
                joined, overlapping=True
            ):
                counts[phrase_id] = counts.get(phrase_id, 0) + 1
        return counts

    def tag(self, title: str, text: str) -> list[TopicTag]:
        """Topics whose score reaches their threshold, highest score first.

        `text` is the cleaned story text (no related-article lists). Each tag carries its
        score and the phrases that fired, largest contribution first, for explanations.
        """
        counts = self._count(title, text)
        scores: dict[int, float] = {}
        fired: dict[int, list[tuple[float, int, str]]] = {}
        vetoed: set[int] = set()
        for phrase_id, count in counts.items():
            for topic_index, phrase, weight in self._entries[phrase_id]:
                if weight is None:
                    vetoed.add(topic_index)
                    continue
                contribution = weight * min(count, self.cap)
                scores[topic_index] = scores.get(topic_index, 0.0) + contribution
                fired.setdefault(topic_index, []).append((-contribution, phrase_id, phrase))
        tags: list[TopicTag] = []
        for topic_index, score in scores.items():
            topic = self.topics[topic_index]
            if topic_index in vetoed or score < topic.threshold:
                continue
            phrases = tuple(phrase for _, _, phrase in sorted(fired[topic_index]))
            tags.append(TopicTag(slug=topic.slug, score=round(score, 4), phrases=phrases))
        tags.sort(key=lambda tag: (-tag.score, tag.slug))
        return tags

    def scores(self, title: str, text: str) -> dict[str, float]:
        """Raw score of every topic (vetoed ones included), for tuning thresholds."""
        counts = self._count(title, text)
        result = {topic.slug: 0.0 for topic in self.topics}
        for phrase_id, count in counts.items():
            for topic_index, _, weight in self._entries[phrase_id]:
                if weight is not None:
                    result[self.topics[topic_index].slug] += weight * min(count, self.cap)
        return {slug: round(score, 4) for slug, score in result.items()}
