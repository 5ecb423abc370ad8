"""Fetch and parse every document of the feedparser test corpus over real HTTP.

Serves ../shared/corpora/feeds from a local ThreadingHTTPServer (with the Content-Type
and other headers the `http` documents ask for in their `Header:` lines), lists the
documents in a generated OPML file, imports it with `tasks.opml.parse_opml`, then runs
`fetch_url` + `parse_feed` on each feed from a pool of 10 threads, as a poll would.

Reports feeds, feeds with entries, entries, errors by kind, bozo documents, exceptions
that escaped (must be 0) and the time taken. Where a document states feedparser's
expected result (`Expect:`), the expression is evaluated against feedparser's own result
dict obtained exactly as `parse_feed` calls feedparser (and, for comparison, with
feedparser's default options), in a namespace holding only the result's names.

    python benchmarks/feeds_corpus.py [--corpora PATH] [--json PATH]
"""

from __future__ import annotations

import argparse
import builtins
import io
import json
import re
import sys
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import feedparser  # noqa: E402

from tasks.fetch import FetchPolicy, fetch_url, make_client  # noqa: E402
from tasks.opml import build_opml, parse_opml  # noqa: E402
from tasks.parse import parse_feed, run_feedparser  # noqa: E402

_COMMENT = re.compile(r"Description:(.*?)Expect:(.*?)-->", re.DOTALL)
_HEADER = re.compile(r"^\s*Header:\s*([A-Za-z0-9-]+):\s*(.*?)\s*$", re.MULTILINE)
_SAFE_BUILTINS: dict[str, Any] = {
    name: getattr(builtins, name)
    for name in (
        "len",
        "str",
        "int",
        "float",
        "bool",
        "tuple",
        "list",
        "dict",
        "isinstance",
        "set",
        "sorted",
        "any",
        "all",
        "min",
        "max",
        "repr",
        "True",
        "False",
        "None",
    )
}


@dataclass
class Doc:
    rel: str
    body: bytes
    headers: dict[str, str]
    expect: str | None


@dataclass
class Outcome:
    rel: str
    status: int | None = None
    error_kind: str | None = None
    error: str | None = None
    parse_error: str | None = None
    bozo: bool = False
    entries: int = 0
    expect: str | None = None
    verdict: str | None = None  # agree / disagree / unevaluable, as parse_feed calls it
    verdict_defaults: str | None = None  # with feedparser's default options
    escaped: str | None = None


def _decode_for_comment(data: bytes) -> str:
    """Decode by BOM or byte pattern, as feedparser's harness does, to find comments."""
    for bom, codec in (
        (b"\x00\x00\xfe\xff", "utf-32-be"),
        (b"\xff\xfe\x00\x00", "utf-32-le"),
        (b"\xfe\xff", "utf-16-be"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xef\xbb\xbf", "utf-8"),
    ):
        if data.startswith(bom):
            return data[len(bom) :].decode(codec, "ignore")
    for pattern, codec in (
        (b"\x00\x00\x00\x3c", "utf-32-be"),
        (b"\x3c\x00\x00\x00", "utf-32-le"),
        (b"\x00\x3c\x00\x3f", "utf-16-be"),
        (b"\x3c\x00\x3f\x00", "utf-16-le"),
    ):
        if data.startswith(pattern):
            return data.decode(codec, "ignore")
    return data.decode("utf-8", "ignore")


def load_docs(feeds_dir: Path) -> list[Doc]:
    docs = []
    for path in sorted(feeds_dir.rglob("*")):
        if not path.is_file() or path.suffix not in (".xml", ".json"):
            continue
        rel = path.relative_to(feeds_dir).as_posix()
        body = path.read_bytes()
        text = _decode_for_comment(body)
        expect = None
        if path.suffix == ".json":
            try:
                test = json.loads(body).get("__TEST__", "")
            except ValueError:
                test = ""
            m = re.search(r"Expect:(.*)", test, re.DOTALL)
            expect = m.group(1).strip() if m else None
        else:
            m = _COMMENT.search(text)
            expect = " ".join(m.group(2).split()) if m else None
        headers: dict[str, str] = {}
        if "http" in rel:
            headers = {k.lower(): v for k, v in _HEADER.findall(text)}
            headers.setdefault("content-type", "text/xml")
        elif path.suffix == ".json":
            headers = {"content-type": "application/feed+json"}
        else:
            # No header at all in the peer's harness; application/xml lets the document's
            # own declaration decide, which is the same thing.
            headers = {"content-type": "application/xml"}
        docs.append(Doc(rel, body, headers, expect))
    return docs


def serve(docs: list[Doc]) -> tuple[ThreadingHTTPServer, str]:
    by_path = {"/" + quote(d.rel): d for d in docs}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            doc = by_path.get(self.path) or by_path.get("/" + quote(unquote(self.path[1:])))
            if doc is None:
                self.send_error(404)
                return
            self.send_response(200)
            for name, value in doc.headers.items():
                if name not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(doc.body)))
            self.end_headers()
            self.wfile.write(doc.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.1,), daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


