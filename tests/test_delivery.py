"""Alert delivery through Apprise to a real local HTTP endpoint that records what it got."""

from __future__ import annotations

import base64
import hashlib
import hmac
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.servers import FeedServer, json_body, rss

STORY = (
    "<p>Washington and Seoul resumed negotiations on Tuesday over the cost-sharing agreement for "
    "the 28,500 US troops in South Korea, officials said in Honolulu.</p>"
)
SECOND = (
    "<p>South Korea offered to raise its share of the cost of US troops by 13 percent as "
    "cost-sharing negotiators met again in Seoul on Friday.</p>"
)


def hook_url(server: FeedServer, path: str = "/hook") -> str:
    return f"json://127.0.0.1:{server.port}{path}"


def setup_feed(cli: Any, feeds: FeedServer, *stories: tuple[str, str]) -> None:
    feeds.put(
        "/wire.xml", rss([{"guid": g, "title": g.upper(), "description": d} for g, d in stories])
    )
    assert cli("init").code == 0
    assert cli("feeds", "add", feeds.url("/wire.xml")).code == 0


def test_alert_delivered_once_with_stable_id(cli: Any, feeds: FeedServer) -> None:
    setup_feed(cli, feeds, ("t1", STORY))
    assert (
        cli("rules", "add", "costs", "--query", "cost sharing", "--notify", hook_url(feeds)).code
        == 0
    )
    assert cli("poll").code == 0
    posts = feeds.requests_to("/hook")
    assert len(posts) == 1
    payload = json_body(posts[0])
    assert "T1" in payload["title"] and "Honolulu" in payload["message"]
    [alert] = cli("alerts", "list", "--format", "json").json()
    assert posts[0].headers["webhook-id"] == f"alert-{alert['id']}"
    assert alert["status"] == "delivered" and alert["delivered_at"] is not None
    # Polling again must not send again.
    cli("poll")
    assert len(feeds.requests_to("/hook")) == 1
    assert len(cli("alerts", "list", "--delivered", "--format", "json").json()) == 1
    assert cli("alerts", "list", "--undelivered", "--format", "json").json() == []


def test_failing_endpoint_is_retried_then_recorded(cli: Any, feeds: FeedServer) -> None:
    failures = {"left": 100}

    def flaky(handler: BaseHTTPRequestHandler) -> bool:
        if handler.command == "POST" and failures["left"] > 0:
            failures["left"] -= 1
            handler.send_response(503)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return True
        return False

    feeds.handler_override = flaky
    setup_feed(cli, feeds, ("t1", STORY))
    cli("rules", "add", "costs", "--query", "cost sharing", "--notify", hook_url(feeds))
    cli("poll")
    [alert] = cli("alerts", "list", "--format", "json").json()
    assert alert["status"] == "pending" and alert["attempts"] == 1
    assert alert["last_error"] and alert["delivered_at"] is None
    # The endpoint recovers; an explicit redelivery sends it exactly once.
    failures["left"] = 0
    result = cli("alerts", "redeliver", str(alert["id"]))
    assert result.code == 0, result.err
    [alert] = cli("alerts", "list", "--format", "json").json()
    assert alert["status"] == "delivered"
    ok_posts = len(feeds.requests_to("/hook"))
    cli("poll")
    assert len(feeds.requests_to("/hook")) == ok_posts


def test_signed_webhook(cli: Any, feeds: FeedServer) -> None:
    setup_feed(cli, feeds, ("t1", STORY))
    secret = "s3cret-value"
    cli(
        "rules",
        "add",
        "signed",
        "--query",
        "cost sharing",
        "--notify",
        hook_url(feeds),
        "--secret",
        secret,
    )
    cli("poll")
    [post] = feeds.requests_to("/hook")
    msg_id, ts = post.headers["webhook-id"], post.headers["webhook-timestamp"]
    expected = base64.b64encode(
        hmac.new(secret.encode(), f"{msg_id}.{ts}.".encode() + post.body, hashlib.sha256).digest()
    ).decode()
    assert post.headers["webhook-signature"] == f"v1,{expected}"


def test_digest_rule_sends_one_message_for_the_period(cli: Any, feeds: FeedServer) -> None:
    setup_feed(cli, feeds, ("t1", STORY), ("t2", SECOND))
    cli(
        "rules",
        "add",
        "daily",
        "--query",
        '"cost sharing" OR "cost-sharing"',
        "--notify",
        hook_url(feeds),
        "--digest",
        "daily",
    )
    cli("poll")
    posts = feeds.requests_to("/hook")
    assert len(posts) == 1
    payload = json_body(posts[0])
    assert (
        "2 new alerts" in payload["title"]
        and "T1" in payload["message"]
        and "T2" in payload["message"]
    )
    alerts = cli("alerts", "list", "--format", "json").json()
    assert {a["status"] for a in alerts} == {"delivered"}


def test_private_webhook_refused_without_permission(
    cli: Any, feeds: FeedServer, monkeypatch: Any
) -> None:
    setup_feed(cli, feeds, ("t1", STORY))
    cli("rules", "add", "costs", "--query", "cost sharing", "--notify", hook_url(feeds))
    from worker.runtime import reset_runtime
    from worker.settings import get_settings

    # Fetch the feed with permission, then deliver without it.
    cli("poll")
    before = len(feeds.requests_to("/hook"))
    assert before == 1
    cli("rules", "add", "costs2", "--query", "Honolulu", "--notify", hook_url(feeds, "/other"))
    feeds.put(
        "/wire.xml",
        rss([{"guid": "t9", "title": "T9", "description": STORY.replace("Tuesday", "Wednesday")}]),
    )
    monkeypatch.setenv("NEWSWATCH_ALLOW_PRIVATE_ADDRESSES", "0")
    get_settings.cache_clear()
    reset_runtime()
    cli("ingest", "--help")
    from storage.engine import get_engine
    from tasks.outbox import deliver_all_due

    settings = get_settings()
    engine = get_engine(settings.resolved_database_url())
    from storage.alerts import redeliver

    [alert] = cli("alerts", "list", "--rule", "costs", "--format", "json").json()
    redeliver(engine, alert["id"])
    deliver_all_due(engine, max_attempts=3, allow_private=False)
    assert len(feeds.requests_to("/hook")) == before
    [alert] = cli("alerts", "list", "--rule", "costs", "--format", "json").json()
    assert alert["status"] == "pending" and "127.0.0.1" in (alert["last_error"] or "")
