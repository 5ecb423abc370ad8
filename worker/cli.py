"""The `newswatch` command line: a thin layer over storage and the pipeline.

Every command builds what it needs, calls the library, and turns a `NewswatchError`
into one line on stderr with a non-zero exit; users never see a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeGuard

import click
import typer

from tasks.errors import InvalidInput, NewswatchError, StorageUnavailable
from tasks.timeparse import parse_duration, parse_when
from worker.gcpolicy import skip_collection_at_exit
from worker.output import OutputFormat, render, render_one

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.exc import OperationalError

    from worker.settings import Settings

app = typer.Typer(
    help="newswatch: watch news feeds, deduplicate stories, tag topics, alert on keyword rules.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
feeds_app = typer.Typer(help="Manage subscribed feeds.", no_args_is_help=True)
rules_app = typer.Typer(help="Manage keyword rules.", no_args_is_help=True)
alerts_app = typer.Typer(help="Query and manage stored alerts.", no_args_is_help=True)
articles_app = typer.Typer(help="Query stored articles.", no_args_is_help=True)
topics_app = typer.Typer(help="Inspect topics and topic tags.", no_args_is_help=True)
app.add_typer(feeds_app, name="feeds")
app.add_typer(rules_app, name="rules")
app.add_typer(alerts_app, name="alerts")
app.add_typer(articles_app, name="articles")
app.add_typer(topics_app, name="topics")


@app.callback()
def _options(
    topics_file: Annotated[
        Path | None,
        typer.Option(
            "--topics-file",
            help="Your own topics TOML (default: NEWSWATCH_TOPICS_FILE or seeds/topics.toml).",
        ),
    ] = None,
) -> None:
    """newswatch: watch news feeds, deduplicate stories, tag topics, alert on keyword rules."""
    if topics_file is not None:
        if not topics_file.is_file():
            raise InvalidInput(f"topics file not found: {topics_file}")
        # Through the environment, so worker processes started from here see it too.
        os.environ["NEWSWATCH_TOPICS_FILE"] = str(topics_file.resolve())
        from worker.settings import get_settings

        get_settings.cache_clear()


FormatOption = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="Output format.", case_sensitive=False)
]


def _settings() -> Settings:
    from worker.settings import get_settings

    return get_settings()


def _engine(*, initialize: bool = True) -> Engine:
    """The store, created and seeded on first use so every command works on a fresh machine."""
    from sqlalchemy.exc import OperationalError

    from storage.engine import get_engine
    from storage.schema import is_initialized

    settings = _settings()
    engine = get_engine(settings.resolved_database_url())
    try:
        ready = is_initialized(engine)
    except OperationalError as exc:
        from storage.engine import describe_unreachable

        raise StorageUnavailable(describe_unreachable(engine, exc)) from exc
    if initialize and not ready:
        typer.echo("newswatch: initializing the database (first use)", err=True)
        _initialize(settings, engine)
    elif initialize and settings.topics_file is not None:
        from worker.bootstrap import sync_topics_file

        sync_topics_file(settings, engine)
    return engine


def _initialize(settings: Settings, engine: Engine) -> dict[str, int]:
    from worker.bootstrap import initialize

    return initialize(settings, engine)


# --------------------------------------------------------------------------- init / ingest


@app.command()
def init() -> None:
    """Create or migrate the database, load topics and the seed articles (safe to repeat)."""
    settings = _settings()
    engine = _engine(initialize=False)
    counts = _initialize(settings, engine)
    typer.echo(
        f"database ready at {engine.url.render_as_string(hide_password=True)}; "
        f"topics: {counts['topics']}, seeds stored: {counts['stored']}, "
        f"duplicates: {counts['duplicates']}, already present: {counts['skipped']}"
    )


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Article files (.txt, .html) or feed files.")],
) -> None:
    """Run local article or feed files through the pipeline, like fetched entries."""
    from worker.bootstrap import ingest_files
    from worker.gcpolicy import tune_garbage_collector

    tune_garbage_collector()
    engine = _engine()
    report = ingest_files(_settings(), engine, paths)
    for line in report.errors:
        typer.echo(f"newswatch: {line}", err=True)
    typer.echo(
        f"stored {report.stored}, duplicates {report.duplicates}, "
        f"already present {report.skipped}, alerts {report.alerts}"
    )
    if report.errors:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- feeds


@feeds_app.command("add")
def feeds_add(
    url: str,
    interval: Annotated[str, typer.Option(help="Poll interval, e.g. 15m, 1h.")] = "15m",
    title: Annotated[str | None, typer.Option(help="Display title.")] = None,
) -> None:
    """Subscribe to a feed; it is due for polling at once."""
    from storage.feeds import add_feed
    from tasks.netguard import FetchError, check_url

    seconds = int(parse_duration(interval).total_seconds())
    try:
        check_url(url, allow_private=True)  # shape only; addresses are checked at fetch time
    except FetchError as exc:
        raise InvalidInput(f"not a feed URL: {url!r}: {exc}") from exc
    record = add_feed(_engine(), url.strip(), interval_seconds=seconds, title=title)
    typer.echo(f"added feed {record['id']}: {record['url']}")


@feeds_app.command("import")
def feeds_import(
    path: Annotated[Path, typer.Argument(help="An OPML file.")],
    interval: Annotated[str, typer.Option(help="Poll interval for imported feeds.")] = "15m",
) -> None:
    """Subscribe to every feed of an OPML file (nested outlines too); bad entries are reported."""
    from storage.feeds import add_feeds
    from tasks.opml import parse_opml

    seconds = int(parse_duration(interval).total_seconds())
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    result = parse_opml(content)
    for error in result.errors:
        typer.echo(f"newswatch: skipped: {error}", err=True)
    added, known = add_feeds(_engine(), list(result.feeds), interval_seconds=seconds)
    typer.echo(f"imported {added} feeds ({known} already subscribed, {len(result.errors)} skipped)")


@feeds_app.command("export")
def feeds_export(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write.")] = None,
) -> None:
    """Write the subscriptions as OPML (to stdout by default)."""
    from storage.feeds import list_feeds
    from tasks.opml import build_opml

    feeds = list_feeds(_engine())
    data = build_opml([(f["url"], f["title"]) for f in feeds], title="newswatch subscriptions")
    if output is None:
        sys.stdout.write(data.decode("utf-8"))
    else:
        output.write_bytes(data)
        typer.echo(f"wrote {len(feeds)} feeds to {output}")


@feeds_app.command("list")
def feeds_list(fmt: FormatOption = OutputFormat.table) -> None:
    """List feeds with their polling state and last error."""
    from storage.feeds import list_feeds

    render(
        list_feeds(_engine()),
        fmt,
        [
            "id",
            "url",
            "title",
            "active",
            "last_status",
            "error_count",
            "last_error",
            "next_poll_at",
        ],
        widths={"url": 50, "title": 30, "last_error": 60},
    )


@feeds_app.command("remove")
def feeds_remove(feed: Annotated[str, typer.Argument(help="Feed id or URL.")]) -> None:
    """Unsubscribe from a feed (its stored articles stay)."""
    from storage.feeds import remove_feed

    record = remove_feed(_engine(), feed)
    typer.echo(f"removed feed {record['id']}: {record['url']}")


@feeds_app.command("enable")
def feeds_enable(feed: Annotated[str, typer.Argument(help="Feed id or URL.")]) -> None:
    """Re-activate a parked or gone feed and poll it at the next tick."""
    from storage.feeds import enable_feed

    record = enable_feed(_engine(), feed)
    typer.echo(f"enabled feed {record['id']}: {record['url']}")


# --------------------------------------------------------------------------- poll


@app.command()
def poll(
    feed: Annotated[
        list[str] | None, typer.Option("--feed", help="Poll this feed (URL or id) now, due or not.")
    ] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Fetch due (or named) feeds now, in this process, store and deliver their alerts."""
    from worker.bootstrap import poll_now
    from worker.gcpolicy import tune_garbage_collector

    tune_garbage_collector()
    engine = _engine()
    reports, delivered = poll_now(_settings(), engine, feed or [])
    records = [
        {
            "feed_id": r.feed_id,
            "url": r.url,
            "status": r.status,
            "entries": r.entries,
            "stored": r.stored,
            "duplicates": r.duplicates,
            "alerts": len(r.alerts),
            "error": r.error,
        }
        for r in reports
    ]
    render(
        records, fmt, list(records[0]) if records else ["feed_id"], widths={"url": 50, "error": 60}
    )
    if fmt is OutputFormat.table:
        summary = (
            ", ".join(f"{k} {v}" for k, v in sorted(delivered.items())) or "nothing to deliver"
        )
        typer.echo(f"polled {len(records)} feeds; deliveries: {summary}", err=True)


