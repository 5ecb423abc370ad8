"""Dependencies point one way: the pure pipeline steps import no Celery, HTTP or database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = [
    "tasks.models",
    "tasks.normalize",
    "tasks.fingerprint",
    "tasks.query",
    "tasks.rules",
    "tasks.topics",
    "tasks.timeparse",
    "tasks.textsafe",
    "tasks.errors",
]
FORBIDDEN = ["celery", "kombu", "httpx", "httpcore", "sqlmodel", "sqlalchemy", "redis", "apprise"]


def imported_after(code: str) -> dict[str, object]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    return {name: True for name in json.loads(out.splitlines()[-1])}


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io_library(module: str) -> None:
    loaded = imported_after(f"import {module}")
    assert [m for m in FORBIDDEN if m in loaded] == []


def test_the_cli_and_worker_import_neither_datasketch_nor_scipy() -> None:
    """Signatures need only datasketch's permutations, drawn in tasks/fingerprint.py:
    importing datasketch (and with it scipy) cost ~0.4 s on every process start."""
    loaded = imported_after(
        "import worker.cli, tasks.jobs, tasks.pipeline\n"
        "from tasks.fingerprint import fingerprint\n"
        "fingerprint('one two three four')"
    )
    assert [m for m in ("datasketch", "scipy") if m in loaded] == []


def test_importing_the_app_and_cli_opens_nothing_and_reads_no_settings() -> None:
    code = (
        "import worker.app, worker.cli, tasks.jobs\n"
        "from worker.settings import get_settings\n"
        "from storage import engine\n"
        "assert get_settings.cache_info().currsize == 0, 'settings read at import'\n"
        "assert engine._engines == {}, 'engine created at import'\n"
    )
    imported_after(code)


def test_the_cli_starts_without_the_database_and_settings_stacks() -> None:
    """`newswatch --help` and usage errors import the CLI only: SQLAlchemy and
    pydantic come with the first command that opens the store (~0.3 s of imports)."""
    loaded = imported_after("import worker.cli")
    assert [m for m in ("sqlalchemy", "pydantic", "numpy", "rich") if m in loaded] == []


@pytest.mark.parametrize(
    "command",
    [["alerts", "list"], ["articles", "list"], ["articles", "search", "seoul"], ["stats"]],
    ids=" ".join,
)
def test_query_commands_load_neither_the_dedup_stack_nor_alembic(
    command: list[str], tmp_path: Path
) -> None:
    """A query command pays for what it uses: numpy and the fingerprinting behind
    deduplication, and Alembic behind migrations, cost ~0.2 s of imports together."""
    run_cli = (
        "import os\n"
        "for key in [k for k in os.environ if k.startswith('NEWSWATCH_')]:\n"
        "    del os.environ[key]\n"
        f"os.environ['NEWSWATCH_DATA_DIR'] = {str(tmp_path)!r}\n"
        "from worker.cli import main\n"
        "try:\n"
        "    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
    )
    initialized = imported_after(run_cli.format(argv=["init"]))
    assert "alembic" in initialized and "numpy" in initialized  # the probe sees imports
    loaded = imported_after(run_cli.format(argv=[*command, "--format", "json"]))
    assert [m for m in ("numpy", "alembic", "tasks.fingerprint") if m in loaded] == []
