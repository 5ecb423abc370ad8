"""Per-process runtime: engine, matchers and HTTP client, created lazily after fork.

A prefork worker imports everything in the parent and forks; anything holding a socket
must be created in the child. `get_runtime()` keys on the process id, so a forked
child never reuses its parent's engine or client.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from storage.engine import get_engine
from tasks.pipeline import MatcherCache
from worker.settings import Settings, get_settings

if TYPE_CHECKING:
    import httpx
    from sqlalchemy import Engine

    from storage.alerts import RetryPolicy
    from tasks.fetch import FetchPolicy


@dataclass
class Runtime:
    """Everything a task needs, built from the settings on first use in a process."""

    settings: Settings
    pid: int = field(default_factory=os.getpid)
    _client: httpx.Client | None = None
    _matchers: MatcherCache | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def engine(self) -> Engine:
        """The database engine of this process."""
        return get_engine(self.settings.resolved_database_url())

    @property
    def matchers(self) -> MatcherCache:
        """The compiled topics and rules of this process."""
        with self._lock:
            if self._matchers is None:
                self._matchers = MatcherCache(self.settings.topics_path())
            return self._matchers

    def fetch_policy(self) -> FetchPolicy:
        """Fetch limits from the settings."""
        from tasks.fetch import FetchPolicy

        s = self.settings
        return FetchPolicy(
            connect_timeout=s.fetch_connect_timeout,
            read_timeout=s.fetch_read_timeout,
            total_timeout=s.fetch_total_timeout,
            max_bytes=s.fetch_max_bytes,
            max_redirects=s.fetch_max_redirects,
            allow_private=s.allow_private_addresses,
        )

    def retry_policy(self) -> RetryPolicy:
        """Delivery lease and backoff from the settings."""
        from datetime import timedelta

        from storage.alerts import RetryPolicy

        s = self.settings
        return RetryPolicy(
            lease=timedelta(seconds=s.delivery_lease_seconds),
            backoff_seconds=s.delivery_backoff_seconds,
            backoff_max_seconds=s.delivery_backoff_max_seconds,
        )

    @property
    def http(self) -> httpx.Client:
        """One pooled HTTP client per process, shared by its threads."""
        with self._lock:
            if self._client is None:
                from tasks.fetch import make_client

                self._client = make_client(self.fetch_policy())
            return self._client

    def close(self) -> None:
        """Release the HTTP client (the engine is released by storage.engine)."""
        if self._client is not None:
            self._client.close()
            self._client = None


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime(settings: Settings | None = None) -> Runtime:
    """The runtime of the current process."""
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = Runtime(settings or get_settings())
        return _runtime


def reset_runtime() -> None:
    """Drop the cached runtime (tests, or after settings changed)."""
    global _runtime
    with _runtime_lock:
        if _runtime is not None and _runtime.pid == os.getpid():
            _runtime.close()
        _runtime = None
