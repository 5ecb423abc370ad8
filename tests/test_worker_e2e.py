"""The real thing: `newswatch run` (Celery worker + beat) turning feed changes into alerts.

Runs once on a real redis-server and once on the embedded default broker (no server).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.servers import FeedServer, rss

pytestmark = pytest.mark.slow

TALKS = (
    "Negotiators from Washington and Seoul met again on the cost-sharing agreement that sets how "
    "much South Korea pays for the 28,500 US troops stationed on its soil."
)
DRILLS = (
    "The United States, Japan and South Korea began trilateral naval drills near Jeju island on "
    "Monday, the South's navy said, in a show of force after North Korea's latest missile launch."
)
DEAL = (
    "Seoul agreed to raise its contribution for US troops by 8.3 percent next year under a new "
    "cost-sharing deal, the foreign ministry said, ending months of tense negotiations."
)


@contextmanager
def newswatch_run(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start `newswatch run` as a real process; stop it with SIGTERM afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "run", "--concurrency", "2", "--loglevel", "INFO"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}; worker log tail:\n{tail}")


def scenario(cli: Any, feeds: FeedServer, tmp_path: Path, extra_env: dict[str, str]) -> None:
    feeds.put(
        "/korea.xml",
        rss(
            [
                {
                    "guid": "t1",
                    "title": "Cost-sharing talks resume",
                    "description": f"<p>{TALKS}</p>",
                },
                {
                    "guid": "d1",
                    "title": "Trilateral drills begin",
                    "description": f"<p>{DRILLS}</p>",
                },
            ]
        ),
    )
    assert cli("init").code == 0
    assert cli("feeds", "add", feeds.url("/korea.xml"), "--interval", "2s").code == 0
    assert cli("rules", "add", "costs", "--query", '"cost sharing" AND (troops OR USFK)').code == 0

    env = {
        **os.environ,
        **{k: v for k, v in os.environ.items() if k.startswith("NEWSWATCH_")},
        **extra_env,
        "NEWSWATCH_SCHEDULE_TICK_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "worker.log"

    def alerts() -> list[dict[str, Any]]:
        result = cli("alerts", "list", "--format", "json")
        assert result.code == 0, result.err
        return list(result.json())

    with newswatch_run(env, log):
        wait_until(lambda: len(alerts()) >= 1, 90, "the first alert", log)
        feeds.put(
            "/korea.xml",
            rss(
                [
                    {
                        "guid": "t2",
                        "title": "Seoul agrees new cost-sharing deal",
                        "description": f"<p>{DEAL}</p>",
                    },
                    {
                        "guid": "t1",
                        "title": "Cost-sharing talks resume",
                        "description": f"<p>{TALKS}</p>",
                    },
                    {
                        "guid": "d1",
                        "title": "Trilateral drills begin",
                        "description": f"<p>{DRILLS}</p>",
                    },
                ]
            ),
        )
        wait_until(lambda: len(alerts()) >= 2, 90, "the second alert", log)
        # Several more polls happen meanwhile (2 s interval); none may add an alert.
        time.sleep(6)
        final = alerts()
        conditional = [r for r in feeds.requests_to("/korea.xml") if r.headers.get("if-none-match")]
    assert [a["title"] for a in final] == [
        "Seoul agrees new cost-sharing deal",
        "Cost-sharing talks resume",
    ]
    assert conditional, "later polls must be conditional GETs"
    assert "Traceback" not in log.read_text(errors="replace")


def test_run_on_redis_broker(
    cli: Any, feeds: FeedServer, tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSWATCH_BROKER_URL", redis_url)
    scenario(cli, feeds, tmp_path, {"NEWSWATCH_BROKER_URL": redis_url})


def test_run_on_embedded_default(cli: Any, feeds: FeedServer, tmp_path: Path) -> None:
    scenario(cli, feeds, tmp_path, {})
