"""The lxml fast path against the feedparser path: same results, and how much faster.

1. Differential, over every document of ``corpora/feeds`` (feedparser's own test corpus,
   with the Content-Type each ``http`` document asks for, as ``feeds_corpus.py`` serves
   them): how many documents `tasks.fastfeed.parse_fast` takes, and how many of those
   give a `ParsedFeed` different from `tasks.parse.parse_with_feedparser` (must be 0).
   Also counts why the others were declined, by folder.
2. Speed, on the documents ``pipeline.py`` parses: RSS 2.0 with 50 BBC News articles
   each (``corpora/news/bbc``, built with `make_entries`/`rss_document`), parse µs per
   entry (CPU time) of `parse_fast`, `parse_with_feedparser` and `parse_feed`, measured in
   the same run (best of ``--repeat`` rounds, interleaved so all paths share the noise).

    python benchmarks/parse_paths.py [--corpora PATH] [--json PATH] [--entries N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    DEFAULT_CORPORA,
    RESULTS_DIR,
    load_bbc,
    machine,
    make_entries,
    rss_document,
    table,
    write_json,
)
from benchmarks.feeds_corpus import group_of, load_docs
from tasks.fastfeed import parse_fast, read_result, used_keys
from tasks.parse import (
    ParsedFeed,
    parse_feed,
    parse_with_feedparser,
    run_feedparser,
)

NOW = datetime(2025, 6, 1, tzinfo=UTC)
PER_DOC = 50


def differential(feeds_dir: Path) -> dict[str, Any]:
    """Both paths on every corpus document; counts and the differing files."""
    docs = load_docs(feeds_dir)
    taken = 0
    differ: list[str] = []
    raw_differ: list[str] = []
    taken_by_group: Counter[str] = Counter()
    total_by_group: Counter[str] = Counter()
    entries_fast = 0
    for doc in docs:
        url = "http://127.0.0.1/" + doc.rel
        content_type = doc.headers.get("content-type")
        group = group_of(doc.rel)
        total_by_group[group] += 1
        fast = parse_fast(doc.body, url=url, content_type=content_type, now=NOW)
        if fast is None:
            continue
        taken += 1
        taken_by_group[group] += 1
        entries_fast += len(fast.entries)
        slow = parse_with_feedparser(doc.body, url=url, content_type=content_type, now=NOW)
        if fast != slow:
            differ.append(doc.rel)
        # Stricter: the raw values both paths hand to the shared builder.
        ours = used_keys(read_result(doc.body, content_type=content_type))
        theirs = used_keys(run_feedparser(doc.body, content_type=content_type))
        if ours != theirs:
            raw_differ.append(doc.rel)
    return {
        "documents": len(docs),
        "fast_path": taken,
        "declined": len(docs) - taken,
        "differ": len(differ),
        "differing_files": differ,
        "raw_differ": len(raw_differ),
        "raw_differing_files": raw_differ,
        "entries_on_fast_path": entries_fast,
        "by_group": {
            g: {"documents": n, "fast_path": taken_by_group[g]}
            for g, n in sorted(total_by_group.items())
        },
    }


def news_documents(corpora: Path, entries: int) -> list[bytes]:
    """RSS documents of PER_DOC entries, built as benchmarks/pipeline.py builds them."""
    items = make_entries(load_bbc(corpora), entries)
    docs = []
    for d in range(0, entries, PER_DOC):
        chunk = [(f"e{d + j}", items[d + j]) for j in range(min(PER_DOC, entries - d))]
        docs.append(rss_document(f"Feed {d // PER_DOC}", f"http://bench/{d}", chunk, d))
    return docs


def speed(docs: list[bytes], repeat: int) -> dict[str, Any]:
    """Best-of-`repeat` CPU µs per entry for each path, rounds interleaved.

    CPU time rather than wall time: on a shared machine it is the less noisy of the two.
    """
    paths: dict[str, Callable[..., ParsedFeed | None]] = {
        "fast path (parse_fast)": parse_fast,
        "feedparser path": parse_with_feedparser,
        "parse_feed": parse_feed,
    }
    count = 0
    for i, doc in enumerate(docs):
        fast = parse_fast(doc, url=f"http://bench/{i}", now=NOW)
        if fast is None or fast != parse_with_feedparser(doc, url=f"http://bench/{i}", now=NOW):
            raise SystemExit(f"news document {i} declined or differs: fix before timing")
        count += len(fast.entries)
    rounds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeat):
        for name, fn in paths.items():
            started = time.process_time()
            for i, doc in enumerate(docs):
                fn(doc, url=f"http://bench/{i}", now=NOW)
            rounds[name].append((time.process_time() - started) / count * 1e6)
    best = {name: min(values) for name, values in rounds.items()}
    return {
        "documents": len(docs),
        "entries": count,
        "us_per_entry": best,
        "rounds_us_per_entry": rounds,
        "speedup_vs_feedparser": best["feedparser path"] / best["fast path (parse_fast)"],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the differential and the timing; print tables, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--json", type=Path, default=RESULTS_DIR / "parse_paths.json")
    ap.add_argument("--entries", type=int, default=2_000, help="news entries to time")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)

    feeds_dir = args.corpora.resolve() / "feeds"
    if not feeds_dir.is_dir():
        print(f"no feeds corpus at {feeds_dir}", file=sys.stderr)
        return 2
    diff = differential(feeds_dir)
    print(
        table(
            ["documents", "fast path", "declined", "differ", "raw differ", "entries (fast)"],
            [
                (
                    diff["documents"],
                    diff["fast_path"],
                    diff["declined"],
                    diff["differ"],
                    diff["raw_differ"],
                    diff["entries_on_fast_path"],
                )
            ],
        )
    )
    print()
    print(
        table(
            ["folder", "documents", "fast path"],
            [(g, c["documents"], c["fast_path"]) for g, c in diff["by_group"].items()],
        )
    )
    for rel in diff["differing_files"][:20]:
        print("  differs:", rel)
    for rel in diff["raw_differing_files"][:20]:
        print("  raw values differ:", rel)

    timing = speed(news_documents(args.corpora, args.entries), args.repeat)
    print(f"\nparse speed, {timing['entries']:,} BBC entries in {timing['documents']} documents")
    print(f"(CPU time, best of {args.repeat} interleaved rounds; all rounds in the JSON)\n")
    rows = [
        (name, us, f"{min(rounds):.1f}-{max(rounds):.1f}")
        for (name, us), rounds in zip(
            timing["us_per_entry"].items(), timing["rounds_us_per_entry"].values(), strict=True
        )
    ]
    print(table(["path", "us/entry (best)", "range"], rows))
    print(f"\nfast path: {timing['speedup_vs_feedparser']:.1f}x the feedparser path")
    write_json(
        args.json,
        {"benchmark": "parse_paths", "machine": machine(), "differential": diff, "speed": timing},
    )
    return 1 if diff["differ"] or diff["raw_differ"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
