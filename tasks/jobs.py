"""The Celery tasks: thin shells that load, call the pipeline, and store.

Tasks take ids and plain data. Each is idempotent (a redelivered task finds its work
done: entries already stored are skipped by guid, alerts are leased before sending),
which is what makes `acks_late` safe.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from sqlalchemy.exc import OperationalError

from storage.alerts import due_alert_ids
from storage.feeds import claim_feeds, get_target, release_leases
from tasks.errors import StorageUnavailable
from tasks.models import entry_from_dict
from tasks.outbox import deliver, deliver_alert_now
from tasks.pipeline import process_entries
from tasks.polling import download, store_download
from worker.runtime import get_runtime

log = logging.getLogger(__name__)

# The database being briefly unreachable or locked is worth retrying; the task stays
# unacknowledged meanwhile, so nothing is reported done that was not stored.
RETRYABLE = (StorageUnavailable, OperationalError)
RETRY = {
    "autoretry_for": RETRYABLE,
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "max_retries": 12,
}


@shared_task(name="newswatch.schedule_due_feeds")
def schedule_due_feeds() -> int:
    """Claim the feeds whose next poll time has passed and enqueue one fetch each."""
    runtime = get_runtime()
    settings = runtime.settings
    claimed, parked = claim_feeds(
        runtime.engine, lease_seconds=settings.fetch_lease_seconds, limit=5000
    )
    if parked:
        log.warning("parked feeds %s after repeated unfinished fetches", parked)
    sent: list[int] = []
    try:
        for target in claimed:
            fetch_feed.delay(target.id)
            sent.append(target.id)
    finally:
        release_leases(runtime.engine, [t.id for t in claimed if t.id not in set(sent)])
    return len(sent)


@shared_task(name="newswatch.fetch_feed", **RETRY)
def fetch_feed(feed_id: int) -> dict[str, Any]:
    """Fetch one feed, store its new entries, and enqueue delivery of new alerts."""
    runtime = get_runtime()
    settings = runtime.settings
    target = get_target(runtime.engine, feed_id)
    if target is None:
        return {"feed_id": feed_id, "removed": True}
    item = download(target, runtime.fetch_policy(), runtime.http)
    report = store_download(
        runtime.engine,
        runtime.matchers.get(runtime.engine),
        item,
        threshold=settings.near_duplicate_threshold,
        max_backoff=settings.max_backoff_seconds,
    )
    for alert_id in report.alerts:
        deliver_alert.delay(alert_id)
    return {
        "feed_id": feed_id,
        "status": report.status,
        "error": report.error,
        "stored": report.stored,
        "duplicates": report.duplicates,
        "alerts": len(report.alerts),
    }


@shared_task(name="newswatch.process_articles", **RETRY)
def process_articles(
    entries: list[dict[str, Any]], origin: str = "local", feed_id: int | None = None
) -> dict[str, int]:
    """Run a batch of raw entries (plain dicts) through the pipeline and store them."""
    runtime = get_runtime()
    result = process_entries(
        runtime.engine,
        runtime.matchers.get(runtime.engine),
        [entry_from_dict(e) for e in entries],
        origin=origin,
        feed_id=feed_id,
        threshold=runtime.settings.near_duplicate_threshold,
    )
    for alert_id in result.alerts:
        deliver_alert.delay(alert_id)
    return {
        "stored": len(result.stored),
        "duplicates": len(result.duplicates),
        "skipped": result.skipped,
        "alerts": len(result.alerts),
    }


@shared_task(name="newswatch.deliver_alert", **RETRY)
def deliver_alert(alert_id: int) -> str:
    """Send one alert through its rule's channels (failures are retried by the sweeper)."""
    runtime = get_runtime()
    return deliver_alert_now(
        runtime.engine,
        alert_id,
        max_attempts=runtime.settings.delivery_max_attempts,
        allow_private=runtime.settings.allow_private_addresses,
    )


@shared_task(name="newswatch.sweep_outbox", **RETRY)
def sweep_outbox() -> int:
    """Re-enqueue alerts still pending (lost task, crash, retry due) and send due digests."""
    from datetime import timedelta

    from storage.alerts import claim_digests

    runtime = get_runtime()
    ids = due_alert_ids(runtime.engine, min_age=timedelta(seconds=30))
    for alert_id in ids:
        deliver_alert.delay(alert_id)
    for digest in claim_digests(runtime.engine):
        deliver(
            runtime.engine,
            digest,
            max_attempts=runtime.settings.delivery_max_attempts,
            allow_private=runtime.settings.allow_private_addresses,
        )
    return len(ids)
