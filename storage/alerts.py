"""Alerts: the searchable record of what users were told, and the delivery outbox."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from storage.engine import session_scope
from storage.models import Alert, Rule, utcnow
from storage.search import alert_ids_matching
from tasks.errors import NotFound

DIGEST_PERIODS = {"hourly": timedelta(hours=1), "daily": timedelta(days=1)}
# While a delivery is in flight its alert is leased: nobody else sends it meanwhile.
DELIVERY_LEASE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a send holds its alert, and how failed sends back off."""

    lease: timedelta = DELIVERY_LEASE
    backoff_seconds: float = 5.0
    backoff_max_seconds: float = 3600.0

    def delay(self, attempts: int) -> float:
        """Seconds before the next attempt after `attempts` failed ones (jittered)."""
        base = min(self.backoff_max_seconds, self.backoff_seconds * 2 ** max(attempts - 1, 0))
        return base * random.uniform(0.8, 1.2)


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
        query = select(Alert, col(Rule.name)).join(Rule, col(Rule.id) == col(Alert.rule_id))
        if flt.rule:
            query = query.where(col(Rule.name) == flt.rule)
        if flt.topic:
            # JSON list membership, portable: the topics column holds ["a", "b"].
            query = query.where(func.cast(col(Alert.topics), _text_type()).like(f'%"{flt.topic}"%'))
        if flt.since:
            query = query.where(col(Alert.created_at) >= flt.since)
        if flt.until:
            query = query.where(col(Alert.created_at) < flt.until)
        if flt.delivered is True:
            query = query.where(col(Alert.delivered_at).is_not(None))
        elif flt.delivered is False:
            query = query.where(col(Alert.delivered_at).is_(None))
        if flt.search:
            query = query.where(col(Alert.id).in_(alert_ids_matching(session, flt.search)))
        if flt.after_id is not None:
            query = query.where(col(Alert.id) > flt.after_id).order_by(col(Alert.id))
        else:
            query = query.order_by(col(Alert.id).desc())
        query = query.limit(flt.limit)
        return [alert_record(a, name) for a, name in session.execute(query).all()]


def _text_type() -> Any:
    from sqlalchemy import Text

    return Text


def get_alert(engine: Engine, alert_id: int) -> dict[str, Any]:
    """One alert by id."""
    with session_scope(engine) as session:
        row = session.execute(
            select(Alert, col(Rule.name))
            .join(Rule, col(Rule.id) == col(Alert.rule_id))
            .where(col(Alert.id) == alert_id)
        ).first()
        if row is None:
            raise NotFound(f"no alert with id {alert_id}")
        return alert_record(row[0], row[1])


def ack_alerts(engine: Engine, alert_ids: list[int]) -> int:
    """Mark alerts as read; returns how many exist."""
    with session_scope(engine) as session:
        found = set(session.scalars(select(col(Alert.id)).where(col(Alert.id).in_(alert_ids))))
        missing = [i for i in alert_ids if i not in found]
        if missing:
            raise NotFound(f"no alert with id {missing[0]}")
        session.execute(update(Alert).where(col(Alert.id).in_(alert_ids)).values(acked_at=utcnow()))
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
    engine: Engine,
    alert_id: int,
    *,
    now: datetime | None = None,
    lease: timedelta = DELIVERY_LEASE,
) -> Delivery | None:
    """Lease a pending immediate alert for sending; None if it is not ours to send.

    The lease (and the attempt it counts) is committed before anything is sent, so a
    second task, the sweeper or a redelivered message finds it taken; a sender that
    dies mid-send has used one attempt and the alert is due again when the lease ends.
    """
    now = now or utcnow()
    with session_scope(engine) as session:
        row = session.execute(
            select(Alert, Rule)
            .join(Rule, col(Rule.id) == col(Alert.rule_id))
            .where(col(Alert.id) == alert_id)
        ).first()
        if row is None:
            return None
        alert, rule = row
        if alert.status != "pending" or rule.digest != "immediate" or not rule.channels:
            return None
        if alert.next_attempt_at is not None and alert.next_attempt_at > now:
            return None
        alert.attempts += 1
        alert.next_attempt_at = now + lease
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
    retry: RetryPolicy | None = None,
) -> str:
    """Record a send's outcome: delivered, retry later with backoff, or failed for good."""
    now = now or utcnow()
    retry = retry or RetryPolicy()
    with session_scope(engine) as session:
        status = "delivered"
        for alert in session.scalars(select(Alert).where(col(Alert.id).in_(alert_ids))):
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
                alert.next_attempt_at = now + timedelta(seconds=retry.delay(alert.attempts))
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
            select(col(Alert.id))
            .join(Rule, col(Rule.id) == col(Alert.rule_id))
            .where(col(Alert.status) == "pending", col(Rule.digest) == "immediate")
            .where(
                ((col(Alert.next_attempt_at).is_(None)) & (col(Alert.created_at) <= now - min_age))
                | (col(Alert.next_attempt_at) <= now)
            )
            .order_by(col(Alert.id))
            .limit(limit)
        )
        return list(session.scalars(query))


def claim_digests(
    engine: Engine, *, now: datetime | None = None, lease: timedelta = DELIVERY_LEASE
) -> list[Delivery]:
    """For each digest rule whose period has ended, lease its pending alerts as one message."""
    now = now or utcnow()
    out: list[Delivery] = []
    with session_scope(engine) as session:
        for rule in session.scalars(
            select(Rule).where(col(Rule.digest) != "immediate", col(Rule.active))
        ):
            period = DIGEST_PERIODS.get(rule.digest)
            if period is None or not rule.channels:
                continue
            if rule.last_digest_at is not None and now - rule.last_digest_at < period:
                continue
            alerts = list(
                session.scalars(
                    select(Alert)
                    .where(col(Alert.rule_id) == rule.id, col(Alert.status) == "pending")
                    .where(
                        (col(Alert.next_attempt_at).is_(None)) | (col(Alert.next_attempt_at) <= now)
                    )
                    .order_by(col(Alert.id))
                )
            )
            if not alerts:
                continue
            rule.last_digest_at = now
            for alert in alerts:
                alert.attempts += 1
                alert.next_attempt_at = now + lease
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
    rows = session.execute(
        select(col(Alert.status), func.count()).group_by(col(Alert.status))
    ).all()
    return {str(status): int(n) for status, n in rows}