# --------------------------------------------------------------------------- rules


@rules_app.command("add")
def rules_add(
    name: str,
    query: Annotated[
        str, typer.Option("--query", "-q", help='e.g. \'"cost sharing" AND (USFK OR "US troops")\'')
    ],
    topic: Annotated[
        list[str] | None, typer.Option("--topic", help="Only articles with this topic slug.")
    ] = None,
    notify: Annotated[
        list[str] | None, typer.Option("--notify", help="Apprise URL (repeatable).")
    ] = None,
    digest: Annotated[str, typer.Option(help="immediate, hourly or daily.")] = "immediate",
    secret: Annotated[
        str | None, typer.Option(help="Sign webhook deliveries with this secret.")
    ] = None,
) -> None:
    """Add a keyword rule; a malformed query is refused with the place it goes wrong."""
    from storage.rules import add_rule
    from storage.topics import list_topics
    from tasks.query import QuerySyntaxError, format_query, parse_query

    try:
        parsed = parse_query(query)
    except QuerySyntaxError as exc:
        raise InvalidInput(f"invalid query: {exc}") from exc
    engine = _engine()
    known = {t["slug"] for t in list_topics(engine)}
    for slug in topic or []:
        if slug not in known:
            raise InvalidInput(f"unknown topic {slug!r} (see `newswatch topics list`)")
    channels = list(notify or [])
    _check_channels(channels)
    if secret and not any(c.lower().startswith(("json://", "jsons://")) for c in channels):
        raise InvalidInput("--secret signs json:// and jsons:// webhooks; this rule has none")
    record = add_rule(
        engine,
        name=name,
        query=format_query(parsed),
        topics=list(topic or []),
        channels=channels,
        digest=digest,
        secret=secret,
    )
    typer.echo(f"added rule {record['id']} {record['name']!r}: {record['query']}")


