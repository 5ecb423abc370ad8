"""Article body extraction benchmark on the Zyte/Scrapinghub corpus.

Scores newswatch's full-page path (`html_to_text(full_page=True)` + `clean_text`, as run by
`normalize_entry`, and without its headline removal) against
plain trafilatura, readability-lxml and jusText on the same 181 pages, in the same run,
and prints the scores of the peer outputs shipped with the corpus as a check on the
metric. The metric re-implements upstream's `evaluate.py` as the corpus README
describes it: `\\w+` tokens, multisets of 4-token shingles, per-page tp/fp/fn divided by
their sum, precision averaged over pages with tp+fp > 0, recall over pages with
tp+fn > 0, F1 of the two averages; accuracy is exact token-sequence equality.

    python benchmarks/extraction.py [--corpora ../shared/corpora] [--json PATH]

The corpus is read in place and never copied into the repository.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tasks.models import RawEntry  # noqa: E402
from tasks.normalize import clean_text, html_to_text, normalize_entry  # noqa: E402

DEFAULT_CORPORA = REPO_ROOT.parent / "shared" / "corpora"
SHINGLE_SIZE = 4
TOKEN_RE = re.compile(r"\w+")

Extractor = Callable[[str, str], str]
"""(html, url) -> article body text."""


@dataclass(frozen=True, slots=True)
class Score:
    """One system's scores over the whole corpus."""

    system: str
    f1: float
    precision: float
    recall: float
    accuracy: float
    ms_per_page: float | None
    pages: int


def shingles(tokens: list[str], size: int = SHINGLE_SIZE) -> Counter[tuple[str, ...]]:
    """Multiset of `size`-token shingles; a text shorter than `size` is one shingle."""
    count = max(1, len(tokens) - size + 1)
    return Counter(tuple(tokens[i : i + size]) for i in range(count) if tokens[i : i + size])


def page_counts(truth: str, prediction: str) -> tuple[float, float, float]:
    """Per-page (tp, fp, fn) over shingle multisets, divided by their sum."""
    true_shingles = shingles(TOKEN_RE.findall(truth))
    pred_shingles = shingles(TOKEN_RE.findall(prediction))
    tp = sum((true_shingles & pred_shingles).values())
    fp = sum(pred_shingles.values()) - tp
    fn = sum(true_shingles.values()) - tp
    total = tp + fp + fn
    if total == 0:
        return 0.0, 0.0, 0.0
    return tp / total, fp / total, fn / total


def score(
    system: str,
    truths: Mapping[str, str],
    predictions: Mapping[str, str],
    ms_per_page: float | None = None,
) -> Score:
    """Upstream's corpus-level precision, recall, F1 and exact-match accuracy."""
    precisions: list[float] = []
    recalls: list[float] = []
    exact = 0
    for page_id, truth in truths.items():
        prediction = predictions.get(page_id, "")
        tp, fp, fn = page_counts(truth, prediction)
        if tp + fp > 0:
            precisions.append(1.0 if fp == fn == 0 else tp / (tp + fp))
        if tp + fn > 0:
            recalls.append(1.0 if fp == fn == 0 else tp / (tp + fn))
        exact += TOKEN_RE.findall(truth) == TOKEN_RE.findall(prediction)
    precision = sum(precisions) / len(precisions) if precisions else 0.0
    recall = sum(recalls) / len(recalls) if recalls else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(system, f1, precision, recall, exact / len(truths), ms_per_page, len(truths))


# --- systems ------------------------------------------------------------------------


def newswatch_extract(html: str, url: str) -> str:
    """newswatch's pipeline step on a fetched page: the text of the normalized Article.

    That is html_to_text(full_page=True) + clean_text, with the headline taken off the
    top as normalize_entry does.
    """
    return normalize_entry(RawEntry(guid=url, url=url, title=None, content=html)).text


def newswatch_clean_only(html: str, url: str) -> str:
    """html_to_text(full_page=True) + clean_text alone (headline, if any, kept)."""
    return clean_text(html_to_text(html, url=url, full_page=True)).text


def trafilatura_defaults(html: str, url: str) -> str:
    """trafilatura 2.x `extract` with its default settings."""
    import trafilatura

    return trafilatura.extract(html, url=url) or ""


def readability_extract(html: str, url: str) -> str:
    """readability-lxml `summary()` HTML, turned into text with paragraph breaks."""
    import lxml.html
    from readability import Document

    summary = Document(html, url=url).summary(html_partial=True)
    try:
        root = lxml.html.fromstring(summary)
    except Exception:  # readability can return an empty or unparsable fragment
        return ""
    blocks = root.xpath("//p|//h1|//h2|//h3|//h4|//h5|//h6|//li|//pre|//blockquote|//td")
    parts = [" ".join(block.text_content().split()) for block in blocks]
    text = "\n\n".join(part for part in parts if part)
    return text or " ".join(root.text_content().split())


