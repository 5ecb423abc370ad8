"""Shared helpers of the ingest, pipeline and scale-out benchmarks (not a benchmark itself).

- `load_bbc(corpora)`: the 2,225 BBC News articles of ``corpora/news/bbc`` (title on the
  first line, paragraphs after it), read in place; the one file with a Latin-1 byte
  (``sport/199.txt``) is decoded as Latin-1.
- `make_entries(articles, count)`: feed entries. The first ``len(articles)`` are the real
  articles as they are; after that each entry is a *mix*: as many paragraphs as a real
  article has, each of two to four sentences drawn with a seeded RNG from all the
  corpus's sentences, titled after the article of its first sentence plus a number.
  Two mixes share a few sentences at most, so they are new stories to a near-duplicate
  detector, not copies of the real articles. (Mixes of whole paragraphs were tried: the
  corpus has ~20,000 paragraphs for ~48,000 mixes, so most mixes opened with, or were
  half made of, a paragraph of an earlier one, and newswatch rightly linked them as the
  same story: Ingest B measured copies instead of new content.)
- `write_feeds(...)` writes RSS 2.0 files into a folder, and `FeedServer` serves that
  folder over HTTP/1.1 (keep-alive) from a separate process, with a strong ETag per file
  (If-None-Match -> 304). A file rewritten during a run is served with its new ETag, which
  is how the scale-out benchmark changes a feed's content mid-run.
- `backends(choice)`, `database_server(...)`, `database_url(...)`: the store of a run,
  SQLite in its data dir or a fresh database on a throwaway PostgreSQL cluster started
  with `tests.servers.postgres_server` (the `--database` option of ingest and scaleout).

Nothing from the corpus is ever written into the repository: feeds go to a temporary folder.
"""

from __future__ import annotations