def _check_channels(channels: list[str]) -> None:
    import apprise

    for url in channels:
        if not apprise.Apprise().add(url):
            raise InvalidInput(f"not a valid Apprise notification URL: {url!r}")


@rules_app.command("list")
def rules_list(fmt: FormatOption = OutputFormat.table) -> None:
    """List rules."""
    from storage.rules import list_rules

    render(
        list_rules(_engine()),
        fmt,
        ["id", "name", "query", "topics", "digest", "channels"],
        widths={"query": 60},
    )


@rules_app.command("remove")
def rules_remove(name: Annotated[str, typer.Argument(help="Rule name or id.")]) -> None:
    """Delete a rule and its alerts."""
    from storage.rules import remove_rule

    record = remove_rule(_engine(), name)
    typer.echo(f"removed rule {record['id']} {record['name']!r}")


@rules_app.command("test")
def rules_test(
    query: Annotated[str, typer.Argument(help="A query expression.")],
    text: Annotated[str | None, typer.Option(help="Text to test against.")] = None,
    article: Annotated[
        int | None, typer.Option(help="A stored article id to test against.")
    ] = None,
) -> None:
    """Say whether a query matches a text or a stored article, and which terms fired."""
    from tasks.query import QuerySyntaxError, parse_query
    from tasks.rules import CompiledRules, RuleSpec

    try:
        parse_query(query)
    except QuerySyntaxError as exc:
        raise InvalidInput(f"invalid query: {exc}") from exc
    if (text is None) == (article is None):
        raise InvalidInput("give exactly one of --text or --article")
    title, body, topics = "", text or "", []
    if article is not None:
        from storage.article_queries import get_article

        record = get_article(_engine(), article)
        title, body, topics = record["title"], record["text"], record["topics"]
    matches = CompiledRules([RuleSpec(1, query)]).match(title, body, topics)
    if not matches:
        typer.echo("no match")
        raise typer.Exit(1)
    typer.echo("match: " + ", ".join(matches[0].matched))
    typer.echo(f"snippet: {matches[0].snippet}")


