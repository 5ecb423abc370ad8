"""Settings, read once from the environment (prefix NEWSWATCH_).

Every other module receives a `Settings` object or calls `get_settings()`; nothing
else reads the environment.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SEEDS_DIR = PROJECT_ROOT / "seeds"


def default_data_dir() -> Path:
    """Where newswatch keeps its SQLite file and embedded broker: XDG data home."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "newswatch"


class Settings(BaseSettings):
    """All configuration of newswatch; defaults give a working single-machine setup."""

    model_config = SettingsConfigDict(env_prefix="NEWSWATCH_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    broker_url: str | None = None
    allow_private_addresses: bool = False
    topics_file: Path | None = None
    seeds_dir: Path = SEEDS_DIR

    # Feeds
    default_interval_seconds: int = 15 * 60
    schedule_tick_seconds: float = 30.0
    fetch_connect_timeout: float = 10.0
    fetch_read_timeout: float = 20.0
    fetch_total_timeout: float = 60.0
    fetch_max_bytes: int = 10 * 1024 * 1024
    fetch_max_redirects: int = 5
    fetch_concurrency: int = 10
    # Processes that parse and prepare entries during `newswatch poll` (default: cores).
    poll_processes: int | None = None
    max_backoff_seconds: int = 24 * 3600
    # A claimed feed whose fetch never finished (worker killed, broker lost) becomes
    # due again after this long.
    fetch_lease_seconds: int = 300

    # Deduplication: minimum estimated share of the smaller text's 3-word shingles found
    # in the other (or lead similarity); see tasks/fingerprint.py and
    # benchmarks/dedup_quality.py for the measurements behind 0.5.
    near_duplicate_threshold: float = 0.5

    # Delivery
    delivery_max_attempts: int = 8
    # A failed send is retried after base * 2**(attempts-1) seconds (jittered), capped.
    delivery_backoff_seconds: float = 5.0
    delivery_backoff_max_seconds: float = 3600.0
    # A send in progress leases its alert this long; a worker that died mid-send
    # leaves the alert to the sweeper once the lease has expired.
    delivery_lease_seconds: float = 300.0
    outbox_sweep_seconds: float = 30.0
    # How often a worker indexes newly stored articles for full-text search (SQLite;
    # a search also catches up first, so this only keeps searches quick).
    search_index_seconds: float = 60.0
    # The sweeper leaves a never-attempted alert alone this long after it was stored:
    # its own deliver task is normally on the way.
    outbox_grace_seconds: float = 30.0
    webhook_secret: str | None = None

    # Worker
    worker_concurrency: int | None = None

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'newswatch.db'}"

    def resolved_poll_processes(self) -> int:
        """Preparation processes for `newswatch poll`: the setting, or one per core."""
        return self.poll_processes or os.cpu_count() or 1

    def resolved_broker_url(self) -> str:
        """The broker URL, defaulting to kombu's filesystem transport in the data dir."""
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        """Folder used by the embedded filesystem broker."""
        return self.data_dir / "broker"

    def topics_path(self) -> Path:
        """The topics file in use: the user's own or the bundled seeds/topics.toml."""
        return self.topics_file or (self.seeds_dir / "topics.toml")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
