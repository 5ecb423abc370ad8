"""Near-duplicate quality on the BBC news corpus and on generated syndication variants.

    python benchmarks/dedup_quality.py [--corpora PATH]
                                       [--json benchmarks/results/dedup_quality.json]

What it measures (issue 3):
1. BBC pairs: every pair the LSH index + signature check links, against an exact
   brute-force ground truth computed on the shingle sets with the same rule
   (`score >= threshold`, see tasks/fingerprint.py), for several thresholds.
   Recall is also given for pairs whose plain Jaccard is >= 0.5 and >= 0.8.
2. Syndication variants of every article (seeded): new headline, boilerplate lines
   added, one paragraph dropped, 5-10% of the words edited (replaced, deleted or
   doubled). Each variant is looked up against the originals; a link is right when it
   points at its source (or at a ground-truth duplicate of it).
3. Short summaries (the first 1-3 sentences, 30-80 words): summary -> full article,
   summary -> a differently cut summary of the same article (with 5% edits), and all
   pairs among summaries of different stories (precision).
4. Same headline, different text: pairs the corpus README names as different stories.
5. Same opening, different stories: unrelated articles behind one shared 50-word
   opening (a press-release header, a feed's standing preamble): none should link.

The corpus is read in place, never copied. Body text only is fingerprinted, as the
pipeline does (the title is a separate field).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.fingerprint import (  # noqa: E402
    DEFAULT_PARAMS,
    VERIFY_MARGIN,
    FingerprintParams,
    decision_score,
    exact_similarity,
    fingerprint,
    shingles,
    similarity,
    words,
)


def decided(estimate: float, threshold: float, exact: Callable[[], float]) -> bool:
    """What newswatch decides for one candidate (`tasks.fingerprint.best_match`): the
    estimate, unless it lies within VERIFY_MARGIN of the threshold, where the exact
    similarity of the two texts settles it."""
    if abs(estimate - threshold) < VERIFY_MARGIN:
        return exact() >= threshold
    return estimate >= threshold


SEED = 20240611
THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.6)
CHOSEN = 0.5  # worker.settings.Settings.near_duplicate_threshold
OPENING_PAIRS = 2000
OPENING_WORDS = 50
BOILERPLATE = (
    "READ ALSO: Markets slide as oil prices climb",
    "Follow us on Twitter and Facebook for the latest news.",
    "Copyright 2005 Daily Wire Ltd. All rights reserved. This material may not be "
    "published, broadcast, rewritten or redistributed.",
    "Sign up for our morning newsletter to get the top stories in your inbox.",
    "Share this article",
    "Disclaimer: This post has been auto-published from a syndicated feed and may not "
    "have been edited by our staff.",
    "Open in App",
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, slots=True)
class Doc:
    """One corpus article: its path relative to the corpus, headline and body."""

    name: str
    title: str
    body: str


def load_bbc(corpora: Path) -> list[Doc]:
    """All articles; bytes that are not UTF-8 (one file has a Latin-1 '£') as Latin-1."""
    docs = []
    for path in sorted((corpora / "news" / "bbc").glob("*/*.txt")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        title, _, body = text.strip().partition("\n")
        docs.append(Doc(f"{path.parent.name}/{path.name}", title.strip(), body.strip()))
    return docs


def paragraphs(body: str) -> list[str]:
    """Non-empty paragraphs (blank-line separated)."""
    return [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]


def make_variant(doc: Doc, rng: random.Random, vocabulary: Sequence[str]) -> tuple[str, str]:
    """A syndicated copy: (new headline, body with boilerplate, a dropped paragraph, edits)."""
    paras = paragraphs(doc.body)
    if len(paras) >= 3:
        del paras[rng.randrange(len(paras))]
    rate = rng.uniform(0.05, 0.10)
    edited = []
    for para in paras:
        out: list[str] = []
        for word in para.split():
            if rng.random() >= rate:
                out.append(word)
                continue
            op = rng.random()
            if op < 0.5:
                out.append(rng.choice(vocabulary))  # replaced
            elif op < 0.75:
                pass  # deleted
            else:
                out.extend((word, rng.choice(vocabulary)))  # word inserted
        edited.append(" ".join(out))
    head, tail = rng.sample(BOILERPLATE, 2)
    title = "UPDATE: " + " ".join(reversed(doc.title.split()))
    return title, "\n\n".join([head, *edited, tail])


def make_summary(doc: Doc, sentences: int) -> str | None:
    """The first `sentences` sentences (1-3), kept only if 30-80 words long."""
    parts = _SENTENCE.split(" ".join(doc.body.split()))
    for n in range(sentences, 4):
        summary = " ".join(parts[:n])
        if 30 <= len(words(summary)) <= 80:
            return summary
        if len(words(summary)) > 80:
            break
    return None


def edit_words(text: str, rate: float, rng: random.Random, vocabulary: Sequence[str]) -> str:
    """Replace a `rate` share of the words at random."""
    return " ".join(rng.choice(vocabulary) if rng.random() < rate else w for w in text.split())


class Index:
    """The same band-key -> ids index the database holds, in memory, for evaluation."""

    def __init__(self) -> None:
        self.bands: dict[int, list[int]] = defaultdict(list)
        self.signatures: list[bytes] = []

    def add(self, band_keys: Sequence[int], signature: bytes) -> int:
        """Store one fingerprint; returns its id."""
        doc_id = len(self.signatures)
        self.signatures.append(signature)
        for key in set(band_keys):
            self.bands[key].append(doc_id)
        return doc_id

    def candidates(self, band_keys: Sequence[int]) -> set[int]:
        """Ids sharing at least one band."""
        found: set[int] = set()
        for key in set(band_keys):
            found.update(self.bands.get(key, ()))
        return found


def _incidence(sets: list[set[bytes]]) -> sp.csr_matrix:
    vocab: dict[bytes, int] = {}
    rows, cols = [], []
    for i, s in enumerate(sets):
        for gram in s:
            rows.append(i)
            cols.append(vocab.setdefault(gram, len(vocab)))
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(len(sets), len(vocab)))


def exact_scores(
    full: list[set[bytes]], lead: list[set[bytes]], params: FingerprintParams
) -> dict[str, np.ndarray]:
    """Exact pairwise Jaccard, containment, lead Jaccard and the decision score."""

    def jaccard_and_shared(sets: list[set[bytes]]) -> tuple[np.ndarray, np.ndarray]:
        m = _incidence(sets)
        shared = (m @ m.T).toarray().astype(np.float64)
        size = np.array([len(s) for s in sets], dtype=np.float64)
        union = size[:, None] + size[None, :] - shared
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, shared / union, 0.0), shared

    jac, shared = jaccard_and_shared(full)
    size = np.array([len(s) for s in full], dtype=np.float64)
    smaller = np.minimum(size[:, None], size[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        cont = np.where(smaller > 0, shared / smaller, 0.0)
    lead_jac, _ = jaccard_and_shared(lead)
    # The production rule itself, pair by pair (it is scalar).
    score = np.vectorize(decision_score, otypes=[np.float64], excluded={"params"})(
        jac, cont, lead_jac, smaller, params=params
    )
    return {"jaccard": jac, "containment": cont, "lead": lead_jac, "score": score}


def _pr(found: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict[str, Any]:
    tp = len(found & truth)
    return {
        "truth": len(truth),
        "found": len(found),
        "true_positives": tp,
        "precision": tp / len(found) if found else 1.0,
        "recall": tp / len(truth) if truth else 1.0,
    }


def evaluate(corpora: Path, params: FingerprintParams = DEFAULT_PARAMS) -> dict[str, Any]:
    """Run every measurement; returns the JSON-ready result."""
    rng = random.Random(SEED)
    docs = load_bbc(corpora)
    started = time.perf_counter()
    fps = [fingerprint(d.body, params) for d in docs]
    fp_ms = (time.perf_counter() - started) / len(docs) * 1e3
    tokens = [words(d.body) for d in docs]
    full_sets = [shingles(t, params.shingle_size) for t in tokens]
    lead_sets = [shingles(t[: params.lead_words], params.shingle_size) for t in tokens]
    exact = exact_scores(full_sets, lead_sets, params)
    n = len(docs)
    upper = np.triu(np.ones((n, n), dtype=bool), 1)

    # 1. BBC pairs: candidates through the index, verified on signatures.
    index = Index()
    for fp in fps:
        index.add(fp.band_keys, fp.signature)
    estimated: dict[tuple[int, int], float] = {}
    for i, fp in enumerate(fps):
        for j in index.candidates(fp.band_keys):
            if j > i:
                estimated[(i, j)] = similarity(fp.signature, fps[j].signature, params).score
    bbc_rows = []
    for threshold in THRESHOLDS:
        truth = set(zip(*np.nonzero(upper & (exact["score"] >= threshold)), strict=True))
        truth = {(int(a), int(b)) for a, b in truth}
        found = {
            pair
            for pair, s in estimated.items()
            if decided(s, threshold, lambda pair=pair: float(exact["score"][pair]))  # type: ignore[misc]
        }
        row = {"threshold": threshold, **_pr(found, truth)}
        row["candidate_recall"] = len(truth & estimated.keys()) / len(truth) if truth else 1.0
        for level in (0.5, 0.8):
            high = {
                (int(a), int(b))
                for a, b in zip(*np.nonzero(upper & (exact["jaccard"] >= level)), strict=True)
            }
            row[f"recall_jaccard_ge_{level}"] = len(found & high) / len(high) if high else 1.0
        bbc_rows.append(row)
    truth_at_chosen = exact["score"] >= CHOSEN
    dup_of = {i: set(np.nonzero(truth_at_chosen[i])[0].tolist()) | {i} for i in range(n)}
    unrelated = upper & (exact["score"] < 0.2)

    # 2. Syndication variants against the originals.
    vocabulary = [w for t in tokens[::7] for w in t]
    variant_fps = []
    variant_bodies: list[str] = []
    variant_exact = []
    for i, doc in enumerate(docs):
        _, body = make_variant(doc, rng, vocabulary)
        variant_bodies.append(body)
        variant_fps.append(fingerprint(body, params))
        vt = words(body)
        vs = shingles(vt, params.shingle_size)
        shared = len(vs & full_sets[i])
        variant_exact.append(
            (shared / len(vs | full_sets[i]), shared / min(len(vs), len(full_sets[i])))
        )
    variant_rows = []
    for threshold in THRESHOLDS:
        right = wrong = linked = cand = 0
        for i, fp in enumerate(variant_fps):
            cands = index.candidates(fp.band_keys)
            cand += bool(cands & dup_of[i])
            hits = {
                j
                for j in cands
                if decided(
                    similarity(fp.signature, fps[j].signature, params).score,
                    threshold,
                    lambda i=i, j=j: (
                        exact_similarity(variant_bodies[i], docs[j].body, params).score
                    ),  # type: ignore[misc]
                )
            }
            right += bool(hits & dup_of[i])
            wrong += len(hits - dup_of[i])
            linked += bool(hits)
        variant_rows.append(
            {
                "threshold": threshold,
                "variants": n,
                "candidate_recall": cand / n,
                "recall": right / n,
                "precision": right / (right + wrong) if right + wrong else 1.0,
                "wrong_links": wrong,
            }
        )
    vj = np.array([v[0] for v in variant_exact])
    vc = np.array([v[1] for v in variant_exact])

    # 3. Summaries.
    summaries: list[tuple[int, str]] = []
    for i, doc in enumerate(docs):
        s = make_summary(doc, rng.randint(1, 3))
        if s is not None:
            summaries.append((i, s))
    summary_fps = [(i, fingerprint(s, params)) for i, s in summaries]
    to_full_right = to_full_wrong = 0
    summary_text = dict(summaries)
    for i, fp in summary_fps:
        hits = {
            j
            for j in index.candidates(fp.band_keys)
            if decided(
                similarity(fp.signature, fps[j].signature, params).score,
                CHOSEN,
                lambda i=i, j=j: exact_similarity(summary_text[i], docs[j].body, params).score,  # type: ignore[misc]
            )
        }
        to_full_right += bool(hits & dup_of[i])
        to_full_wrong += len(hits - dup_of[i])
    # Another outlet's summary of the same story: a different cut, lightly edited.
    sum_index = Index()
    for _, fp in summary_fps:
        sum_index.add(fp.band_keys, fp.signature)
    other_right = other_total = 0
    for i, _ in summaries:
        alt = make_summary(docs[i], rng.randint(1, 3))
        if alt is None:
            continue
        other_total += 1
        edited = edit_words(alt, 0.05, rng, vocabulary)
        fp = fingerprint(edited, params)
        hits = {
            summaries[k][0]
            for k in sum_index.candidates(fp.band_keys)
            if decided(
                similarity(fp.signature, summary_fps[k][1].signature, params).score,
                CHOSEN,
                lambda k=k, edited=edited: exact_similarity(edited, summaries[k][1], params).score,  # type: ignore[misc]
            )
        }
        other_right += bool(hits & dup_of[i])
    cross_wrong = cross_pairs = 0
    for a, (i, fp) in enumerate(summary_fps):
        for b in sum_index.candidates(fp.band_keys):
            j = summaries[b][0]
            if b > a and j not in dup_of[i]:
                cross_pairs += 1
                cross_wrong += decided(
                    similarity(fp.signature, summary_fps[b][1].signature, params).score,
                    CHOSEN,
                    lambda a=a, b=b: (
                        exact_similarity(summaries[a][1], summaries[b][1], params).score
                    ),  # type: ignore[misc]
                )
    m = len(summaries)
    summary_result = {
        "summaries": m,
        "to_full_recall": to_full_right / m,
        "to_full_wrong_links": to_full_wrong,
        "other_cut_recall": other_right / other_total if other_total else 1.0,
        "different_story_pairs": m * (m - 1) // 2,
        "different_story_candidates": cross_pairs,
        "different_story_links": int(cross_wrong),
    }

    # 4. Same headline, different story (named in the corpus README).
    names = {d.name: i for i, d in enumerate(docs)}
    same_headline = []
    for first, second in (("politics/175.txt", "politics/349.txt"),):
        x, y = names[first], names[second]
        pair_sim = similarity(fps[x].signature, fps[y].signature, params)
        same_headline.append(
            {
                "pair": [first, second],
                "exact_jaccard": float(exact["jaccard"][x, y]),
                "exact_containment": float(exact["containment"][x, y]),
                "score": pair_sim.score,
                "linked": pair_sim.score >= CHOSEN,
            }
        )

    # 5. Shared opening, different stories: a feed that puts the same opening paragraph
    # (a press-release header, a standing preamble) before every item. The lead
    # signature sees the same lead; the items must still stay apart.
    opening_pairs = opening_links = 0
    opening_scores = []
    for _ in range(OPENING_PAIRS):
        i, j, k = rng.sample(range(n), 3)
        if dup_of[i] & {j, k} or k in dup_of[j]:
            continue
        opening = " ".join(docs[k].body.split()[:OPENING_WORDS])
        a, b = f"{opening}\n\n{docs[i].body}", f"{opening}\n\n{docs[j].body}"
        fa, fb = fingerprint(a, params), fingerprint(b, params)
        estimate = similarity(fa.signature, fb.signature, params)
        opening_pairs += 1
        opening_scores.append(estimate.score)
        opening_links += decided(
            estimate.score, CHOSEN, lambda a=a, b=b: exact_similarity(a, b, params).score
        )
    shared_opening = {
        "pairs": opening_pairs,
        "opening_words": OPENING_WORDS,
        "linked": int(opening_links),
        "estimate_p50_p99": [float(x) for x in np.quantile(opening_scores, [0.5, 0.99])],
    }

    return {
        "params": {
            "shingle_size": params.shingle_size,
            "num_perm": params.num_perm,
            "bands": params.bands,
            "rows": params.rows,
            "lead_words": params.lead_words,
            "lead_perm": params.lead_perm,
            "lead_bands": params.lead_bands,
            "jaccard_floor": params.jaccard_floor,
            "lead_floor": params.lead_floor,
            "summary_shingles": params.summary_shingles,
            "lead_containment": params.lead_containment,
            "threshold": CHOSEN,
            "seed": SEED,
        },
        "articles": n,
        "fingerprint_ms": fp_ms,
        "bbc_pairs": bbc_rows,
        "bbc_unrelated_pairs": {
            "pairs": int(unrelated.sum()),
            "exact_score_p99_9": float(np.quantile(exact["score"][unrelated], 0.999)),
            "exact_score_max": float(exact["score"][unrelated].max()),
        },
        "variants": variant_rows,
        "variant_exact": {
            "jaccard_p1_p5_p50": [float(x) for x in np.quantile(vj, [0.01, 0.05, 0.5])],
            "containment_p1_p5_p50": [float(x) for x in np.quantile(vc, [0.01, 0.05, 0.5])],
        },
        "summaries": summary_result,
        "same_headline_different_story": same_headline,
        "shared_opening_different_story": shared_opening,
    }


def print_tables(result: dict[str, Any]) -> None:
    """Human-readable tables of `evaluate`'s result."""
    p = result["params"]
    print(
        f"BBC {result['articles']} articles; shingles={p['shingle_size']} num_perm={p['num_perm']} "
        f"bands={p['bands']}x{p['rows']} lead={p['lead_words']}w/{p['lead_perm']}perm/"
        f"{p['lead_bands']}bands floor={p['jaccard_floor']}; "
        f"fingerprint {result['fingerprint_ms']:.2f} ms/article"
    )
    print("\nBBC pairs vs exact brute force (same rule on exact shingle sets)")
    print(
        f"{'thr':>5} {'truth':>6} {'found':>6} {'prec':>7} {'recall':>7} {'cand.rec':>8} "
        f"{'rec J>=.5':>9} {'rec J>=.8':>9}"
    )
    for r in result["bbc_pairs"]:
        print(
            f"{r['threshold']:>5} {r['truth']:>6} {r['found']:>6} {r['precision']:>7.4f} "
            f"{r['recall']:>7.4f} {r['candidate_recall']:>8.4f} {r['recall_jaccard_ge_0.5']:>9.4f} "
            f"{r['recall_jaccard_ge_0.8']:>9.4f}"
        )
    u = result["bbc_unrelated_pairs"]
    print(
        f"unrelated pairs (exact score < 0.2): {u['pairs']}, "
        f"p99.9 {u['exact_score_p99_9']:.3f}, max {u['exact_score_max']:.3f}"
    )
    print("\nSyndication variants -> originals")
    print(f"{'thr':>5} {'variants':>8} {'cand.rec':>8} {'recall':>7} {'prec':>7} {'wrong':>6}")
    for r in result["variants"]:
        print(
            f"{r['threshold']:>5} {r['variants']:>8} {r['candidate_recall']:>8.4f} "
            f"{r['recall']:>7.4f} {r['precision']:>7.4f} {r['wrong_links']:>6}"
        )
    ve = result["variant_exact"]
    print(
        "variant exact Jaccard p1/p5/p50: "
        + " ".join(f"{x:.3f}" for x in ve["jaccard_p1_p5_p50"])
        + "; containment: "
        + " ".join(f"{x:.3f}" for x in ve["containment_p1_p5_p50"])
    )
    s = result["summaries"]
    print(f"\nSummaries (30-80 words) at threshold {p['threshold']}")
    print(
        f"  {s['summaries']} summaries; -> full article recall {s['to_full_recall']:.4f} "
        f"({s['to_full_wrong_links']} wrong links)"
    )
    print(f"  -> other outlet's cut (5% edits) recall {s['other_cut_recall']:.4f}")
    print(
        f"  different-story pairs {s['different_story_pairs']}: {s['different_story_candidates']} "
        f"candidates, {s['different_story_links']} linked"
    )
    for h in result["same_headline_different_story"]:
        print(
            f"same headline, different story {h['pair']}: exact J {h['exact_jaccard']:.3f} "
            f"C {h['exact_containment']:.3f} score {h['score']:.3f} linked={h['linked']}"
        )
    o = result["shared_opening_different_story"]
    print(
        f"same {o['opening_words']}-word opening, different stories: {o['pairs']} pairs, "
        f"{o['linked']} linked (estimate p50 {o['estimate_p50_p99'][0]:.3f}, "
        f"p99 {o['estimate_p50_p99'][1]:.3f})"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry point; returns the result so a run-all script can collect it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    result = evaluate(args.corpora)
    print_tables(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return result


if __name__ == "__main__":
    main()
