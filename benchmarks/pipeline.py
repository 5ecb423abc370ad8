"""The pipeline alone (no network), on one core: newswatch beside the obvious stack, same data.

Input: RSS 2.0 documents of 50 entries each, built in memory from the BBC News corpus
(``corpora/news/bbc``): the 2,225 real articles, then unique sentence mixes (see
``benchmarks/_common.py``); 10,000 entries (``--quick``: 2,000). 1,000 keyword rules
drawn with a seeded RNG from the corpus's own vocabulary (words in 2 to 5% of the
articles, two-word phrases cut from articles) as single terms, phrases, AND, OR, AND NOT
and a parenthesised mix.

newswatch, per batch of 4 documents (200 entries, one transaction), each stage timed,
stage by stage over the batch as `tasks.pipeline.prepare` runs them:
parse (`tasks.parse.parse_feed`) -> normalize (`normalize_entry`) -> fingerprint ->
tag (`TopicTagger`) -> match (`CompiledRules`, 1,000 rules) -> dedup look-up
(`storage.dedup.DedupLookup.find` and `prefetch`, timed inside `ingest`, plus the
probe before it) -> store (the rest of `ingest`). Look-ups run as in `newswatch poll`:
the articles not merged into lsh_band yet (all of them, below 10,000 stored) are found in
the process's in-memory `storage.recentindex.RecentIndex`, as they are by a Celery task;
`benchmarks/lookup.py` measures look-ups in lsh_band.
SQLite's full-text index is written off the ingest path (`storage.search`); its cost is
timed separately, once for all stored articles, and printed beside the stages.
newswatch runs with the garbage-collector thresholds its worker and CLI set
(`worker.gcpolicy`), and once more, on a fresh store, with CPython's defaults.

The obvious stack, same documents and rules: feedparser with its defaults; lxml
``text_content()`` + NFKC + whitespace collapse; datasketch ``MinHash(num_perm=128)``
with one ``update()`` per 3-word shingle and an in-memory ``MinHashLSH(threshold=0.5)``
plus an exact-hash query; one regex per topic phrase; one regex per rule (per AND-clause;
OR-groups are one alternation); sqlmodel rows added and flushed one by one, one commit
per batch. It is time-boxed (``--baseline-seconds``) and measured on the leading entries.

Also records throughput and look-up latency per 1,000 entries against the store size,
for the plot drawn by ``benchmarks/run_all.py``.

    python benchmarks/pipeline.py [--corpora PATH] [--json PATH] [--quick] [--profile]
                                  [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import random
import re
import statistics
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    DEFAULT_CORPORA,
    REPO_ROOT,
    NewsArticle,
    load_bbc,
    machine,
    make_entries,
    rss_document,
    table,
    write_json,
)
from worker.gcpolicy import YOUNG_THRESHOLD, tune_garbage_collector

ENTRIES = 10_000
QUICK_ENTRIES = 2_000
PER_DOC = 50
DOCS_PER_BATCH = 4
RULES = 1_000
TOPICS_FILE = REPO_ROOT / "seeds" / "topics.toml"
CPYTHON_GC_THRESHOLDS = (700, 10, 10)
STAGES = ("parse", "normalize", "fingerprint", "tag", "match", "lookup", "store")


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class RuleDef:
    """A generated rule: AND of clauses, each an OR of terms, optionally negated."""

    clauses: tuple[tuple[tuple[str, ...], bool], ...]  # ((terms, negated), ...)

    def query(self) -> str:
        """The rule in newswatch's query language."""

        def term(t: str) -> str:
            return f'"{t}"' if " " in t else t

        parts = []
        for terms, negated in self.clauses:
            text = " OR ".join(term(t) for t in terms)
            if len(terms) > 1:
                text = f"({text})"
            parts.append(f"NOT {text}" if negated else text)
        return " AND ".join(parts)


