"""The command line as a user meets it: help everywhere, JSON fields, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from worker.cli import app


def all_command_paths() -> list[list[str]]:
    paths: list[list[str]] = []
    for info in app.registered_commands:
        paths.append([info.name or info.callback.__name__])  # type: ignore[union-attr]
    for group in app.registered_groups:
        assert group.typer_instance is not None
        for info in group.typer_instance.registered_commands:
            paths.append([group.name or "", info.name or info.callback.__name__])  # type: ignore[union-attr]
    return paths


@pytest.mark.parametrize("path", all_command_paths(), ids=" ".join)
def test_every_command_has_help(cli: Any, path: list[str]) -> None:
    result = cli(*path, "--help")
    assert result.code == 0, result.err
    assert "Usage" in result.out and len(result.out.splitlines()) > 3


def test_design_commands_exist() -> None:
    names = {" ".join(p) for p in all_command_paths()}
    for required in (
        "init",
        "ingest",
        "feeds add",
        "feeds import",
        "feeds export",
        "feeds list",
        "feeds remove",
        "poll",
        "rules add",
        "rules list",
        "rules remove",
        "rules test",
        "alerts list",
        "alerts show",
        "alerts ack",
        "alerts tail",
        "articles list",
        "articles show",
        "articles search",
        "articles duplicates",
        "topics list",
        "topics explain",
        "worker",
        "beat",
        "run",
        "stats",
    ):
        assert required in names


def one_line_error(result: Any) -> str:
    assert result.code != 0
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    return lines[0]


def test_malformed_query_is_refused_with_position(cli: Any) -> None:
    cli("init")
    line = one_line_error(cli("rules", "add", "bad", "--query", '"cost sharing" AND (USFK'))
    assert "query" in line.lower()
    assert cli("rules", "list", "--format", "json").json() == []


def test_bad_option_values(cli: Any) -> None:
    cli("init")
    assert "date or duration" in one_line_error(cli("alerts", "list", "--since", "last tuesday"))
    assert "--format" in one_line_error(cli("alerts", "list", "--format", "yaml"))
    one_line_error(cli("feeds", "add", "ftp://example.com/feed"))
    one_line_error(cli("feeds", "add", "https://example.com/rss", "--interval", "often"))
    one_line_error(cli("rules", "add", "x", "--query", "a", "--topic", "no-such-topic"))
    one_line_error(cli("rules", "add", "x", "--query", "a", "--notify", "notaurl"))
    one_line_error(cli("alerts", "show", "999"))
    one_line_error(cli("articles", "show", "999"))
    one_line_error(cli("feeds", "remove", "https://nowhere.example/"))


def test_since_accepts_durations_and_dates(cli: Any) -> None:
    cli("init")
    for value in ("7d", "24h", "90m", "2025-07-01", "2025-07-01T12:00"):
        result = cli("alerts", "list", "--since", value, "--format", "json")
        assert result.code == 0, result.err
        assert result.json() == []
    assert "date or duration" in one_line_error(cli("alerts", "list", "--since", "yesterdayish"))


def test_unreachable_database_is_one_line(
    cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from worker.settings import get_settings

    monkeypatch.setenv("NEWSWATCH_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    line = one_line_error(cli("alerts", "list"))
    assert "cannot reach the database" in line


def test_seed_articles_show_text_and_json_fields(cli: Any) -> None:
    cli("init")
    articles = cli("articles", "list", "--format", "json").json()
    assert len(articles) == 5
    for key in ("id", "guid", "url", "title", "source", "published_at", "duplicate_of", "topics"):
        assert all(key in a for a in articles)
    seed3 = next(a for a in articles if a["guid"].startswith("seeds/003"))
    [shown] = cli("articles", "show", str(seed3["id"]), "--format", "json").json()
    assert "unprecedented" in shown["text"]
    for boilerplate in (
        "Try Our AI Features",
        "Hong Kong should ban deepfake",
        "No comments yet",
        "Related Articles",
    ):
        assert boilerplate not in shown["text"]
    explained = cli("topics", "explain", str(seed3["id"]), "--format", "json").json()
    assert {"slug", "score", "phrases"} <= set(explained[0])
    assert all(t["phrases"] for t in explained)


def test_rules_test_command(cli: Any) -> None:
    assert cli("rules", "test", "Kim", "--text", "Kim Jong Un met Putin").code == 0
    no = cli("rules", "test", "Kim", "--text", "Kimchi prices rose")
    assert no.code == 1 and "no match" in no.out
    hyphen = cli("rules", "test", '"cost sharing"', "--text", "the cost-sharing deal")
    assert hyphen.code == 0 and "match" in hyphen.out


def test_feeds_opml_round_trip(cli: Any, tmp_path: Path) -> None:
    cli("init")
    opml = tmp_path / "subs.opml"
    opml.write_text(
        '<?xml version="1.0"?><opml version="2.0"><head><title>t</title></head><body>'
        '<outline text="Asia"><outline type="rss" text="A" xmlUrl="https://a.example/rss"/>'
        '<outline type="rss" text="B" xmlUrl="https://b.example/atom"/></outline>'
        '<outline type="rss" text="A again" xmlUrl="https://a.example/rss"/>'
        '<outline type="rss" text="Broken" xmlUrl="not a url"/>'
        "</body></opml>"
    )
    result = cli("feeds", "import", str(opml))
    assert result.code == 0, result.err
    assert "imported 2 feeds" in result.out
    exported = cli("feeds", "export")
    assert "https://a.example/rss" in exported.out and "https://b.example/atom" in exported.out
    urls = sorted(f["url"] for f in cli("feeds", "list", "--format", "json").json())
    assert urls == ["https://a.example/rss", "https://b.example/atom"]
    assert cli("feeds", "remove", "https://a.example/rss").code == 0
    assert len(cli("feeds", "list", "--format", "json").json()) == 1


def test_ingest_local_files(cli: Any, tmp_path: Path) -> None:
    cli("init")
    cli("rules", "add", "jeju", "--query", "Jeju AND drills")
    page = tmp_path / "story.txt"
    page.write_text(
        "Navies hold drills off Jeju\n\nThe navies of South Korea, the United States and Japan held "
        "trilateral drills off Jeju on Sunday, the defence ministry said, in response to missile launches.\n"
    )
    result = cli("ingest", str(page), str(tmp_path / "missing.txt"))
    assert result.code == 1 and "missing.txt" in result.err
    assert "stored 1" in result.out
    assert len(cli("alerts", "list", "--format", "json").json()) == 1


def test_csv_output(cli: Any) -> None:
    cli("init")
    out = cli("articles", "list", "--format", "csv").out.splitlines()
    assert out[0].startswith("id,guid,url,title") and len(out) >= 6


def test_console_script_runs_without_traceback(tmp_path: Path) -> None:
    env = {"NEWSWATCH_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "alerts", "list", "--limit", "0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


def test_console_script_closes_the_store_before_exiting(tmp_path: Path) -> None:
    """The command skips the shutdown's garbage collections, but not the closing of its
    connections: SQLite then checkpoints its write-ahead log into the database file."""
    env = {"NEWSWATCH_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "init"],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr
    database = tmp_path / "newswatch.db"
    assert database.stat().st_size > 100_000  # the seed articles are in the file itself
    assert not database.with_name("newswatch.db-wal").exists()


def test_typer_app_is_importable_without_side_effects() -> None:
    assert isinstance(app, typer.Typer)


def test_users_own_topics_file(cli: Any, tmp_path: Path) -> None:
    topics = tmp_path / "mine.toml"
    topics.write_text(
        '[[topic]]\nslug = "kimchi-trade"\nname = "Kimchi trade"\ndescription = "Exports of kimchi"\n'
        'threshold = 1.0\n[topic.phrases]\n"kimchi" = 1\n"fermented cabbage" = 1\n'
    )
    assert cli("--topics-file", str(topics), "init").code == 0
    slugs = [
        t["slug"]
        for t in cli("--topics-file", str(topics), "topics", "list", "--format", "json").json()
    ]
    assert "kimchi-trade" in slugs
    page = tmp_path / "k.txt"
    page.write_text(
        "Kimchi exports hit a record\n\nSouth Korea's kimchi exports hit a record high as demand for fermented cabbage grew in Europe.\n"
    )
    assert cli("--topics-file", str(topics), "ingest", str(page)).code == 0
    [article] = [
        a for a in cli("articles", "list", "--format", "json").json() if a["guid"].endswith("k.txt")
    ]
    assert article["topics"] == ["kimchi-trade"]
    assert "not found" in one_line_error(
        cli("--topics-file", str(tmp_path / "nope.toml"), "topics", "list")
    )


def test_secret_needs_a_signed_channel(cli: Any) -> None:
    cli("init")
    line = one_line_error(
        cli("rules", "add", "s", "--query", "a", "--notify", "ntfy://topic", "--secret", "x")
    )
    assert "json://" in line


def test_fetch_task_ends_before_its_lease() -> None:
    from worker.app import celery_config
    from worker.settings import Settings

    config = celery_config(Settings(fetch_lease_seconds=120, data_dir=Path("/tmp/nw-lease")))
    assert config["task_annotations"]["newswatch.fetch_feed"]["time_limit"] < 120


def test_terminal_escapes_from_feeds_never_reach_the_terminal(cli: Any, tmp_path: Path) -> None:
    cli("init")
    cli("rules", "add", "jeju", "--query", "Jeju")
    page = tmp_path / "evil.txt"
    page.write_text(
        "Drills off Jeju \x1b]0;pwned\x07\x1b[31mred\x1b[0m\n\n"
        "The navies held drills off Jeju on Sunday \x1b[2J with \x9b31m more ships than last year.\n"
    )
    assert cli("ingest", str(page)).code == 0
    for fmt in ("table", "json", "csv"):
        for args in (("alerts", "list"), ("articles", "list")):
            out = cli(*args, "--format", fmt).out
            assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out, (args, fmt)
    assert "Jeju" in cli("alerts", "list", "--format", "json").out


def test_alerts_tail_follow_prints_new_alerts_as_they_are_stored(
    cli: Any, env: dict[str, str], tmp_path: Path
) -> None:
    import os
    import time

    cli("init")
    cli("rules", "add", "jeju", "--query", "Jeju")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "alerts",
            "tail",
            "--follow",
            "--interval",
            "0.2",
            "--format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        time.sleep(1.5)  # tail has printed the (empty) backlog and is following
        page = tmp_path / "jeju.txt"
        page.write_text(
            "Drills off Jeju\n\nThe navies held drills off Jeju on Sunday, officials said.\n"
        )
        assert cli("ingest", str(page)).code == 0
        assert proc.stdout is not None
        line = proc.stdout.readline()
        record = json.loads(line)
        assert record["rule"] == "jeju" and record["title"] == "Drills off Jeju"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
