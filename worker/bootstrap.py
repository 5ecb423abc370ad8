"""Operations the CLI runs in-process: initialize the store, ingest files, poll now."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from storage.feeds import claim_feeds, find_feed
from storage.schema import upgrade
from storage.topics import sync_topics
from tasks.errors import ConfigError, InvalidInput
from tasks.models import RawEntry
from tasks.outbox import deliver_all_due
from tasks.pipeline import process_entries
from tasks.polling import PollReport, poll_targets
from tasks.topics import TopicsFileError, load_topics
from worker.runtime import get_runtime
from worker.settings import Settings

SEED_ORIGIN = "seeds"
FEED_SUFFIXES = {".xml", ".rss", ".atom", ".rdf", ".json"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}


def read_text(path: Path) -> str:
    """A local file's text: UTF-8, falling back to Latin-1 for legacy files."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def seed_entries(seeds_dir: Path) -> list[RawEntry]:
    """The seed articles as raw entries with guid `seeds/<file name>`."""
    return [
        RawEntry(
            guid=f"seeds/{p.name}", url=None, title=None, content=read_text(p), content_type="text"
        )
        for p in sorted(seeds_dir.glob("*.txt"))
    ]


def sync_topics_file(settings: Settings, engine: Engine) -> int:
    """Load the topics file in use and record its topics in the store; returns their number."""
    try:
        topics = load_topics(settings.topics_path())
    except TopicsFileError as exc:
        raise ConfigError(str(exc)) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read topics file {settings.topics_path()}: {exc.strerror}"
        ) from exc
    sync_topics(engine, [(t.slug, t.name, t.description) for t in topics])
    return len(topics)


def initialize(settings: Settings, engine: Engine) -> dict[str, int]:
    """Migrate the schema, load topics, run the seeds through the pipeline (idempotent)."""
    upgrade(engine)
    topic_count = sync_topics_file(settings, engine)
    runtime = get_runtime(settings)
    result = process_entries(
        engine,
        runtime.matchers.get(engine),
        seed_entries(settings.seeds_dir),
        origin=SEED_ORIGIN,
        feed_id=None,
        threshold=settings.near_duplicate_threshold,
    )
    return {
        "topics": topic_count,
        "stored": len(result.stored),
        "duplicates": len(result.duplicates),
        "skipped": result.skipped,
    }


@dataclass(slots=True)
class IngestReport:
    """What `newswatch ingest` did."""

    stored: int = 0
    duplicates: int = 0
    skipped: int = 0
    alerts: int = 0
    errors: list[str] = field(default_factory=list)


def entries_from_file(path: Path) -> list[RawEntry]:
    """A local file as raw entries: a feed file yields its entries, an article one entry."""
    from tasks.normalize import html_to_text
    from tasks.parse import parse_feed

    suffix = path.suffix.lower()
    guid = path.resolve().as_uri()
    if suffix in FEED_SUFFIXES:
        parsed = parse_feed(path.read_bytes(), url=guid)
        if parsed.error and not parsed.entries:
            raise InvalidInput(f"{path}: {parsed.error}")
        return list(parsed.entries)
    text = read_text(path)
    if suffix in HTML_SUFFIXES:
        return [
            RawEntry(
                guid=guid,
                url=None,
                title=None,
                content=html_to_text(text, full_page=True),
                content_type="text",
            )
        ]
    return [RawEntry(guid=guid, url=None, title=None, content=text, content_type="text")]


def ingest_files(settings: Settings, engine: Engine, paths: list[Path]) -> IngestReport:
    """Run local files through the pipeline; unreadable files are reported, others go on."""
    runtime = get_runtime(settings)
    report = IngestReport()
    entries: list[RawEntry] = []
    for path in paths:
        try:
            entries.extend(entries_from_file(path))
        except OSError as exc:
            report.errors.append(f"cannot read {path}: {exc.strerror or exc}")
        except InvalidInput as exc:
            report.errors.append(str(exc))
    result = process_entries(
        engine,
        runtime.matchers.get(engine),
        entries,
        origin="local",
        feed_id=None,
        threshold=settings.near_duplicate_threshold,
    )
    report.stored, report.duplicates = len(result.stored), len(result.duplicates)
    report.skipped, report.alerts = result.skipped, len(result.alerts)
    deliver_all_due(
        engine,
        max_attempts=settings.delivery_max_attempts,
        allow_private=settings.allow_private_addresses,
    )
    return report


def poll_now(
    settings: Settings, engine: Engine, feeds: list[str]
) -> tuple[list[PollReport], dict[str, int]]:
    """Fetch the due feeds (or the named ones), store them, then deliver due alerts."""
    runtime = get_runtime(settings)
    only = [int(find_feed(engine, f)["id"]) for f in feeds] if feeds else None
    targets, _parked = claim_feeds(
        engine, lease_seconds=settings.fetch_lease_seconds, limit=100_000, only=only
    )
    reports = poll_targets(
        engine,
        runtime.matchers.get(engine),
        targets,
        policy=runtime.fetch_policy(),
        client=runtime.http,
        concurrency=settings.fetch_concurrency,
        threshold=settings.near_duplicate_threshold,
        max_backoff=settings.max_backoff_seconds,
        processes=settings.resolved_poll_processes(),
    )
    delivered = deliver_all_due(
        engine,
        max_attempts=settings.delivery_max_attempts,
        allow_private=settings.allow_private_addresses,
    )
    return reports, delivered
