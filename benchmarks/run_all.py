"""Run every benchmark in benchmarks/, print a summary, write results/*.json and a PNG plot.

Each ``benchmarks/<name>.py`` (files starting with ``_`` and this one excepted) runs in
its own subprocess as ``python benchmarks/<name>.py --corpora PATH --json
benchmarks/results/<name>.json [--quick]``, so one benchmark's imports, threads or crash
cannot disturb another's numbers; ``--quick`` is passed only to scripts that accept it.
The summary reads each JSON file; the plot (matplotlib, Agg) shows pipeline throughput
and near-duplicate look-up latency against store size, from ``pipeline.json`` and, when
present, ``lookup.json``.

    python benchmarks/run_all.py [--corpora PATH] [--quick] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import DEFAULT_CORPORA, REPO_ROOT, RESULTS_DIR, table

BENCH_DIR = REPO_ROOT / "benchmarks"
# Fast, dependency-light ones first; the scale-out run starts servers and workers.
ORDER = (
    "rules",
    "extraction",
    "feeds_corpus",
    "cli",
    "lookup",
    "dedup_quality",
    "pipeline",
    "ingest",
)


def discover() -> list[str]:
    """Benchmark script names in a stable order (known ones first, then the rest)."""
    names = sorted(
        p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_") and p.stem != "run_all"
    )
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def accepts(script: Path, option: str) -> bool:
    """Whether a script's source mentions an option (cheap, no import)."""
    return option in script.read_text("utf-8")


def run(name: str, corpora: Path, quick: bool) -> tuple[int, float]:
    """Run one benchmark script; returns (exit code, seconds)."""
    script = BENCH_DIR / f"{name}.py"
    argv = [sys.executable, str(script)]
    if accepts(script, "--corpora"):
        argv += ["--corpora", str(corpora)]
    if accepts(script, "--json"):
        argv += ["--json", str(RESULTS_DIR / f"{name}.json")]
    if quick and accepts(script, "--quick"):
        argv.append("--quick")
    print(f"\n=== {name}: {' '.join(argv[1:])}", flush=True)
    t0 = time.perf_counter()
    code = subprocess.call(argv, cwd=REPO_ROOT)
    return code, time.perf_counter() - t0


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}.json"
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def headline(name: str) -> str:
    """One line of the most telling figures from a benchmark's JSON (best effort)."""
    data = _load(name)
    if data is None:
        return "(no JSON)"
    try:
        if name == "pipeline":
            return (
                f"{data['newswatch']['entries_per_s']:,.0f} entries/s vs obvious "
                f"{data['obvious']['entries_per_s']:,.0f} (x{data['speedup']:.1f})"
            )
        if name == "ingest":
            parts = []
            if "A" in data:
                parts.append(
                    f"A {data['A']['newswatch']['seconds']:.1f} s ratio {data['A']['ratio']:.2f}"
                )
            if "B" in data:
                b = data["B"]
                parts.append(
                    f"B {b['newswatch']['seconds']:.1f} s (reader {b['reader']['seconds']:.1f}), "
                    f"304 pass {b['newswatch']['unchanged_seconds']:.2f} s"
                )
            return "; ".join(parts)
        if name == "cli":
            rows = {r["command"]: r for r in data["commands"]}
            ours, peer = rows["newswatch alerts list"], rows["reader list feeds"]
            return (
                f"alerts list {ours['median_s']:.2f} s, feeds list "
                f"{rows['newswatch feeds list']['median_s']:.2f} s "
                f"(reader list feeds {peer['median_s']:.2f} s)"
            )
        if name == "lookup":
            return "; ".join(
                f"N={r['size']:,}: {r['light']['median_ms']:.3f} ms, a move "
                f"{r['move']['seconds'] / r['move']['articles'] * 10_000:.2f} s per 10,000"
                for r in data["sizes"]
            )
        if name == "scaleout":
            return "; ".join(
                f"{r['filled_articles']:,}-article store, N={r['workers']}: "
                f"{r['seconds_vs_fresh']:.2f}x the fresh store's time "
                f"RSS {r['peak_rss_mb_per_process']:.0f} MB"
                if r.get("filled_articles")
                else f"N={r['workers']}: {r['entries_per_s']:,.0f}/s x{r['scaling']:.2f} "
                f"p50 {r['latency']['p50_s'] or float('nan'):.2f} s "
                f"RSS {r['peak_rss_mb_per_process']:.0f} MB"
                for r in data["runs"]
            )
    except (KeyError, TypeError, ZeroDivisionError):
        pass
    keys = [k for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    return ", ".join(f"{k}={data[k]:.4g}" for k in keys[:4]) or "(see JSON)"


def _lookup_points(data: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    """(store size, median ms) pairs from lookup.json, per query kind (light, syndicated)."""
    points: dict[str, list[tuple[float, float]]] = {}
    for row in data.get("sizes", []):
        for kind in ("light", "syndicated"):
            if isinstance(row.get(kind), dict) and "median_ms" in row[kind]:
                pair = (float(row["size"]), float(row[kind]["median_ms"]))
                points.setdefault(kind, []).append(pair)
    return points


def plot(path: Path) -> bool:
    """Throughput and look-up latency vs store size; False when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pipeline, lookup = _load("pipeline"), _load("lookup")
    curve = (pipeline or {}).get("newswatch", {}).get("curve", [])
    if not curve and not lookup:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    if curve:
        xs = [c["store_size"] for c in curve]
        ax1.plot(xs, [c["entries_per_s"] for c in curve], marker="o", label="newswatch pipeline")
        obvious = pipeline["obvious"]["entries_per_s"] if pipeline else None
        if obvious:
            ax1.axhline(obvious, color="grey", linestyle="--", label="obvious stack")
        ax1.axhline(1500, color="red", linestyle=":", label="goal 1,500/s")
        ax2.plot(
            xs,
            [c["lookup_median_ms"] for c in curve],
            marker="o",
            label="pipeline look-up (median)",
        )
    ax1.set(xlabel="articles in store", ylabel="entries/s (one core)", title="Pipeline throughput")
    ax1.legend()
    if lookup:
        for kind, pts in _lookup_points(lookup).items():
            ax2.plot(
                [p[0] for p in pts], [p[1] for p in pts], marker="s", label=f"lookup.py, {kind}"
            )
            ax2.set_xscale("log")
    ax2.axhline(1.0, color="red", linestyle=":", label="goal 1 ms")
    ax2.set(xlabel="articles in store", ylabel="ms", title="Near-duplicate look-up latency")
    ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the summary, draw the plot; non-zero if any failed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--quick", action="store_true", help="smaller sizes where supported")
    ap.add_argument("--only", default=None, help="comma-separated benchmark names")
    args = ap.parse_args(argv)
    names = discover()
    if args.only:
        wanted = set(args.only.split(","))
        names = [n for n in names if n in wanted]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for name in names:
        code, seconds = run(name, args.corpora.resolve(), args.quick)
        outcomes.append((name, "ok" if code == 0 else f"exit {code}", seconds))
    print("\n=== summary")
    rows = [
        (n, status, secs, headline(n) if status == "ok" else "") for n, status, secs in outcomes
    ]
    print(table(["benchmark", "status", "seconds", "headline"], rows))
    png = RESULTS_DIR / "benchmarks.png"
    if plot(png):
        print(f"\nplot written to {png}")
    return 0 if all(status == "ok" for _, status, _ in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
