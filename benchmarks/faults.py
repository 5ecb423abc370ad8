"""Run the fault scenarios with real processes and print the fault-test table.

Each scenario (see tests/fault_scenarios.py) starts its own redis-server, newswatch
Celery workers and beat as subprocesses, a local HTTP server for feeds and webhooks,
and a SQLite file or a PostgreSQL database, then injects one fault from outside:
SIGKILL, SIGTERM, Redis restarted empty, PostgreSQL stopped, a webhook answering 503,
a second beat. The table shows what went in, what the store holds, how many alerts
and deliveries there were, how long recovery took, and any lock/constraint errors or
unexpected task failures found in the worker logs (must be 0).

    python benchmarks/faults.py [--json PATH] [--only NAME ...] [--keep]

Needs redis-server; PostgreSQL scenarios run where PostgreSQL is installed.
Linux only (the lab inspects /proc). Takes about five minutes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import fault_scenarios as fs  # noqa: E402
from tests.faultlab import ManagedPostgres  # noqa: E402
from tests.servers import postgres_bindir  # noqa: E402

COLUMNS = [
    ("scenario", "scenario", 36),
    ("backend", "backend", 10),
    ("entries_in", "in", 4),
    ("stored", "stored", 6),
    ("duplicates", "dups", 5),
    ("alerts", "alerts", 6),
    ("deliveries", "sent", 5),
    ("twice", "twice", 5),
    ("recover_s", "recover s", 9),
    ("problems", "errors", 6),
]


def render(rows: list[dict[str, Any]]) -> str:
    """The table as fixed-width text."""
    lines = ["  ".join(f"{title:<{w}}" for _, title, w in COLUMNS)]
    lines.append("  ".join("-" * w for _, _, w in COLUMNS))
    for row in rows:
        cells = []
        for key, _, width in COLUMNS:
            value = row.get(key)
            text = "-" if value is None else str(value)
            cells.append(f"{text:<{width}}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def run(names: list[str], keep: bool) -> list[dict[str, Any]]:
    """Run the named scenarios on each of their backends; one dict per run."""
    pg = ManagedPostgres() if postgres_bindir() is not None else None
    out: list[dict[str, Any]] = []
    try:
        for name in names:
            scenario, backends = fs.SCENARIOS[name]
            for backend in backends:
                if backend == "postgresql" and pg is None:
                    continue
                root = Path(tempfile.mkdtemp(prefix=f"nw-fault-{name}-"))
                started = time.monotonic()
                try:
                    row = scenario(root, backend, pg)
                    record = row.table_row() | {
                        "twice": row.facts.get("twice"),
                        "facts": row.facts,
                        "problem_lines": row.problems[:20],
                    }
                except Exception as exc:
                    record = {
                        "scenario": name,
                        "backend": backend,
                        "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(),
                    }
                record["name"] = name
                record["seconds"] = round(time.monotonic() - started, 1)
                out.append(record)
                print(f"  {name} [{backend}] done in {record['seconds']}s", file=sys.stderr)
                if not keep:
                    shutil.rmtree(root, ignore_errors=True)
    finally:
        if pg is not None:
            pg.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON report; non-zero if a scenario broke."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--json",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "faults.json",
        help="where to write the JSON report",
    )
    ap.add_argument(
        "--only", nargs="*", choices=sorted(fs.SCENARIOS), help="run only these scenarios"
    )
    ap.add_argument("--keep", action="store_true", help="keep each scenario's folder and logs")
    args = ap.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("redis-server is not installed", file=sys.stderr)
        return 2
    names = args.only or list(fs.SCENARIOS)
    started = time.monotonic()
    rows = run(names, args.keep)
    print(render([r for r in rows if "error" not in r]))
    failed = [r for r in rows if "error" in r]
    for r in failed:
        print(f"\n{r['name']} [{r['backend']}] FAILED: {r['error']}", file=sys.stderr)
    sqlite_cli = fs.sqlite_unreachable_cli(Path(tempfile.mkdtemp(prefix="nw-fault-cli-")))
    print(f"\nCLI on an unopenable SQLite file: exit {sqlite_cli[0]}: {sqlite_cli[2].strip()}")
    report = {
        "seconds": round(time.monotonic() - started, 1),
        "rows": rows,
        "sqlite_cli": {"exit": sqlite_cli[0], "stderr": sqlite_cli[2]},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.json} ({report['seconds']}s)")
    unclean = [r for r in rows if r.get("problems") or r.get("twice")]
    return 1 if failed or unclean else 0


if __name__ == "__main__":
    sys.exit(main())
