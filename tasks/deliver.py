"""Sending alerts through Apprise URLs (email, Slack, Discord, Telegram, ntfy, json:// …).

Each message carries the alert's stable id so a receiver can drop a repeat; HTTP
webhook targets (json://, xml://, form://) get it as the `webhook-id` header, with the
Standard Webhooks `webhook-timestamp`.

When the rule has a secret, json:// and jsons:// messages also carry a
`webhook-signature` over "id.timestamp.body" (HMAC-SHA256). A signature is only worth
something if it covers the exact bytes on the wire, so those messages are not handed to
Apprise (whose body we could only re-create, and which a `:key=value` payload option in
the URL already changes): we serialize the same JSON document Apprise would post, sign
those bytes and POST them ourselves through the SSRF-guarded client of `tasks.fetch`.
xml:// and form:// bodies are built by Apprise, so they carry no signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Sequence
from contextlib import closing
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

log = logging.getLogger(__name__)

# Limits of one signed webhook POST: a stuck receiver must not hold a worker.
WEBHOOK_CONNECT_TIMEOUT = 10.0
WEBHOOK_TIMEOUT = 30.0
# Schemes whose body we serialize and sign ourselves (see module docstring).
SIGNED_SCHEMES = {"json": "http", "jsons": "https"}

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
            if secret and urlsplit(channel).scheme.lower() in SIGNED_SCHEMES:
                error = post_signed_json(
                    channel,
                    title,
                    body,
                    secret=secret,
                    msg_id=msg_id,
                    timestamp=timestamp,
                    allow_private=allow_private,
                )
                if error is not None:
                    errors.append(f"{_redact(channel)}: {error}")
                continue
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


def json_payload(channel: str, title: str, body: str) -> bytes:
    """The bytes a json:// channel posts: Apprise's JSON document, with the URL's options.

    Apprise's `:key=value` URL options rename a field (`:message=text`), drop it
    (`:type=`) or add one (`:source=newswatch`); they are applied here the same way.
    """
    payload: dict[str, Any] = {
        "version": "1.0",
        "title": title,
        "message": body,
        "attachments": [],
        "type": "info",
    }
    for key, value in _url_options(channel, ":").items():
        if key in payload:
            old = payload.pop(key)
            if value:
                payload[value] = old
        else:
            payload[key] = value
    return json.dumps(payload).encode()


def post_signed_json(
    channel: str,
    title: str,
    body: str,
    *,
    secret: str,
    msg_id: str,
    timestamp: int,
    allow_private: bool,
) -> str | None:
    """POST a signed JSON message to a json:// channel; None on a 2xx answer, else why not.

    The connection goes through the guarded transport, which resolves the host once and
    connects only to an address the SSRF guard allowed (Apprise would resolve it again).
    """
    import httpx

    from tasks import fetch

    parts = urlsplit(channel)
    url = urlunsplit(
        (SIGNED_SCHEMES[parts.scheme.lower()], _host_port(parts), parts.path or "/", "", "")
    )
    content = json_payload(channel, title, body)
    headers = {"User-Agent": "newswatch", "Content-Type": "application/json"}
    # The URL's `+Name=value` headers first, so they cannot replace the signature.
    headers.update(_url_options(channel, "+"))
    headers.update(
        {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, content),
        }
    )
    method = (dict(parse_qsl(parts.query)).get("method") or "POST").upper()
    auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
    policy = fetch.FetchPolicy(
        connect_timeout=WEBHOOK_CONNECT_TIMEOUT,
        read_timeout=WEBHOOK_TIMEOUT,
        allow_private=allow_private,
    )
    # The guarded backend reads the permission from a context variable (set per call,
    # as fetch_url does), because one client may serve threads with different policies.
    try:
        with (
            fetch.private_addresses_allowed(allow_private),
            closing(fetch.make_client(policy)) as client,
        ):
            response = client.request(method, url, content=content, headers=headers, auth=auth)
    except httpx.HTTPError as exc:
        return f"request failed: {' '.join(str(exc).split()) or type(exc).__name__}"
    except fetch.FetchError as exc:
        return str(exc)
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code} {response.reason_phrase}".strip()


def _url_options(channel: str, prefix: str) -> dict[str, str]:
    """Apprise URL options with the given prefix (`+` headers, `:` payload fields)."""
    query = parse_qsl(urlsplit(channel).query, keep_blank_values=True)
    return {k[len(prefix) :]: v for k, v in query if k.startswith(prefix) and len(k) > 1}


def _host_port(parts: Any) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


def _redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" if parts.scheme else "channel"