def make_rules(articles: Sequence[NewsArticle], count: int, seed: int = 11) -> list[RuleDef]:
    """`count` rules from the corpus vocabulary (see module docstring)."""
    doc_freq: Counter[str] = Counter()
    for a in articles:
        doc_freq.update(
            {w.lower() for w in re.findall(r"[A-Za-z]{4,}", a.title + " " + " ".join(a.paragraphs))}
        )
    lo, hi = 2, max(3, len(articles) // 20)
    words = sorted(w for w, n in doc_freq.items() if lo <= n <= hi)
    rng = random.Random(seed)

    def phrase() -> str:
        a = articles[rng.randrange(len(articles))]
        tokens = re.findall(r"[A-Za-z]{3,}", " ".join(a.paragraphs))
        if len(tokens) < 3:
            return rng.choice(words)
        i = rng.randrange(len(tokens) - 1)
        return f"{tokens[i].lower()} {tokens[i + 1].lower()}"

    def word() -> str:
        return rng.choice(words)

    rules = []
    for i in range(count):
        kind = i % 6
        if kind == 0:
            clauses: tuple[tuple[tuple[str, ...], bool], ...] = (((word(),), False),)
        elif kind == 1:
            clauses = (((phrase(),), False),)
        elif kind == 2:
            clauses = (((word(),), False), ((word(),), False))
        elif kind == 3:
            clauses = (((word(), word(), phrase()), False),)
        elif kind == 4:
            clauses = (((word(),), False), ((word(),), True))
        else:
            clauses = (((word(), phrase()), False), ((word(),), False), ((word(),), True))
        rules.append(RuleDef(clauses))
    return rules


# --------------------------------------------------------------------------- data


def make_documents(articles: Sequence[NewsArticle], count: int) -> list[bytes]:
    """RSS documents of PER_DOC entries holding `count` entries in all."""
    entries = make_entries(articles, count)
    docs = []
    for d in range(0, count, PER_DOC):
        items = [(f"e{d + j}", entries[d + j]) for j in range(min(PER_DOC, count - d))]
        docs.append(rss_document(f"Feed {d // PER_DOC}", f"http://bench/{d}", items, d))
    return docs


@dataclass(slots=True)
class Timers:
    """Accumulated seconds per stage."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def report(self, entries: int, wall: float) -> list[dict[str, Any]]:
        """Per stage: seconds, share of the wall time, microseconds per entry."""
        return [
            {
                "stage": s,
                "seconds": self.seconds[s],
                "share": self.seconds[s] / wall,
                "us_per_entry": self.seconds[s] / entries * 1e6,
            }
            for s in STAGES
        ]


# --------------------------------------------------------------------------- newswatch


def run_newswatch(
    docs: list[bytes],
    rules: list[RuleDef],
    url: str,
    *,
    default_gc: bool = False,
) -> dict[str, Any]:
    """The newswatch stages with timers, a transaction per batch; returns the figures.

    `url` is an empty database (a SQLite file, or a fresh PostgreSQL database).
    The collector runs as in a worker (`worker.gcpolicy`), or with CPython's default
    thresholds if `default_gc`. Look-ups run as in `newswatch poll`: a probe of what
    was in lsh_band before the run, then the in-memory `RecentIndex`.
    """
    thresholds = gc.get_threshold()
    try:
        if default_gc:
            gc.set_threshold(*CPYTHON_GC_THRESHOLDS)
        else:
            tune_garbage_collector()
        return _run_newswatch(docs, rules, url)
    finally:
        gc.set_threshold(*thresholds)


def _run_newswatch(docs: list[bytes], rules: list[RuleDef], url: str) -> dict[str, Any]:
    import storage.dedup as dedup_mod
    from storage.articles import PreparedArticle, ingest
    from storage.dedup import probe_candidates, start_recent_index
    from storage.engine import get_engine
    from storage.rules import add_rule
    from storage.schema import upgrade
    from tasks.fingerprint import fingerprint_many
    from tasks.normalize import normalize_entry
    from tasks.parse import parse_feed
    from tasks.pipeline import MatcherCache

    engine = get_engine(url)
    upgrade(engine)
    for i, r in enumerate(rules):
        add_rule(engine, name=f"r{i}", query=r.query(), topics=[], channels=[])
    matchers = MatcherCache(TOPICS_FILE).get(engine)
    timers = Timers()
    lookups: list[float] = []
    original_find = dedup_mod.DedupLookup.find

    def timed_find(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return original_find(*args, **kwargs)
        finally:
            lookups.append(time.perf_counter() - t)

    # A batch's candidates are ranked ahead (`DedupLookup.prefetch`): that is look-up
    # time too, spread evenly over the batch's look-ups.
    ahead: list[float] = []
    original_prefetch = dedup_mod.DedupLookup.prefetch

    def timed_prefetch(*args: Any, **kwargs: Any) -> None:
        t = time.perf_counter()
        try:
            original_prefetch(*args, **kwargs)
        finally:
            ahead.append(time.perf_counter() - t)

    dedup_mod.DedupLookup.find = timed_find  # type: ignore[method-assign]
    dedup_mod.DedupLookup.prefetch = timed_prefetch  # type: ignore[method-assign]
    curve: list[dict[str, Any]] = []
    stored = duplicates = alerts = entries = 0
    clock = time.perf_counter
    t_start = clock()
    index = start_recent_index(engine)
    probing = 0.0  # part of the look-up stage
    mark_t, mark_n, mark_l = t_start, 0, 0
    try:
        for b in range(0, len(docs), DOCS_PER_BATCH):
            prepared = []
            t = clock()
            raws = []
            for d, doc in enumerate(docs[b : b + DOCS_PER_BATCH]):
                raws.extend(parse_feed(doc, url=f"http://bench/{b + d}").entries)
            timers.seconds["parse"] += clock() - t
            # Step by step over the batch, as `tasks.pipeline.prepare` does.
            t0 = clock()
            normalized = [normalize_entry(raw) for raw in raws]
            t1 = clock()
            fingerprints = fingerprint_many([a.text or a.title for a in normalized])
            t2 = clock()
            timers.seconds["normalize"] += t1 - t0
            timers.seconds["fingerprint"] += t2 - t1
            for article, fp in zip(normalized, fingerprints, strict=True):
                t2 = clock()
                tags = tuple(matchers.tagger.tag(article.title, article.text))
                t3 = clock()
                matches = tuple(
                    matchers.rules.match(article.title, article.text, [x.slug for x in tags])
                )
                t4 = clock()
                timers.seconds["tag"] += t3 - t2
                timers.seconds["match"] += t4 - t3
                prepared.append(PreparedArticle(article, fp, tags, matches))
            t = clock()
            prepared = probe_candidates(engine, prepared, through=index.start)
            probed = clock() - t
            probing += probed
            t = clock()
            n_lookups, n_ahead = len(lookups), len(ahead)
            result = ingest(
                engine, origin="bench", feed_id=None, items=prepared, threshold=0.5, index=index
            )
            spent = clock() - t
            ranked = sum(ahead[n_ahead:])
            if len(lookups) > n_lookups:
                share = ranked / (len(lookups) - n_lookups)
                lookups[n_lookups:] = [x + share for x in lookups[n_lookups:]]
            looked = sum(lookups[n_lookups:]) + probed
            if len(lookups) == n_lookups:
                looked += ranked
            timers.seconds["lookup"] += looked
            timers.seconds["store"] += spent - looked
            stored += len(result.stored)
            duplicates += len(result.duplicates)
            alerts += len(result.alerts)
            entries += len(raws)
            if entries - mark_n >= 1000 or b + DOCS_PER_BATCH >= len(docs):
                now = clock()
                window = lookups[mark_l:]
                curve.append(
                    {
                        "store_size": entries,
                        "entries_per_s": (entries - mark_n) / (now - mark_t),
                        "lookup_median_ms": statistics.median(window) * 1e3 if window else None,
                        "lookup_p95_ms": sorted(window)[int(len(window) * 0.95)] * 1e3
                        if window
                        else None,
                    }
                )
                mark_t, mark_n, mark_l = now, entries, len(lookups)
    finally:
        dedup_mod.DedupLookup.find = original_find  # type: ignore[method-assign]
        dedup_mod.DedupLookup.prefetch = original_prefetch  # type: ignore[method-assign]
    wall = clock() - t_start
    # Full-text indexing is kept off the ingest path (storage/search.py) but is still
    # work the store does: timed here on its own, once for everything stored above.
    from storage.search import index_for_search

    t = clock()
    indexed = index_for_search(engine)
    search_index_seconds = clock() - t
    engine.dispose()
    return {
        "search_index_seconds": search_index_seconds,
        "search_index_us_per_entry": search_index_seconds / max(indexed, 1) * 1e6,
        "entries": entries,
        "seconds": wall,
        "entries_per_s": entries / wall,
        "stored": stored,
        "duplicates": duplicates,
        "alerts": alerts,
        "stages": timers.report(entries, wall),
        "lookup_median_ms": statistics.median(lookups) * 1e3 if lookups else None,
        "probe_seconds": probing,
        "curve": curve,
    }


# --------------------------------------------------------------------------- obvious stack


def _term_regex(term: str) -> str:
    return r"\b" + r"\W+".join(re.escape(w) for w in term.split()) + r"\b"


def run_obvious(docs: list[bytes], rules: list[RuleDef], db: Path, budget: float) -> dict[str, Any]:
    """The obvious stack on the leading documents, for at most `budget` seconds."""
    import feedparser
    import lxml.html
    from datasketch import MinHash, MinHashLSH
    from sqlalchemy import JSON, Column
    from sqlmodel import Field, Session, SQLModel, create_engine, select

    from tasks.topics import load_topics

    class ObviousArticle(SQLModel, table=True):
        __tablename__ = "obvious_article"
        id: int | None = Field(default=None, primary_key=True)
        guid: str = Field(index=True)
        title: str = ""
        text: str = ""
        text_hash: str = Field(index=True)
        duplicate_of: int | None = None
        topics: list[str] = Field(default_factory=list, sa_column=Column(JSON))

    class ObviousAlert(SQLModel, table=True):
        __tablename__ = "obvious_alert"
        id: int | None = Field(default=None, primary_key=True)
        rule: int = Field(index=True)
        article_id: int = Field(index=True)
        snippet: str = ""

    engine = create_engine(f"sqlite:///{db}")
    tables = [ObviousArticle.__table__, ObviousAlert.__table__]  # type: ignore[attr-defined]
    SQLModel.metadata.create_all(engine, tables=tables)
    rule_regexes = [
        [
            (re.compile("|".join(_term_regex(t) for t in terms), re.IGNORECASE), negated)
            for terms, negated in r.clauses
        ]
        for r in rules
    ]
    topic_regexes = [
        (
            t.slug,
            t.threshold,
            [(re.compile(_term_regex(p), re.IGNORECASE), w) for p, w in t.phrases],
        )
        for t in load_topics(TOPICS_FILE)
    ]
    lsh = MinHashLSH(threshold=0.5, num_perm=128)
    timers = Timers()
    clock = time.perf_counter
    entries = 0
    t_start = clock()
    for b in range(0, len(docs), DOCS_PER_BATCH):
        t = clock()
        parsed = [feedparser.parse(doc) for doc in docs[b : b + DOCS_PER_BATCH]]
        timers.seconds["parse"] += clock() - t
        with Session(engine) as session:
            for feed in parsed:
                for e in feed.entries:
                    t0 = clock()
                    html = e.get("summary", "")
                    text = lxml.html.fromstring(html).text_content() if html.strip() else ""
                    text = " ".join(unicodedata.normalize("NFKC", text).split())
                    title = e.get("title", "")
                    t1 = clock()
                    words = re.findall(r"\w+", text.lower())
                    m = MinHash(num_perm=128)
                    for i in range(max(1, len(words) - 2)):
                        m.update(" ".join(words[i : i + 3]).encode())
                    digest = hashlib.sha256(" ".join(words).encode()).hexdigest()
                    t2 = clock()
                    full = f"{title}\n{text}"
                    topics = []
                    for slug, threshold, phrases in topic_regexes:
                        score = sum(w for rx, w in phrases if rx.search(full))
                        if score >= threshold:
                            topics.append(slug)
                    t3 = clock()
                    hits = [
                        i
                        for i, clauses in enumerate(rule_regexes)
                        if all(bool(rx.search(full)) != neg for rx, neg in clauses)
                    ]
                    t4 = clock()
                    exact = session.exec(
                        select(ObviousArticle.id).where(ObviousArticle.text_hash == digest)
                    ).first()
                    near = lsh.query(m) if exact is None else []
                    t5 = clock()
                    row = ObviousArticle(
                        guid=e.get("id", ""),
                        title=title,
                        text=text,
                        text_hash=digest,
                        duplicate_of=exact or (int(near[0]) if near else None),
                        topics=topics,
                    )
                    session.add(row)
                    session.flush()
                    for rule in hits:
                        session.add(ObviousAlert(rule=rule, article_id=row.id, snippet=text[:200]))
                        session.flush()
                    lsh.insert(str(row.id), m)
                    t6 = clock()
                    for stage, (a, z) in zip(
                        STAGES[1:],
                        ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)),
                        strict=True,
                    ):
                        timers.seconds[stage] += z - a
                    entries += 1
            t = clock()
            session.commit()
            timers.seconds["store"] += clock() - t
        if clock() - t_start > budget:
            break
    wall = clock() - t_start
    engine.dispose()
    return {
        "entries": entries,
        "seconds": wall,
        "entries_per_s": entries / wall,
        "stages": timers.report(entries, wall),
    }


# --------------------------------------------------------------------------- main


def _profile(fn: Callable[[], Any]) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.runcall(fn)
    pstats.Stats(prof).sort_stats("cumulative").print_stats(35)


def main(argv: list[str] | None = None) -> int:
    """Run both stacks on the same documents, print the tables, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_ENTRIES:,} entries")
    ap.add_argument("--entries", type=int, default=None)
    ap.add_argument("--baseline-seconds", type=float, default=20.0)
    ap.add_argument("--profile", action="store_true", help="cProfile the newswatch run")
    ap.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="postgresql: also run newswatch on a throwaway PostgreSQL cluster",
    )
    args = ap.parse_args(argv)

    articles = load_bbc(args.corpora)
    count = args.entries or (QUICK_ENTRIES if args.quick else ENTRIES)
    docs = make_documents(articles, count)
    rules = make_rules(articles, RULES)
    print(f"pipeline: {count:,} entries in {len(docs)} documents, {len(rules):,} rules, one core")
    with tempfile.TemporaryDirectory(prefix="nw-pipeline-") as tmp:
        if args.profile:
            _profile(lambda: run_newswatch(docs, rules, f"sqlite:///{tmp}/profile.db"))
        nw = run_newswatch(docs, rules, f"sqlite:///{tmp}/newswatch.db")
        nw_default_gc = run_newswatch(
            docs, rules, f"sqlite:///{tmp}/newswatch-default-gc.db", default_gc=True
        )
        budget = args.baseline_seconds / (4 if args.quick else 1)
        ob = run_obvious(docs, rules, Path(tmp) / "obvious.db", budget)
    pg = None
    if args.database == "postgresql":
        from tests.servers import postgres_server

        # The server is another process: this row is not a one-core figure.
        with postgres_server() as url:
            pg = run_newswatch(docs, rules, url)

    rows = [
        (
            "newswatch",
            nw["entries"],
            nw["seconds"],
            nw["entries_per_s"],
            nw["entries_per_s"] / ob["entries_per_s"],
        ),
        (
            "newswatch, CPython default GC",
            nw_default_gc["entries"],
            nw_default_gc["seconds"],
            nw_default_gc["entries_per_s"],
            nw_default_gc["entries_per_s"] / ob["entries_per_s"],
        ),
        ("obvious stack", ob["entries"], ob["seconds"], ob["entries_per_s"], 1.0),
    ]
    if pg is not None:
        rows.insert(
            1,
            (
                "newswatch, PostgreSQL",
                pg["entries"],
                pg["seconds"],
                pg["entries_per_s"],
                pg["entries_per_s"] / ob["entries_per_s"],
            ),
        )
    print()
    print(table(["stack", "entries", "seconds", "entries/s", "x obvious"], rows))
    print()
    stage_rows = [
        (
            s["stage"],
            s["us_per_entry"],
            f"{s['share']:.1%}",
            o["us_per_entry"],
            f"{o['share']:.1%}",
        )
        for s, o in zip(nw["stages"], ob["stages"], strict=True)
    ]
    print(table(["stage", "newswatch us/entry", "share", "obvious us/entry", "share"], stage_rows))
    if pg is not None:
        print()
        pg_rows = [
            (s["stage"], s["us_per_entry"], p["us_per_entry"])
            for s, p in zip(nw["stages"], pg["stages"], strict=True)
        ]
        print(table(["stage", "SQLite us/entry", "PostgreSQL us/entry"], pg_rows))
    print(
        f"\nnewswatch stored {nw['stored']:,} originals, {nw['duplicates']:,} duplicates, "
        f"{nw['alerts']:,} alerts; look-up median {nw['lookup_median_ms']:.3f} ms"
    )
    print(
        f"full-text indexing, off the ingest path (storage/search.py): "
        f"{nw['search_index_us_per_entry']:.1f} us/entry, once, when searched or by the worker"
    )
    gc_gain = nw["entries_per_s"] / nw_default_gc["entries_per_s"]
    print(f"collector thresholds as in the worker: {gc_gain:.2f}x the throughput of the defaults")
    print("goal: >= 1,500 entries/s on one core (aim 2,000) with 1,000 rules")
    write_json(
        args.json,
        {
            "benchmark": "pipeline",
            "machine": machine(),
            "quick": args.quick,
            "rules": len(rules),
            "newswatch": nw,
            "newswatch_default_gc": nw_default_gc,
            "gc_young_threshold": {
                "newswatch": YOUNG_THRESHOLD,
                "default": CPYTHON_GC_THRESHOLDS[0],
            },
            "newswatch_postgresql": pg,
            "obvious": ob,
            "speedup": nw["entries_per_s"] / ob["entries_per_s"],
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
