"""The Celery tasks: thin shells that load, call the pipeline, and store.

Tasks take ids and plain data. Each is idempotent (a redelivered task finds its work
done: entries already stored are skipped by guid, alerts are leased before sending),
which is what makes `acks_late` safe.

The database, not the broker, knows what is left to do: a claimed feed holds a lease
until its fetch is recorded, and an alert is pending until it is delivered. A lost
message (broker restarted empty, worker killed) therefore only delays work: the feed's
lease expires and the scheduler claims it again; the sweeper re-sends pending alerts.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from sqlalchemy.exc import OperationalError

from storage import search
from storage.alerts import claim_digests, due_alert_ids
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
    """Claim the feeds whose next poll time has passed and enqueue one fetch each.

    Periodic, so it is not retried: if the database is down this tick does nothing and
    the next tick tries again (retrying would pile up one task per tick meanwhile).
    """
    runtime = get_runtime()
    settings = runtime.settings
    try:
        claimed, parked = claim_feeds(
            runtime.engine, lease_seconds=settings.fetch_lease_seconds, limit=5000
        )
    except RETRYABLE as exc:
        log.warning("not scheduling feeds this tick: %s", _one_line(exc))
        return 0
    if parked:
        log.warning("parked feeds %s after repeated unfinished fetches", parked)
    sent: list[int] = []
    try:
        for target in claimed:
            fetch_feed.delay(target.id)
            sent.append(target.id)
    finally:
        # A claim whose message never reached the broker is given back at once; if this
        # fails too, the lease simply expires.
        release_leases(runtime.engine, [t.id for t in claimed if t.id not in set(sent)])
    return len(sent)


# A fetch whose worker process dies is not requeued by the broker (unlike other tasks):
# its claim's lease expires and the scheduler claims the feed again, counting the
# unfinished claim, so a feed that kills every worker that fetches it is parked after
# MAX_UNFINISHED_CLAIMS attempts instead of being redelivered forever.
@shared_task(name="newswatch.fetch_feed", reject_on_worker_lost=False, **RETRY)
def fetch_feed(feed_id: int) -> dict[str, Any]:
    """Fetch one feed, store its new entries, and enqueue delivery of new alerts.

    Only alerts to send now get a task: one per stored-only alert (a rule without
    channels) cost a task and a transaction each, and queued ahead of the next fetches.
    """
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
    for alert_id in report.to_send:
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
    for alert_id in result.to_send:
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
        retry=runtime.retry_policy(),
    )


@shared_task(name="newswatch.sweep_outbox")
def sweep_outbox() -> int:
    """Re-enqueue alerts still pending (lost task, crash, retry due) and send due digests.

    Periodic and not retried, like `schedule_due_feeds`: the next tick sweeps again.
    """
    runtime = get_runtime()
    settings = runtime.settings
    retry = runtime.retry_policy()
    try:
        ids = due_alert_ids(
            runtime.engine, min_age=timedelta(seconds=settings.outbox_grace_seconds)
        )
        for alert_id in ids:
            deliver_alert.delay(alert_id)
        for digest in claim_digests(runtime.engine, lease=retry.lease):
            deliver(
                runtime.engine,
                digest,
                max_attempts=settings.delivery_max_attempts,
                allow_private=settings.allow_private_addresses,
                retry=retry,
            )
    except RETRYABLE as exc:
        log.warning("not sweeping the outbox this tick: %s", _one_line(exc))
        return 0
    return len(ids)


@shared_task(name="newswatch.index_for_search")
def index_for_search() -> int:
    """Index newly stored articles for full-text search, off the ingest path.

    Periodic and not retried: a search catches up by itself, this only keeps it quick.
    """
    try:
        return search.index_for_search(get_runtime().engine)
    except RETRYABLE as exc:
        log.warning("not indexing for search this tick: %s", _one_line(exc))
        return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