def evaluate(expect: str, result: Any) -> str:
    """agree / disagree / unevaluable for one Expect expression against a result dict."""
    namespace = dict(result)
    try:
        value = eval(expect, {"__builtins__": _SAFE_BUILTINS}, namespace)
    except NameError:
        return "unevaluable"  # refers to a module or class the restricted namespace lacks
    except Exception:
        return "disagree"  # the expected key or index is not there
    return "agree" if value else "disagree"


def run_one(doc: Doc, url: str, client: Any, policy: FetchPolicy) -> Outcome:
    out = Outcome(rel=doc.rel, expect=doc.expect)
    try:
        fetched = fetch_url(url, policy=policy, client=client)
        out.status, out.error_kind, out.error = fetched.status, fetched.error_kind, fetched.error
        if fetched.content is None:
            return out
        content_type = fetched.headers.get("content-type")
        parsed = parse_feed(fetched.content, url=fetched.final_url, content_type=content_type)
        out.bozo, out.entries, out.parse_error = parsed.bozo, len(parsed.entries), parsed.error
        if doc.expect:
            if doc.rel.endswith(".json"):
                out.verdict = out.verdict_defaults = "unevaluable"  # feedparser 6 has no JSON
            else:
                ours = run_feedparser(fetched.content, content_type=content_type)
                out.verdict = evaluate(doc.expect, ours)
                headers = {k: v for k, v in doc.headers.items()}
                defaults = feedparser.parse(io.BytesIO(fetched.content), response_headers=headers)
                out.verdict_defaults = evaluate(doc.expect, defaults)
    except Exception:  # the point of the benchmark is to count these
        out.escaped = traceback.format_exc(limit=3)
    return out


def group_of(rel: str) -> str:
    parts = rel.split("/")
    return (
        "/".join(parts[:2])
        if parts[0] in ("wellformed", "illformed") and len(parts) > 2
        else parts[0]
    )


