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