import hashlib
import html
import json
import multiprocessing
import os
import platform
import random
import re
import resource
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPORA = REPO_ROOT.parent / "shared" / "corpora"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
BASE_TIME = datetime(2005, 6, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class NewsArticle:
    """One corpus article (or generated mix): title and paragraphs."""

    key: str
    title: str
    paragraphs: tuple[str, ...]


def read_corpus_text(path: Path) -> str:
    """A corpus file's text: UTF-8, or Latin-1 for the one legacy file."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def load_bbc(corpora: Path) -> list[NewsArticle]:
    """The BBC articles in a stable order (category, then file name)."""
    root = corpora / "news" / "bbc"
    files = sorted(root.glob("*/*.txt"))
    if not files:
        raise SystemExit(f"no BBC articles under {root} (use --corpora PATH)")
    out = []
    for path in files:
        lines = [line.strip() for line in read_corpus_text(path).splitlines()]
        title = lines[0] if lines else path.stem
        paragraphs = tuple(line for line in lines[1:] if line)
        out.append(NewsArticle(f"{path.parent.name}/{path.name}", title, paragraphs))
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])")


def make_entries(articles: Sequence[NewsArticle], count: int, seed: int = 7) -> list[NewsArticle]:
    """`count` entries: the real articles first, then unique sentence mixes (see module doc)."""
    entries = list(articles[:count])
    pool = [
        (a.title, sentence)
        for a in articles
        for p in a.paragraphs
        for sentence in _SENTENCE_END.split(p)
        if sentence.strip()
    ]
    sizes = [len(a.paragraphs) for a in articles]
    rng = random.Random(seed)
    n = len(entries)
    while len(entries) < count:
        paragraphs = []
        title = ""
        for _ in range(rng.choice(sizes)):
            picks = [pool[rng.randrange(len(pool))] for _ in range(rng.randint(2, 4))]
            title = title or picks[0][0]
            paragraphs.append(" ".join(sentence for _, sentence in picks))
        entries.append(NewsArticle(f"mix/{n}", f"{title} ({n})", tuple(paragraphs)))
        n += 1
    return entries


def entry_html(article: NewsArticle) -> str:
    """The article body as the HTML paragraphs a feed would carry."""
    return "".join(f"<p>{html.escape(p, quote=False)}</p>" for p in article.paragraphs)


def rss_document(
    title: str, base_url: str, items: Sequence[tuple[str, NewsArticle]], feed_no: int
) -> bytes:
    """An RSS 2.0 document; `items` are (guid, article), newest first."""
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>',
        f"<title>{html.escape(title)}</title><link>{base_url}</link>",
        "<description>newswatch benchmark feed</description>",
    ]
    for i, (guid, article) in enumerate(items):
        when = BASE_TIME + timedelta(days=feed_no % 365, minutes=len(items) - i)
        parts.append(
            "<item>"
            f"<title>{html.escape(article.title)}</title>"
            f"<link>{base_url}/story/{html.escape(guid)}</link>"
            f'<guid isPermaLink="false">{html.escape(guid)}</guid>'
            f"<pubDate>{format_datetime(when)}</pubDate>"
            f"<description>{html.escape(entry_html(article))}</description>"
            "</item>"
        )
    parts.append("</channel></rss>\n")
    return "".join(parts).encode("utf-8")


def write_feeds(
    folder: Path, entries: Sequence[NewsArticle], feeds: int, per_feed: int, *, prefix: str = "f"
) -> list[str]:
    """Write `feeds` RSS files of `per_feed` entries each; returns their paths (URL suffixes).

    Entry ``i * per_feed + j`` goes to feed ``i``; with fewer entries than slots the list
    wraps around, and the repeats get distinct guids and links (duplicates by text).
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(feeds):
        items = []
        for j in range(per_feed):
            k = i * per_feed + j
            items.append((f"{prefix}{i}-{j}", entries[k % len(entries)]))
        name = f"{prefix}{i}.xml"
        (folder / name).write_bytes(rss_document(f"Feed {i}", f"http://bench/{i}", items, i))
        names.append(name)
    return names


def replace_file(path: Path, data: bytes) -> None:
    """Atomically replace a served file (the server never sees half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections like real servers
    folder: Path
    cache: dict[str, tuple[int, int, bytes, str]]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.lstrip("/").split("?", 1)[0]
        path = self.folder / name
        if "/" in name or not name or not path.is_file():
            self._send(404, b"not found", {})
            return
        st = path.stat()
        cached = self.cache.get(name)
        if cached is None or cached[:2] != (st.st_mtime_ns, st.st_size):
            body = path.read_bytes()
            cached = (st.st_mtime_ns, st.st_size, body, '"' + hashlib.sha1(body).hexdigest() + '"')
            self.cache[name] = cached
        body, etag = cached[2], cached[3]
        if self.headers.get("If-None-Match") == etag:
            self._send(304, b"", {"ETag": etag})
            return
        self._send(200, body, {"ETag": etag, "Content-Type": "application/rss+xml"})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A class attribute, because the constructor already listens: set on the instance
    # (as before), the backlog stayed at 5, and ten clients connecting at once lost
    # SYNs that the kernel retransmits after 1 s (1,000 304s took 1.05 s, not 0.2).
    request_queue_size = 1024


def _serve(folder: str, conn: Any) -> None:
    handler = type("Handler", (_Handler,), {"folder": Path(folder), "cache": {}})
    server = _Server(("127.0.0.1", 0), handler)
    conn.send(server.server_address[1])
    server.serve_forever()


class FeedServer:
    """Serve a folder over HTTP from a child process (so it does not share our GIL)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(str(folder), child), daemon=True)
        self._proc.start()
        self.port: int = parent.recv()

    def url(self, name: str) -> str:
        """The URL of a served file."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        return process_cpu_seconds(self._proc.pid or 0)

    def close(self) -> None:
        """Stop the server process."""
        self._proc.terminate()
        self._proc.join(5)

    def __enter__(self) -> FeedServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a running process has used so far (Linux /proc), else 0."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # Fields 14 and 15, counted after the parenthesised command name.
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(*, own: bool = True) -> float:
    """CPU time (user + system) of this process's threads (unless not `own`), plus that of
    its child processes waited for so far (and of theirs, waited for by them)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = children.ru_utime + children.ru_stime
    if own:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        total += usage.ru_utime + usage.ru_stime
    return total


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    """Write a benchmark's results as JSON (if asked)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", "utf-8")
    print(f"\nJSON written to {path}")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width text table."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
        if isinstance(v, int):
            return f"{v:,}"
        return "" if v is None else str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in cells:
        out.append("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(out)


BACKENDS = ("sqlite", "postgresql")


def postgres_available() -> bool:
    """Whether a PostgreSQL server can be started here (see `tests.servers`)."""
    from tests.servers import postgres_bindir

    return postgres_bindir() is not None


def backends(choice: str) -> list[str]:
    """The backends a `--database` choice names (`both`: PostgreSQL only if installed)."""
    if choice != "both":
        return [choice]
    return list(BACKENDS) if postgres_available() else ["sqlite"]


@contextmanager
def database_server(names: Sequence[str]) -> Iterator[str | None]:
    """A throwaway PostgreSQL cluster (`tests.servers.postgres_server`) if `names`
    includes "postgresql"; yields its URL, or None when only SQLite is used."""
    if "postgresql" not in names:
        yield None
        return
    from tests.servers import postgres_server

    with postgres_server() as url:
        yield url


def _on_cluster(server_url: str, *statements: str) -> None:
    """Run statements outside a transaction on the cluster of `server_url`."""
    import psycopg

    plain = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def fresh_database(server_url: str, name: str, *, template: str | None = None) -> str:
    """Create database `name` on the cluster of `server_url` (a copy of database
    `template`, if given); returns its URL."""
    copy = f' TEMPLATE "{template}"' if template else ""
    _on_cluster(server_url, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"{copy}')
    return server_url.rsplit("/", 1)[0] + "/" + name


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name` on the cluster of `server_url`, if it exists."""
    _on_cluster(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_url(backend: str, data_dir: Path, server_url: str | None, name: str) -> str:
    """The store URL of one run: a file in `data_dir`, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        return f"sqlite:///{data_dir / 'newswatch.db'}"
    if server_url is None:
        raise ValueError("PostgreSQL run without a PostgreSQL server")
    return fresh_database(server_url, name)


def epoch(value: datetime | str) -> float:
    """Seconds since the epoch of a stored UTC time (SQLite hands back text)."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def newswatch_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for a newswatch subprocess on a fresh data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
    env.update(
        NEWSWATCH_DATA_DIR=str(data_dir),
        NEWSWATCH_ALLOW_PRIVATE_ADDRESSES="1",
        PYTHONPATH=str(REPO_ROOT),
        **extra,
    )
    return env


def newswatch_bin() -> str:
    """The `newswatch` console script of this interpreter's environment."""
    candidate = Path(sys.executable).parent / "newswatch"
    return str(candidate) if candidate.exists() else "newswatch"


WORD = re.compile(r"[A-Za-z][a-z]{3,}")