@dataclass
class Report:
    corpora: str
    feeds_in_corpus: int
    feeds_imported: int
    opml_errors: list[str]
    feeds_with_entries: int
    total_entries: int
    fetch_errors_by_kind: dict[str, int]
    parse_errors: dict[str, int]
    ok_without_entries: int
    bozo_documents: int
    exceptions_escaped: int
    seconds: float
    expect: dict[str, dict[str, int]] = field(default_factory=dict)
    expect_by_group: dict[str, dict[str, int]] = field(default_factory=dict)
    escaped_samples: list[str] = field(default_factory=list)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--corpora",
        type=Path,
        default=ROOT / ".." / "shared" / "corpora",
        help="folder holding feeds/ (default: ../shared/corpora beside the repo)",
    )
    ap.add_argument(
        "--json",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "feeds_corpus.json",
        help="where to write the JSON report",
    )
    ap.add_argument("--threads", type=int, default=10)
    args = ap.parse_args(argv)

    feeds_dir = args.corpora.resolve() / "feeds"
    if not feeds_dir.is_dir():
        print(f"no feeds corpus at {feeds_dir}", file=sys.stderr)
        return 2
    docs = load_docs(feeds_dir)
    httpd, base = serve(docs)
    started = time.monotonic()
    try:
        opml = build_opml([(base + quote(d.rel), d.rel) for d in docs], "feeds corpus")
        imported = parse_opml(opml)
        by_url = {base + quote(d.rel): d for d in docs}
        policy = FetchPolicy(allow_private=True)
        with make_client(policy) as client, ThreadPoolExecutor(args.threads) as pool:
            outcomes = list(
                pool.map(
                    lambda feed: run_one(by_url[feed[0]], feed[0], client, policy), imported.feeds
                )
            )
    finally:
        httpd.shutdown()
        httpd.server_close()
    seconds = time.monotonic() - started

    def bucket(error: str | None) -> str:
        return (error or "").split(":", 1)[0] + (
            ": " + error.split(":", 1)[1].strip()[:40] if error and "HTML" in error else ""
        )

    report = Report(
        corpora=str(feeds_dir),
        feeds_in_corpus=len(docs),
        feeds_imported=len(imported.feeds),
        opml_errors=imported.errors,
        feeds_with_entries=sum(1 for o in outcomes if o.entries),
        total_entries=sum(o.entries for o in outcomes),
        fetch_errors_by_kind=dict(Counter(o.error_kind for o in outcomes if o.error_kind)),
        parse_errors=dict(Counter(bucket(o.parse_error) for o in outcomes if o.parse_error)),
        ok_without_entries=sum(
            1 for o in outcomes if not o.entries and not o.error_kind and not o.parse_error
        ),
        bozo_documents=sum(1 for o in outcomes if o.bozo),
        exceptions_escaped=sum(1 for o in outcomes if o.escaped),
        seconds=round(seconds, 2),
        escaped_samples=[o.escaped for o in outcomes if o.escaped][:5],
    )
    for mode, attr in (
        ("as parse_feed calls feedparser", "verdict"),
        ("feedparser defaults", "verdict_defaults"),
    ):
        report.expect[mode] = dict(Counter(getattr(o, attr) for o in outcomes if o.expect))
    groups: dict[str, Counter[str]] = {}
    for o in outcomes:
        if o.expect and o.verdict:
            groups.setdefault(group_of(o.rel), Counter())[o.verdict] += 1
    report.expect_by_group = {g: dict(c) for g, c in sorted(groups.items())}

    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = asdict(report)
    payload["disagreements"] = [
        {"file": o.rel, "expect": o.expect} for o in outcomes if o.verdict == "disagree"
    ]
    payload["feeds_with_neither_entries_nor_error"] = [
        o.rel for o in outcomes if not o.entries and not o.error_kind and not o.parse_error
    ]
    args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    print(f"\nJSON written to {args.json}")
    return 1 if report.exceptions_escaped else 0


def print_table(r: Report) -> None:
    rows = [
        ("documents in corpus", r.feeds_in_corpus),
        ("feeds imported from OPML", r.feeds_imported),
        ("feeds with entries", r.feeds_with_entries),
        ("entries", r.total_entries),
        ("valid feeds without entries", r.ok_without_entries),
        ("bozo (ill-formed) documents", r.bozo_documents),
        ("exceptions escaped", r.exceptions_escaped),
        ("seconds", r.seconds),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print("\nfetch errors by kind:", r.fetch_errors_by_kind or "none")
    print("parse errors:", r.parse_errors or "none")
    if r.opml_errors:
        print("OPML errors:", r.opml_errors)
    print("\nExpect: agreement")
    for mode, counts in r.expect.items():
        print(f"  {mode:<32} " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    print("\n  by folder (as parse_feed calls feedparser):")
    for group, counts in r.expect_by_group.items():
        total = sum(counts.values())
        print(
            f"    {group:<28} {counts.get('agree', 0):>4}/{total:<4} "
            + "  ".join(f"{k}={v}" for k, v in sorted(counts.items()) if k != "agree")
        )


if __name__ == "__main__":
    raise SystemExit(main())
