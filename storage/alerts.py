"""Alerts: the searchable record of what users were told, and the delivery outbox."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from storage.engine import session_scope
from storage.models import Alert, Rule, utcnow
from storage.search import alert_ids_matching
from tasks.errors import NotFound

DIGEST_PERIODS = {"hourly": timedelta(hours=1), "daily": timedelta(days=1)}
# While a delivery is in flight its alert is leased: nobody else sends it meanwhile.
DELIVERY_LEASE = timedelta(minutes=5)


def alert_record(alert: Alert, rule_name: str) -> dict[str, Any]:
    """The JSON-ready view of an alert (the fields DESIGN.md promises)."""
    return {
        "id": alert.id,
        "rule": rule_name,
        "article_id": alert.article_id,
        "story_id": alert.story_id,
        "title": alert.title,
        "url": alert.url,
        "topics": alert.topics,
        "matched": alert.matched,
        "snippet": alert.snippet,
        "created_at": alert.created_at,
        "status": alert.status,
        "attempts": alert.attempts,
        "last_error": alert.last_error,
        "delivered_at": alert.delivered_at,
        "acked_at": alert.acked_at,
    }


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Filters of `alerts list`; None means no filter."""

    rule: str | None = None
    topic: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None
    delivered: bool | None = None
    after_id: int | None = None
    limit: int = 50


def list_alerts(engine: Engine, flt: AlertFilter) -> list[dict[str, Any]]:
    """Alerts matching the filter, newest first (oldest first when tailing by id)."""
    with session_scope(engine) as session:
        query = select(Alert, Rule.name).join(Rule, Rule.id == Alert.rule_id)
        if flt.rule:
            query = query.where(Rule.name == flt.rule)
        if flt.topic:
            # JSON list membership, portable: the topics column holds ["a", "b"].
            query = query.where(func.cast(Alert.topics, _text_type()).like(f'%"{flt.topic}"%'))
        if flt.since:
            query = query.where(Alert.created_at >= flt.since)
        if flt.until:
            query = query.where(Alert.created_at < flt.until)
        if flt.delivered is True:
            query = query.where(Alert.delivered_at.is_not(None))  # type: ignore[union-attr]
        elif flt.delivered is False:
            query = query.where(Alert.delivered_at.is_(None))  # type: ignore[union-attr]
        if flt.search:
            query = query.where(Alert.id.in_(alert_ids_matching(session, flt.search)))  # type: ignore[union-attr]
        if flt.after_id is not None:
            query = query.where(Alert.id > flt.after_id).order_by(Alert.id)  # type: ignore[arg-type,operator]
        else:
            query = query.order_by(Alert.id.desc())  # type: ignore[union-attr]
        query = query.limit(flt.limit)
        return [alert_record(a, name) for a, name in session.execute(query).all()]


def _text_type() -> Any:
    from sqlalchemy import Text

    return Text


def get_alert(engine: Engine, alert_id: int) -> dict[str, Any]:
    """One alert by id."""
    with session_scope(engine) as session:
        row = session.execute(
            select(Alert, Rule.name)
            .join(Rule, Rule.id == Alert.rule_id)
            .where(Alert.id == alert_id)
        ).first()
        if row is None:
            raise NotFound(f"no alert with id {alert_id}")
        return alert_record(row[0], row[1])


