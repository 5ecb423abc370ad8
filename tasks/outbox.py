"""Delivering stored alerts: the outbox is the alert table itself.

An alert is written in the same transaction as its article with status "pending";
whoever sends it first leases it (`claim_delivery`), so a task, a sweeper and a retry
never send one alert twice at once, and a crash after storing leaves it pending for the
sweeper to pick up.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from storage.alerts import (
    Delivery,
    RetryPolicy,
    claim_delivery,
    claim_digests,
    due_alert_ids,
    finish_delivery,
)
from tasks.deliver import send

log = logging.getLogger(__name__)


def deliver(
    engine: Engine,
    delivery: Delivery,
    *,
    max_attempts: int,
    allow_private: bool,
    retry: RetryPolicy | None = None,
) -> str:
    """Send one leased delivery and record the outcome; returns the new status."""
    try:
        error = send(
            delivery.channels,
            delivery.alerts,
            delivery.rule_name,
            secret=delivery.secret,
            allow_private=allow_private,
        )
    except Exception as exc:  # an Apprise plugin bug must not lose the alert
        log.exception("sending alerts %s failed unexpectedly", delivery.alert_ids)
        error = f"internal error while sending: {exc}"
    if error is not None:
        log.warning("delivering alerts %s failed: %s", delivery.alert_ids, error)
    return finish_delivery(
        engine, delivery.alert_ids, error=error, max_attempts=max_attempts, retry=retry
    )


def deliver_alert_now(
    engine: Engine,
    alert_id: int,
    *,
    max_attempts: int,
    allow_private: bool,
    retry: RetryPolicy | None = None,
) -> str:
    """Send one alert if it is pending and due; returns its status or "skipped"."""
    retry = retry or RetryPolicy()
    delivery = claim_delivery(engine, alert_id, lease=retry.lease)
    if delivery is None:
        return "skipped"
    return deliver(
        engine, delivery, max_attempts=max_attempts, allow_private=allow_private, retry=retry
    )


def deliver_all_due(
    engine: Engine,
    *,
    max_attempts: int,
    allow_private: bool,
    retry: RetryPolicy | None = None,
) -> dict[str, int]:
    """Send every due immediate alert and every due digest, in this process."""
    retry = retry or RetryPolicy()
    counts: dict[str, int] = {}
    for alert_id in due_alert_ids(engine):
        status = deliver_alert_now(
            engine, alert_id, max_attempts=max_attempts, allow_private=allow_private, retry=retry
        )
        counts[status] = counts.get(status, 0) + 1
    for digest in claim_digests(engine, lease=retry.lease):
        status = deliver(
            engine, digest, max_attempts=max_attempts, allow_private=allow_private, retry=retry
        )
        counts[status] = counts.get(status, 0) + len(digest.alert_ids)
    return counts
