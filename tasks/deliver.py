"""Sending alerts through Apprise URLs (email, Slack, Discord, Telegram, ntfy, json:// …).

Each message carries the alert's stable id so a receiver can drop a repeat; HTTP
webhook targets (json://, xml://, form://) get it as the `webhook-id` header, with the
Standard Webhooks `webhook-timestamp` and, when the rule has a secret, a
`webhook-signature` over "id.timestamp.body" (HMAC-SHA256).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

log = logging.getLogger(__name__)

# Apprise schemes that are plain HTTP(S) requests to a user-given host.
WEBHOOK_SCHEMES = {
    "json": "http",
    "jsons": "https",
    "xml": "http",
    "xmls": "https",
    "form": "http",
    "forms": "https",
}


def message_for(alerts: Sequence[dict[str, Any]], rule_name: str) -> tuple[str, str]:
    """Title and body of the message for one alert or a digest of several."""
    if len(alerts) == 1:
        a = alerts[0]
        title = f"[newswatch] {rule_name}: {a['title']}"
        lines = [a["title"], a.get("url") or "", "", a.get("snippet") or ""]
        if a.get("matched"):
            lines += ["", "matched: " + ", ".join(a["matched"])]
        if a.get("topics"):
            lines += ["topics: " + ", ".join(a["topics"])]
        return title, "\n".join(lines).strip()
    title = f"[newswatch] {rule_name}: {len(alerts)} new alerts"
    body = "\n\n".join(f"- {a['title']}\n  {a.get('url') or ''}".rstrip() for a in alerts)
    return title, body


def webhook_http_url(url: str) -> str | None:
    """The http(s) URL an Apprise webhook URL posts to, or None for other services."""
    parts = urlsplit(url)
    scheme = WEBHOOK_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        return None
    return urlunsplit((scheme, parts.netloc, parts.path, "", ""))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks signature: "v1," + base64(HMAC-SHA256(secret, id.ts.body))."""
    key = secret.encode()
    if secret.startswith("whsec_"):
        key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def with_headers(url: str, headers: dict[str, str]) -> str:
    """An Apprise webhook URL with extra headers (Apprise's `+Name=value` syntax)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(f"+{name}", value) for name, value in headers.items()]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def send(
    channels: Sequence[str],
    alerts: Sequence[dict[str, Any]],
    rule_name: str,
    *,
    secret: str | None = None,
    allow_private: bool = False,
) -> str | None:
    """Send one message to every channel; None on success, else one line saying what failed."""
    import apprise

    from tasks.netguard import FetchError, check_url

    title, body = message_for(alerts, rule_name)
    msg_id = "alert-" + "-".join(str(a["id"]) for a in alerts)
    timestamp = int(time.time())
    errors = []
    for channel in channels:
        target = channel
        http_url = webhook_http_url(channel)
        if http_url is not None:
            try:
                check_url(http_url, allow_private=allow_private)
            except FetchError as exc:
                errors.append(f"{_redact(channel)}: {exc}")
                continue
            headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
            if secret:
                payload = _apprise_json_body(title, body)
                headers["webhook-signature"] = sign(secret, msg_id, timestamp, payload)
            target = with_headers(channel, headers)
        notifier = apprise.Apprise()
        if not notifier.add(target):
            errors.append(f"{_redact(channel)}: not a valid Apprise URL")
            continue
        with apprise.LogCapture(level=logging.WARNING) as captured:
            ok = notifier.notify(title=title, body=body)
        if not ok:
            detail = " ".join(captured.getvalue().split())[:300] or "delivery failed"
            errors.append(f"{_redact(channel)}: {detail}")
    return "; ".join(errors) if errors else None


def _apprise_json_body(title: str, body: str) -> bytes:
    # What Apprise's json:// plugin posts, so a receiver can verify the signature on
    # the exact bytes it received.
    payload = {"version": "1.0", "title": title, "message": body, "attachments": [], "type": "info"}
    return json.dumps(payload).encode()


def _redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" if parts.scheme else "channel"