# --------------------------------------------------------------------------- alerts


@alerts_app.command("list")
def alerts_list(
    rule: Annotated[str | None, typer.Option(help="Rule name.")] = None,
    topic: Annotated[str | None, typer.Option(help="Topic slug.")] = None,
    since: Annotated[str | None, typer.Option(help="7d, 24h, 90m or a date.")] = None,
    until: Annotated[str | None, typer.Option(help="7d, 24h, 90m or a date.")] = None,
    search: Annotated[
        str | None, typer.Option(help="Full-text search in title and snippet.")
    ] = None,
    delivered: Annotated[
        bool | None, typer.Option("--delivered/--undelivered", help="Only (un)delivered alerts.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 50,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """List stored alerts, newest first."""
    from storage.alerts import AlertFilter, list_alerts

    flt = AlertFilter(
        rule=rule,
        topic=topic,
        since=parse_when(since) if since else None,
        until=parse_when(until) if until else None,
        search=search,
        delivered=delivered,
        limit=limit,
    )
    render(
        list_alerts(_engine(), flt),
        fmt,
        ["id", "created_at", "rule", "title", "topics", "status", "delivered_at"],
        widths={"title": 60},
    )


@alerts_app.command("show")
def alerts_show(alert_id: int, fmt: FormatOption = OutputFormat.table) -> None:
    """Show one alert with its snippet and delivery state."""
    from storage.alerts import get_alert

    render_one(get_alert(_engine(), alert_id), fmt)


@alerts_app.command("ack")
def alerts_ack(alert_ids: list[int]) -> None:
    """Mark alerts as read."""
    from storage.alerts import ack_alerts

    count = ack_alerts(_engine(), alert_ids)
    typer.echo(f"acknowledged {count} alerts")


@alerts_app.command("redeliver")
def alerts_redeliver(alert_id: int) -> None:
    """Send an alert again (e.g. after it failed), in this process."""
    from storage.alerts import redeliver
    from tasks.outbox import deliver_alert_now
    from worker.runtime import get_runtime

    settings = _settings()
    engine = _engine()
    redeliver(engine, alert_id)
    status = deliver_alert_now(
        engine,
        alert_id,
        max_attempts=settings.delivery_max_attempts,
        allow_private=settings.allow_private_addresses,
        retry=get_runtime(settings).retry_policy(),
    )
    typer.echo(f"alert {alert_id}: {status}")
    if status not in ("delivered", "skipped"):
        raise typer.Exit(1)


@alerts_app.command("tail")
def alerts_tail(
    follow: Annotated[bool, typer.Option("--follow", help="Keep printing new alerts.")] = False,
    limit: Annotated[int, typer.Option(min=1)] = 10,
    interval: Annotated[float, typer.Option(help="Seconds between checks.")] = 1.0,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="text or json (one object per line).")
    ] = "text",
) -> None:
    """Print the latest alerts, then (with --follow) each new one as it is stored."""
    from storage.alerts import AlertFilter, list_alerts

    if fmt not in ("text", "json"):
        raise InvalidInput(f"--format must be text or json, not {fmt!r}")
    engine = _engine()
    latest = list(reversed(list_alerts(engine, AlertFilter(limit=limit))))
    last_id = 0
    for record in latest:
        _print_alert_line(record, fmt)
        last_id = max(last_id, record["id"])
    while follow:
        time.sleep(interval)
        for record in list_alerts(engine, AlertFilter(after_id=last_id, limit=1000)):
            _print_alert_line(record, fmt)
            last_id = record["id"]


def _print_alert_line(record: dict[str, Any], fmt: str) -> None:
    from tasks.textsafe import strip_terminal_controls

    if fmt == "json":
        typer.echo(
            json.dumps(
                {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in record.items()}
            )
        )
    else:
        when = record["created_at"].strftime("%Y-%m-%d %H:%M:%S")
        line = (
            f"{when}  #{record['id']}  [{record['rule']}]  {record['title']}  {record['url'] or ''}"
        )
        typer.echo(strip_terminal_controls(line))
    sys.stdout.flush()


# --------------------------------------------------------------------------- articles


@articles_app.command("list")
def articles_list(
    topic: Annotated[str | None, typer.Option(help="Topic slug.")] = None,
    duplicates: Annotated[bool, typer.Option("--duplicates", help="Only duplicates.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 50,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """List stored articles, newest first."""
    from storage.article_queries import list_articles

    render(
        list_articles(_engine(), limit=limit, topic=topic, duplicates_only=duplicates),
        fmt,
        ["id", "title", "source", "published_at", "duplicate_of", "topics"],
        widths={"title": 60},
    )


@articles_app.command("show")
def articles_show(article_id: int, fmt: FormatOption = OutputFormat.table) -> None:
    """Show one article with its normalized text."""
    from storage.article_queries import get_article

    render_one(get_article(_engine(), article_id), fmt)


@articles_app.command("search")
def articles_search(
    text: str,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 50,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Full-text search over article titles and texts."""
    from storage.article_queries import list_articles

    render(
        list_articles(_engine(), limit=limit, search=text),
        fmt,
        ["id", "title", "source", "published_at", "duplicate_of", "topics"],
        widths={"title": 60},
    )


@articles_app.command("duplicates")
def articles_duplicates(
    limit: Annotated[int, typer.Option(min=1)] = 100, fmt: FormatOption = OutputFormat.table
) -> None:
    """List duplicate clusters: each original with its copies and their outlets."""
    from storage.article_queries import duplicate_clusters

    clusters = duplicate_clusters(_engine(), limit=limit)
    if fmt is not OutputFormat.table:
        render(clusters, fmt, ["story_id", "original", "copies"])
        return
    rows = []
    for c in clusters:
        rows.append(
            {
                "story": c["story_id"],
                "role": "original",
                "id": c["original"]["id"],
                "source": c["original"]["source"],
                "title": c["original"]["title"],
                "similarity": None,
            }
        )
        for copy in c["copies"]:
            rows.append(
                {
                    "story": c["story_id"],
                    "role": "copy",
                    "id": copy["id"],
                    "source": copy["source"],
                    "title": copy["title"],
                    "similarity": round(copy["similarity"] or 0, 2),
                }
            )
    render(
        rows, fmt, ["story", "role", "id", "source", "title", "similarity"], widths={"title": 60}
    )


# --------------------------------------------------------------------------- topics


@topics_app.command("list")
def topics_list(fmt: FormatOption = OutputFormat.table) -> None:
    """List topics and how many articles carry each."""
    from storage.topics import list_topics

    render(
        list_topics(_engine()),
        fmt,
        ["slug", "name", "articles", "description"],
        widths={"description": 60},
    )


@topics_app.command("explain")
def topics_explain(article_id: int, fmt: FormatOption = OutputFormat.table) -> None:
    """Show why an article carries its topics: score and the phrases that fired."""
    from storage.article_queries import article_tags

    render(
        article_tags(_engine(), article_id),
        fmt,
        ["slug", "score", "phrases"],
        widths={"phrases": 80},
    )


# --------------------------------------------------------------------------- worker


def _celery_argv(
    kind: str, concurrency: int | None, loglevel: str, hostname: str | None = None
) -> list[str]:
    settings = _settings()
    argv = [kind, f"--loglevel={loglevel}"]
    if kind == "worker":
        if hostname:
            argv.append(f"--hostname={hostname}")
        if concurrency or settings.worker_concurrency:
            argv.append(f"--concurrency={concurrency or settings.worker_concurrency}")
        if settings.resolved_broker_url().startswith("filesystem"):
            # The file broker has no fanout exchange for worker-to-worker chatter.
            argv += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    return argv


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    hostname: Annotated[
        str | None, typer.Option(help="Node name, e.g. worker2@%h, when several run on one host.")
    ] = None,
) -> None:
    """Run a Celery worker (fetch, process, deliver)."""
    from worker.app import app as celery_app

    _engine()
    celery_app.worker_main(_celery_argv("worker", concurrency, loglevel, hostname))


@app.command()
def beat(loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO") -> None:
    """Run the Celery beat scheduler (exactly one per deployment)."""
    from worker.app import app as celery_app

    _engine()
    celery_app.start(_celery_argv("beat", None, loglevel))


@app.command()
def run(
    concurrency: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Run a worker with an embedded beat: the whole system in one command."""
    from worker.app import app as celery_app

    _engine()
    celery_app.worker_main([*_celery_argv("worker", concurrency, loglevel), "--beat"])


@app.command()
def stats(fmt: FormatOption = OutputFormat.table) -> None:
    """Counts of feeds, articles, duplicates and alerts."""
    from storage.alerts import alert_counts
    from storage.article_queries import article_count
    from storage.feeds import list_feeds

    engine = _engine()
    feeds = list_feeds(engine)
    record: dict[str, Any] = {
        "feeds": len(feeds),
        "feeds_failing": sum(1 for f in feeds if f["last_error"]),
        **article_count(engine),
        "alerts": sum(alert_counts(engine).values()),
        **{f"alerts_{k}": v for k, v in alert_counts(engine).items()},
    }
    render_one(record, fmt)


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, turning errors into one line on stderr."""
    logging.basicConfig(level=os.environ.get("NEWSWATCH_LOG_LEVEL", "WARNING"))
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="newswatch", standalone_mode=False)
        if isinstance(code, int):
            sys.exit(code)
    except (typer.TyperException, click.ClickException) as exc:
        # Typer may vendor its own click: both exception families are handled alike.
        ctx = getattr(exc, "ctx", None)
        hint = (
            f" (see `{ctx.command_path} --help`)"
            if ctx is not None and "Usage" not in exc.format_message()
            else ""
        )
        click.echo(f"newswatch: {exc.format_message().strip()}{hint}", err=True)
        sys.exit(getattr(exc, "exit_code", 2) or 2)
    except (typer.Abort, click.Abort):
        click.echo("newswatch: aborted", err=True)
        sys.exit(130)
    except NewswatchError as exc:
        click.echo(f"newswatch: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:
        if _is_operational_error(exc):
            from storage.engine import is_connection_error

            reason = str(exc.orig or exc).strip().splitlines()[0]
            what = "cannot reach the database" if is_connection_error(exc) else "database error"
            click.echo(f"newswatch: {what}: {reason}", err=True)
            sys.exit(1)
        if os.environ.get("NEWSWATCH_DEBUG"):
            raise
        click.echo(
            f"newswatch: internal error: {type(exc).__name__}: {exc} "
            "(set NEWSWATCH_DEBUG=1 for details)",
            err=True,
        )
        sys.exit(70)


def _is_operational_error(exc: BaseException) -> TypeGuard[OperationalError]:
    """Whether `exc` is SQLAlchemy's OperationalError (a database unreachable or failing).

    SQLAlchemy is imported only by commands that open the store, so that `--help` and
    usage errors answer fast; without it loaded, no such error can have happened.
    """
    errors = sys.modules.get("sqlalchemy.exc")
    return errors is not None and isinstance(exc, errors.OperationalError)


def entry_point() -> None:
    """The `newswatch` command: `main`, then a quick exit.

    Database connections are closed first (SQLite checkpoints its write-ahead log on
    close), then the shutdown's garbage collections are skipped (`skip_collection_at_exit`).
    """
    try:
        main()
    finally:
        # Only a command that opened the store imported storage.engine. The command's
        # outcome is decided; a connection that fails to close changes nothing the user
        # can act on, and the process is ending anyway.
        engines = sys.modules.get("storage.engine")
        if engines is not None:
            with contextlib.suppress(Exception):
                engines.dispose_engines(close=True)
        skip_collection_at_exit()


if __name__ == "__main__":  # pragma: no cover
    entry_point()
