"""The Celery application.

`app` exists at import (Celery's CLI and Flower need `-A worker.app`), but its
configuration is a promise evaluated on first use, so importing reads no settings and
opens no connection.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_process_shutdown

from worker.settings import Settings, get_settings

TASK_TIME_LIMIT = 600


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from newswatch settings."""
    broker_url = settings.resolved_broker_url()
    transport_options: dict[str, Any] = {}
    transport: str | None = None
    if broker_url.startswith("filesystem"):
        # kombu's own filesystem transport, with message files written atomically.
        transport = "worker.fsbroker:Transport"
        # Embedded broker: messages are files in the data dir, no server needed.
        folder = settings.broker_dir / "messages"
        folder.mkdir(parents=True, exist_ok=True)
        control = settings.broker_dir / "control"
        control.mkdir(parents=True, exist_ok=True)
        transport_options = {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            # Exchange bindings; kombu's default is ./control in the working directory.
            "control_folder": str(control),
        }
    elif broker_url.startswith(("redis", "rediss")):
        # Must exceed the longest task: an unacked task is redelivered after this.
        transport_options = {"visibility_timeout": TASK_TIME_LIMIT * 3}
    # Beat keeps its schedule file here; with PostgreSQL nothing else creates the folder.
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": broker_url,
        "broker_transport": transport,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        # A task is acknowledged only once done: a killed worker's task is redone by
        # another worker. Every task is idempotent, so running twice is harmless.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Take one task at a time so a busy worker does not hoard the queue.
        "worker_prefetch_multiplier": 1,
        "task_time_limit": TASK_TIME_LIMIT,
        "task_soft_time_limit": TASK_TIME_LIMIT - 30,
        # A fetch must end before its feed's lease does, or the feed could be claimed
        # and fetched a second time while the first fetch still runs.
        "task_annotations": {
            "newswatch.fetch_feed": {
                "time_limit": max(30, settings.fetch_lease_seconds - 10),
                "soft_time_limit": max(20, settings.fetch_lease_seconds - 30),
            }
        },
        "worker_max_tasks_per_child": 1000,
        "beat_schedule_filename": str(settings.data_dir / "celerybeat-schedule"),
        "beat_schedule": {
            # One entry for all feeds: the database says which are due.
            "schedule-due-feeds": {
                "task": "newswatch.schedule_due_feeds",
                "schedule": timedelta(seconds=settings.schedule_tick_seconds),
            },
            "sweep-outbox": {
                "task": "newswatch.sweep_outbox",
                "schedule": timedelta(seconds=settings.outbox_sweep_seconds),
            },
            "index-for-search": {
                "task": "newswatch.index_for_search",
                "schedule": timedelta(seconds=settings.search_index_seconds),
            },
        },
        "timezone": "UTC",
    }


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app for `settings` (default: read from the environment on first use)."""
    celery = Celery("newswatch", include=["tasks.jobs"])
    if settings is not None:
        celery.conf.update(celery_config(settings))
    else:
        celery.add_defaults(lambda: celery_config(get_settings()))
    return celery


app = create_app()


@worker_init.connect
def _no_connections_across_fork(**_: Any) -> None:
    # The parent (which checked the database before starting Celery) closes its
    # connections before the pool forks, so no child inherits a database socket; and
    # sets the collector's thresholds, which the children inherit.
    from storage.engine import dispose_engines
    from worker.gcpolicy import tune_garbage_collector
    from worker.runtime import reset_runtime

    reset_runtime()
    dispose_engines(close=True)
    tune_garbage_collector()


@worker_process_init.connect
def _fresh_connections_in_child(**_: Any) -> None:
    # Prefork: the child must not reuse sockets inherited from the parent.
    from storage.engine import dispose_engines
    from worker.runtime import reset_runtime

    dispose_engines()
    reset_runtime()


@worker_process_shutdown.connect
def _close_connections(**_: Any) -> None:
    from worker.runtime import reset_runtime

    reset_runtime()