def ack_alerts(engine: Engine, alert_ids: list[int]) -> int:
    """Mark alerts as read; returns how many exist."""
    with session_scope(engine) as session:
        found = set(session.scalars(select(Alert.id).where(Alert.id.in_(alert_ids))))  # type: ignore[union-attr]
        missing = [i for i in alert_ids if i not in found]
        if missing:
            raise NotFound(f"no alert with id {missing[0]}")
        session.execute(
            update(Alert).where(Alert.id.in_(alert_ids)).values(acked_at=utcnow())  # type: ignore[union-attr]
        )
        return len(found)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message to send: the alerts it covers and where it goes."""

    alert_ids: tuple[int, ...]
    rule_name: str
    channels: tuple[str, ...]
    secret: str | None
    alerts: tuple[dict[str, Any], ...]


def claim_delivery(
    engine: Engine, alert_id: int, *, now: datetime | None = None
) -> Delivery | None:
    """Lease a pending immediate alert for sending; None if it is not ours to send."""
    now = now or utcnow()
    with session_scope(engine) as session:
        row = session.execute(
            select(Alert, Rule).join(Rule, Rule.id == Alert.rule_id).where(Alert.id == alert_id)
        ).first()
        if row is None:
            return None
        alert, rule = row
        if alert.status != "pending" or rule.digest != "immediate" or not rule.channels:
            return None
        if alert.next_attempt_at is not None and alert.next_attempt_at > now:
            return None
        alert.attempts += 1
        alert.next_attempt_at = now + DELIVERY_LEASE
        return Delivery(
            (alert_id,),
            rule.name,
            tuple(rule.channels),
            rule.secret,
            (alert_record(alert, rule.name),),
        )


def finish_delivery(
    engine: Engine,
    alert_ids: tuple[int, ...],
    *,
    error: str | None,
    max_attempts: int,
    now: datetime | None = None,
) -> str:
    """Record a send's outcome: delivered, retry later with backoff, or failed for good."""
    now = now or utcnow()
    with session_scope(engine) as session:
        status = "delivered"
        for alert in session.scalars(select(Alert).where(Alert.id.in_(alert_ids))):  # type: ignore[union-attr]
            if error is None:
                alert.status = "delivered"
                alert.delivered_at = now
                alert.last_error = None
                alert.next_attempt_at = None
                continue
            alert.last_error = error
            if alert.attempts >= max_attempts:
                alert.status = status = "failed"
                alert.next_attempt_at = None
            else:
                status = "pending"
                delay = min(3600.0, 5.0 * 2 ** (alert.attempts - 1)) * random.uniform(0.8, 1.2)
                alert.next_attempt_at = now + timedelta(seconds=delay)
        return status


def redeliver(engine: Engine, alert_id: int) -> dict[str, Any]:
    """Put an alert back in the outbox with a fresh retry budget."""
    with session_scope(engine) as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            raise NotFound(f"no alert with id {alert_id}")
        alert.status = "pending"
        alert.attempts = 0
        alert.next_attempt_at = None
        alert.delivered_at = None
    return get_alert(engine, alert_id)


def due_alert_ids(
    engine: Engine,
    *,
    now: datetime | None = None,
    min_age: timedelta = timedelta(0),
    limit: int = 500,
) -> list[int]:
    """Pending immediate alerts that should be (re)sent now: the outbox sweep."""
    now = now or utcnow()
    with session_scope(engine) as session:
        query = (
            select(Alert.id)
            .join(Rule, Rule.id == Alert.rule_id)
            .where(Alert.status == "pending", Rule.digest == "immediate")
            .where(
                ((Alert.next_attempt_at.is_(None)) & (Alert.created_at <= now - min_age))  # type: ignore[union-attr]
                | (Alert.next_attempt_at <= now)  # type: ignore[operator]
            )
            .order_by(Alert.id)
            .limit(limit)
        )
        return list(session.scalars(query))


def claim_digests(engine: Engine, *, now: datetime | None = None) -> list[Delivery]:
    """For each digest rule whose period has ended, lease its pending alerts as one message."""
    now = now or utcnow()
    out: list[Delivery] = []
    with session_scope(engine) as session:
        for rule in session.scalars(select(Rule).where(Rule.digest != "immediate", Rule.active)):
            period = DIGEST_PERIODS.get(rule.digest)
            if period is None or not rule.channels:
                continue
            if rule.last_digest_at is not None and now - rule.last_digest_at < period:
                continue
            alerts = list(
                session.scalars(
                    select(Alert)
                    .where(Alert.rule_id == rule.id, Alert.status == "pending")
                    .where((Alert.next_attempt_at.is_(None)) | (Alert.next_attempt_at <= now))  # type: ignore[union-attr,operator]
                    .order_by(Alert.id)
                )
            )
            if not alerts:
                continue
            rule.last_digest_at = now
            for alert in alerts:
                alert.attempts += 1
                alert.next_attempt_at = now + DELIVERY_LEASE
            out.append(
                Delivery(
                    tuple(a.id or 0 for a in alerts),
                    rule.name,
                    tuple(rule.channels),
                    rule.secret,
                    tuple(alert_record(a, rule.name) for a in alerts),
                )
            )
    return out


def alert_counts(session_or_engine: Engine) -> dict[str, int]:
    """Alert counts by delivery status, for `newswatch stats`."""
    with session_scope(session_or_engine) as session:
        return _counts(session)


def _counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Alert.status, func.count()).group_by(Alert.status)).all()
    return {str(status): int(n) for status, n in rows}
