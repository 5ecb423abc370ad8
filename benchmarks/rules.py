"""Keyword-rule matching and topic tagging throughput on real news text.

Matches the 2,225 BBC News articles of ``corpora/news/bbc`` against generated rule sets
of 10, 1,000 and 10,000 rules with `tasks.rules.CompiledRules`, and, in the same run and
on the same rules, against two obvious baselines:

- per-rule regex: every term of every rule is a compiled ``\\bterm\\b`` regex (case-
  insensitive, ``\\W+`` between words), and every rule is evaluated on every article;
- one alternation: one compiled ``\\b(?:t1|t2|...)\\b`` regex per rule set finds the
  present terms in one pass (longest-first; it cannot report overlapping terms), then
  every rule is evaluated over that set.

Rules are drawn with a seeded RNG from the corpus's own vocabulary: words that occur in
at least two articles but in at most 5% of them (names, places, subjects — what people
watch for), and 2-3 word phrases cut from the articles (no word in over 20% of them);
combined as single words, phrases, AND, OR, NOT and a parenthesised mix. Baselines are
time-boxed and measured on the leading articles only.

``matches`` is matches (alerts) per article: with 10,000 such rules every article matches
about 40 of them, so part of the cost grows with the output, not with the rule count;
``us/match`` divides the time per article by its matches, and ``--max-doc-fraction 0.005``
gives more selective rules. A match's snippet is computed when first read (all of an
article's snippets at once), so ``newswatch/s`` is matching alone, as for matches that
storage then drops (stories already alerted), and ``+snippets/s`` also reads every
snippet, as for matches that become alerts. Also reports `tasks.topics.TopicTagger` with
``seeds/topics.toml``.

    python benchmarks/rules.py [--corpora ../shared/corpora] [--json PATH] [--seed N]
                               [--max-doc-fraction F]

The corpus is read in place and never copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tasks.query import Query, evaluate, fold_text, parse_query, query_terms  # noqa: E402
from tasks.rules import CompiledRules, RuleSpec  # noqa: E402
from tasks.topics import TopicTagger, load_topics  # noqa: E402

DEFAULT_CORPORA = REPO_ROOT.parent / "shared" / "corpora"
TOPICS_FILE = REPO_ROOT / "seeds" / "topics.toml"
RULE_COUNTS = (10, 1_000, 10_000)
MAX_DOC_FRACTION = 0.05
MIN_DOC_COUNT = 2
PHRASE_WORD_MAX_FRACTION = 0.2
BASELINE_SECONDS = 3.0
BASELINE_MIN_TEXTS = 20
AGREEMENT_TEXTS = 200

Article = tuple[str, str]  # (title, text)


@dataclass(frozen=True, slots=True)
class Row:
    """Results for one rule-set size."""

    rules: int
    terms: int
    build_seconds: float
    newswatch_texts_per_s: float
    newswatch_us_per_text: float
    newswatch_us_per_match: float | None
    with_snippets_texts_per_s: float
    alternation_texts_per_s: float
    per_rule_regex_texts_per_s: float
    speedup_vs_alternation: float
    speedup_vs_per_rule_regex: float
    matches_per_text: float
    agreement_with_per_rule_regex: float


def load_bbc(corpora: Path) -> list[Article]:
    """Read the BBC articles: first line is the title, the rest the text."""
    files = sorted((corpora / "news" / "bbc").glob("*/*.txt"))
    if not files:
        raise SystemExit(f"no BBC articles under {corpora / 'news' / 'bbc'}")
    articles = []
    for path in files:
        # One file has a stray Latin-1 byte (see the corpus README).
        raw = path.read_bytes().decode("utf-8", errors="replace")
        title, _, text = raw.strip().partition("\n")
        articles.append((title.strip(), text.strip()))
    return articles


def make_queries(
    articles: Sequence[Article], count: int, rng: random.Random, max_doc_fraction: float
) -> list[str]:
    """Generate `count` query strings from the corpus vocabulary."""
    docs = [fold_text(f"{title} {text}").split() for title, text in articles]
    doc_freq: Counter[str] = Counter()
    for words in docs:
        doc_freq.update(set(words))
    limit = max_doc_fraction * len(docs)
    vocabulary = sorted(
        w
        for w, n in doc_freq.items()
        if MIN_DOC_COUNT <= n <= limit and len(w) >= 3 and not w.isdigit()
    )

    def word() -> str:
        return rng.choice(vocabulary)

    common = PHRASE_WORD_MAX_FRACTION * len(docs)

    def phrase() -> str:
        # A run of 2-3 words from an article with no function word ("of the" is not a
        # phrase anyone watches for): every word in at most 20% of the articles.
        while True:
            words = rng.choice(docs)
            size = rng.choice((2, 3))
            start = rng.randrange(max(1, len(words) - size))
            cut = words[start : start + size]
            if len(cut) == size and all(doc_freq[w] <= common for w in cut):
                return '"' + " ".join(cut) + '"'

    def term() -> str:
        return word() if rng.random() < 0.7 else phrase()

    shapes: list[tuple[float, Callable[[], str]]] = [
        (0.30, word),
        (0.15, phrase),
        (0.20, lambda: f"{term()} AND {term()}"),
        (0.15, lambda: f"{term()} OR {term()} OR {term()}"),
        (0.10, lambda: f"{term()} NOT {term()}"),
        (0.10, lambda: f"({term()} OR {term()}) {term()} -{term()}"),
    ]
    weights = [w for w, _ in shapes]
    makers = [m for _, m in shapes]
    return [rng.choices(makers, weights)[0]() for _ in range(count)]


def term_regex(key: str) -> re.Pattern[str]:
    """The obvious regex for a term: word boundaries, any non-word run between words."""
    return re.compile(r"\b" + r"\W+".join(map(re.escape, key.split())) + r"\b", re.IGNORECASE)


def per_rule_regex(queries: Sequence[Query]) -> Callable[[str, str], list[int]]:
    """Baseline: a regex per term of each rule, every rule evaluated on every article."""
    compiled = [(q, {key: term_regex(key) for key in query_terms(q)}) for q in queries]

    def match(title: str, text: str) -> list[int]:
        whole = f"{title}\n{text}"
        return [
            i
            for i, (q, regexes) in enumerate(compiled)
            if evaluate(q, lambda key, r=regexes: r[key].search(whole) is not None)  # type: ignore[misc]
        ]

    return match


def alternation(queries: Sequence[Query]) -> Callable[[str, str], list[int]]:
    """Baseline: one alternation regex finds present terms, then every rule is evaluated."""
    keys = sorted({k for q in queries for k in query_terms(q)}, key=lambda k: (-len(k), k))
    by_form = {k: k for k in keys}
    body = "|".join(r"\W+".join(map(re.escape, k.split())) for k in keys)
    pattern = re.compile(rf"\b(?:{body})\b", re.IGNORECASE)

    def match(title: str, text: str) -> list[int]:
        found = {m.group(0) for m in pattern.finditer(f"{title}\n{text}")}
        present = {by_form.get(" ".join(re.split(r"\W+", f.casefold())), "") for f in found}
        return [i for i, q in enumerate(queries) if evaluate(q, present)]

    return match


def throughput(
    fn: Callable[[str, str], object], articles: Sequence[Article], budget: float | None
) -> float:
    """Articles per second; with a budget, stop after `budget` seconds (min 20 articles)."""
    start = time.perf_counter()
    done = 0
    for title, text in articles:
        fn(title, text)
        done += 1
        if (
            budget is not None
            and done >= BASELINE_MIN_TEXTS
            and time.perf_counter() - start > budget
        ):
            break
    return done / (time.perf_counter() - start)


def bench_rules(
    articles: Sequence[Article], count: int, rng: random.Random, max_doc_fraction: float
) -> Row:
    """Measure one rule-set size with newswatch and both baselines."""
    texts = make_queries(articles, count, rng, max_doc_fraction)
    specs = [RuleSpec(i, q) for i, q in enumerate(texts)]
    start = time.perf_counter()
    compiled = CompiledRules(specs)
    build = time.perf_counter() - start
    queries = [parse_query(q) for q in texts]

    def ours(title: str, text: str) -> list[int]:
        return [m.rule_id for m in compiled.match(title, text, ())]

    def ours_with_snippets(title: str, text: str) -> list[str]:
        return [m.snippet for m in compiled.match(title, text, ())]

    throughput(ours_with_snippets, articles[:50], None)  # warm-up
    total_matches = sum(len(ours(t, x)) for t, x in articles)
    ours_rate = throughput(ours, articles, None)
    snippets_rate = throughput(ours_with_snippets, articles, None)
    matches = total_matches / len(articles)
    regex_fn = per_rule_regex(queries)
    alt_fn = alternation(queries)
    regex_rate = throughput(regex_fn, articles, BASELINE_SECONDS)
    alt_rate = throughput(alt_fn, articles, BASELINE_SECONDS)

    # How often the obvious regex and newswatch agree on which rules match (they differ
    # by design on "U.S." vs "US", "_" and Unicode folding).
    sample = articles[: min(AGREEMENT_TEXTS, max(5, int(regex_rate * 2)))]
    agree = sum(ours(t, x) == regex_fn(t, x) for t, x in sample) / len(sample)
    return Row(
        rules=count,
        terms=compiled.term_count,
        build_seconds=round(build, 3),
        newswatch_texts_per_s=round(ours_rate, 1),
        newswatch_us_per_text=round(1e6 / ours_rate, 1),
        newswatch_us_per_match=round(1e6 / ours_rate / matches, 2) if matches else None,
        with_snippets_texts_per_s=round(snippets_rate, 1),
        alternation_texts_per_s=round(alt_rate, 1),
        per_rule_regex_texts_per_s=round(regex_rate, 1),
        speedup_vs_alternation=round(ours_rate / alt_rate, 1),
        speedup_vs_per_rule_regex=round(ours_rate / regex_rate, 1),
        matches_per_text=round(matches, 2),
        agreement_with_per_rule_regex=round(agree, 3),
    )


def bench_topics(articles: Sequence[Article]) -> dict[str, float]:
    """Topic tagging throughput with the shipped topics file."""
    tagger = TopicTagger(load_topics(TOPICS_FILE))
    throughput(tagger.tag, articles[:50], None)
    rate = throughput(tagger.tag, articles, None)
    tagged = sum(bool(tagger.tag(t, x)) for t, x in articles)
    return {
        "topics": len(tagger.topics),
        "texts_per_s": round(rate, 1),
        "tagged_fraction": round(tagged / len(articles), 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print a table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument(
        "--max-doc-fraction",
        type=float,
        default=MAX_DOC_FRACTION,
        help="rule words occur in at most this fraction of articles (default 0.05); "
        "smaller values give more selective rules and fewer matches per article",
    )
    args = parser.parse_args(argv)

    articles = load_bbc(args.corpora)
    words = sum(len(x.split()) for _, x in articles) / len(articles)
    print(f"{len(articles)} BBC articles, {words:.0f} words on average")
    rng = random.Random(args.seed)
    rows = [bench_rules(articles, n, rng, args.max_doc_fraction) for n in RULE_COUNTS]
    topics = bench_topics(articles)

    header = (
        f"{'rules':>7} {'terms':>7} {'newswatch/s':>12} {'us/text':>8} {'matches':>8} "
        f"{'us/match':>9} {'+snippets/s':>12} {'alternation/s':>14} {'regex/rule/s':>13} "
        f"{'x alt':>6} {'x regex':>8} {'agree':>6}"
    )
    print(header)
    for r in rows:
        # Below one match per text, time per match says little: shown as "-".
        per_match = (
            f"{r.newswatch_us_per_match:.2f}"
            if r.newswatch_us_per_match is not None and r.matches_per_text >= 1
            else "-"
        )
        print(
            f"{r.rules:>7} {r.terms:>7} {r.newswatch_texts_per_s:>12,.0f} "
            f"{r.newswatch_us_per_text:>8.1f} {r.matches_per_text:>8} {per_match:>9} "
            f"{r.with_snippets_texts_per_s:>12,.0f} "
            f"{r.alternation_texts_per_s:>14,.0f} {r.per_rule_regex_texts_per_s:>13,.1f} "
            f"{r.speedup_vs_alternation:>6} {r.speedup_vs_per_rule_regex:>8} "
            f"{r.agreement_with_per_rule_regex:>6}"
        )
    first, last = rows[0], rows[-1]
    cost = first.newswatch_texts_per_s / last.newswatch_texts_per_s
    cost_snippets = first.with_snippets_texts_per_s / last.with_snippets_texts_per_s
    growth = last.newswatch_us_per_text - first.newswatch_us_per_text
    extra = last.matches_per_text - first.matches_per_text
    print(
        f"{last.rules:,} rules cost {cost:.2f}x the time of {first.rules:,} rules "
        f"({cost_snippets:.2f}x with every snippet read); they also find "
        f"{last.matches_per_text:g} matches per text instead of {first.matches_per_text:g}: "
        f"+{growth:.0f} us per text, at most {growth / extra:.2f} us per extra match"
        if extra > 0
        else f"{last.rules:,} rules cost {cost:.2f}x the time of {first.rules:,} rules"
    )
    print(
        f"topic tagging ({topics['topics']:.0f} topics): {topics['texts_per_s']:,.0f} texts/s, "
        f"{topics['tagged_fraction']:.1%} of BBC articles tagged"
    )

    if args.json is not None:
        result = {
            "corpus": "news/bbc",
            "articles": len(articles),
            "mean_words": round(words, 1),
            "seed": args.seed,
            "max_doc_fraction": args.max_doc_fraction,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "rules": [asdict(r) for r in rows],
            "cost_10000_vs_10_rules": round(cost, 2),
            "cost_10000_vs_10_rules_with_snippets": round(cost_snippets, 2),
            "topic_tagging": topics,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