def justext_extract(html: str, url: str) -> str:
    """jusText with the English stoplist, keeping only non-boilerplate paragraphs."""
    import justext

    paragraphs = justext.justext(html.encode("utf-8"), justext.get_stoplist("English"))
    return "\n\n".join(p.text for p in paragraphs if not p.is_boilerplate)


SYSTEMS: dict[str, Extractor] = {
    "newswatch": newswatch_extract,
    "newswatch (clean_text only)": newswatch_clean_only,
    "trafilatura (defaults)": trafilatura_defaults,
    "readability-lxml": readability_extract,
    "justext": justext_extract,
}


# --- corpus -------------------------------------------------------------------------


def load_corpus(extraction_dir: Path) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Return (truth text, url, html) keyed by page id."""
    ground_truth = json.loads((extraction_dir / "ground-truth.json").read_text("utf-8"))
    truths = {page_id: entry["articleBody"] for page_id, entry in ground_truth.items()}
    urls = {page_id: entry.get("url", "") for page_id, entry in ground_truth.items()}
    pages = {}
    for page_id in truths:
        with gzip.open(extraction_dir / "html" / f"{page_id}.html.gz", "rt", "utf-8") as f:
            pages[page_id] = f.read()
    return truths, urls, pages


def load_peer_outputs(extraction_dir: Path) -> dict[str, dict[str, str]]:
    """Peer predictions by system name; both upstream file shapes are accepted."""
    peers = {}
    for path in sorted((extraction_dir / "peer-outputs").glob("*.json.gz")):
        with gzip.open(path, "rt", "utf-8") as f:
            data = json.load(f)
        if "output" in data and isinstance(data["output"], dict):
            data = data["output"]
        name = path.name.removesuffix(".json.gz")
        peers[name] = {page_id: entry.get("articleBody") or "" for page_id, entry in data.items()}
    return peers


def run_system(
    extract: Extractor, pages: Mapping[str, str], urls: Mapping[str, str]
) -> tuple[dict[str, str], float]:
    """Run one extractor over every page; return predictions and mean ms per page."""
    predictions = {}
    first_id = next(iter(pages))
    extract(pages[first_id], urls[first_id])  # warm-up: imports and caches not timed
    started = time.perf_counter()
    for page_id, html in pages.items():
        predictions[page_id] = extract(html, urls[page_id])
    elapsed = time.perf_counter() - started
    return predictions, 1000 * elapsed / len(pages)


def format_table(scores: Iterable[Score]) -> str:
    """A plain-text table, best F1 first."""
    header = f"{'system':<28} {'F1':>6} {'prec':>6} {'recall':>6} {'acc':>6} {'ms/page':>8}"
    lines = [header, "-" * len(header)]
    for s in sorted(scores, key=lambda s: s.f1, reverse=True):
        ms = f"{s.ms_per_page:8.1f}" if s.ms_per_page is not None else f"{'-':>8}"
        lines.append(
            f"{s.system:<28} {s.f1:6.3f} {s.precision:6.3f} {s.recall:6.3f} {s.accuracy:6.3f} {ms}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every system, print the table, optionally write the scores as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    parser.add_argument("--json", type=Path, default=None, help="write scores here")
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated subset of: " + ", ".join(SYSTEMS),
    )
    parser.add_argument("--no-peers", action="store_true", help="skip the stored peer outputs")
    args = parser.parse_args(argv)

    extraction_dir = args.corpora / "extraction"
    if not (extraction_dir / "ground-truth.json").is_file():
        print(f"error: no extraction corpus at {extraction_dir}", file=sys.stderr)
        return 2
    truths, urls, pages = load_corpus(extraction_dir)

    scores: list[Score] = []
    for name in (n.strip() for n in args.systems.split(",") if n.strip()):
        if name not in SYSTEMS:
            print(f"error: unknown system {name!r}", file=sys.stderr)
            return 2
        predictions, ms_per_page = run_system(SYSTEMS[name], pages, urls)
        scores.append(score(name, truths, predictions, ms_per_page))
        print(f"ran {name}: {ms_per_page:.1f} ms/page", file=sys.stderr)

    if not args.no_peers:
        for name, predictions in load_peer_outputs(extraction_dir).items():
            scores.append(score(f"peer: {name}", truths, predictions))

    print(format_table(scores))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"pages": len(truths), "scores": [asdict(s) for s in scores]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
