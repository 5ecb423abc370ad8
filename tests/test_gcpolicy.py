"""The collector thresholds set for pipeline processes (worker/gcpolicy.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.gcpolicy import YOUNG_THRESHOLD, tune_garbage_collector


@pytest.fixture
def default_thresholds() -> Iterator[tuple[int, int, int]]:
    """CPython's default thresholds for the test, restored to what they were after it."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield 700, 10, 10
    gc.set_threshold(*before)


def test_tune_raises_only_the_young_threshold(default_thresholds: tuple[int, int, int]) -> None:
    tune_garbage_collector()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *default_thresholds[1:])
    tune_garbage_collector()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *default_thresholds[1:])
    assert gc.isenabled()


def test_worker_sets_thresholds_before_its_pool_forks(
    default_thresholds: tuple[int, int, int],
) -> None:
    from celery.signals import worker_init

    import worker.app  # noqa: F401  (connects the receivers)

    # The receivers the worker runs at start-up, before forking its pool.
    worker_init.send(sender=None)
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD


def test_cli_ingest_runs_with_tuned_thresholds(
    default_thresholds: tuple[int, int, int], cli: Any, tmp_path: Path
) -> None:
    article = tmp_path / "story.txt"
    article.write_text("Talks on cost-sharing\n\nOfficials met in Seoul on Monday.\n")
    assert cli("ingest", str(article)).code == 0
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD


def test_console_script_leaves_its_objects_to_the_operating_system(tmp_path: Path) -> None:
    """After the command, every object is frozen: the shutdown's collections skip them."""
    import subprocess
    import sys

    probe = (
        "import atexit, gc, os, sys\n"
        f"os.environ['NEWSWATCH_DATA_DIR'] = {str(tmp_path)!r}\n"
        "sys.argv = ['newswatch', 'stats', '--format', 'json']\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count(), len(gc.get_objects())))\n"
        "from worker.cli import entry_point\n"
        "entry_point()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    frozen, unfrozen = out.split("frozen ")[1].split()
    assert int(frozen) > 10_000 and int(unfrozen) < 1_000
