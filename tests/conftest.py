"""Shared fixtures: real servers, an isolated data dir, and an in-process CLI runner."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import FeedServer, feed_server, postgres_bindir, postgres_server, redis_server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server for the session."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL cluster for the session (skipped where PostgreSQL is not installed)."""
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL is not installed")
    with postgres_server() as url:
        yield url


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    """A local HTTP server serving feed documents."""
    with feed_server() as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """An isolated newswatch environment (data dir in tmp, loopback feeds allowed)."""
    from storage.engine import dispose_engines
    from worker.runtime import reset_runtime
    from worker.settings import get_settings

    values = {
        "NEWSWATCH_DATA_DIR": str(tmp_path / "data"),
        "NEWSWATCH_ALLOW_PRIVATE_ADDRESSES": "1",
    }
    for key in [k for k in os.environ if k.startswith("NEWSWATCH_")]:
        monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    reset_runtime()
    yield values
    reset_runtime()
    dispose_engines()
    get_settings.cache_clear()
    # What the code under test set itself (`--topics-file` exports NEWSWATCH_TOPICS_FILE
    # for the worker processes it starts); monkeypatch restores the rest.
    for key in [k for k in os.environ if k.startswith("NEWSWATCH_") and k not in values]:
        del os.environ[key]


@dataclass
class CliResult:
    """Exit code and output of one in-process CLI invocation."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(*args: str) -> CliResult:
    """Run `newswatch ARGS` in this process and capture what a user would see."""
    from worker.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli(env: dict[str, str]) -> Any:
    """The in-process CLI runner, bound to the isolated environment."""
    return run_cli


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each backend (PostgreSQL where installed)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    server_url: str = request.getfixturevalue("postgres_url")
    import uuid

    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    plain = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield server_url.rsplit("/", 1)[0] + "/" + name
    from storage.engine import dispose_engines

    dispose_engines()
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def store(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An initialized store (schema, topics, seeds) on each backend, with its settings."""
    from storage.engine import get_engine
    from worker.bootstrap import initialize
    from worker.runtime import reset_runtime
    from worker.settings import Settings, get_settings

    for key in [k for k in os.environ if k.startswith("NEWSWATCH_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NEWSWATCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NEWSWATCH_DATABASE_URL", db_url)
    get_settings.cache_clear()
    reset_runtime()
    settings = Settings()
    engine = get_engine(db_url)
    initialize(settings, engine)
    yield settings, engine
    reset_runtime()
    get_settings.cache_clear()
