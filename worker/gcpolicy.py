"""How often the garbage collector runs in the processes that run the pipeline.

Preparing and storing a batch allocates hundreds of thousands of short-lived
containers (entries, matches, rows) that reference counting frees on its own. CPython's
default thresholds (700, 10, 10) still start a young collection every 700 net
allocations, and since a batch stays alive across many of them, its objects are
promoted until a full collection walks every live object of the process (~60 ms with
1,000 compiled rules loaded). Measured: 20-25% of pipeline time, nearly all of it in
full collections (`python benchmarks/pipeline.py`, which runs newswatch with both).

Larger thresholds keep cyclic garbage collectable (young collections still run, every
50,000 net allocations) while making full collections rare. Peak memory did not change
in the same benchmark.
"""

from __future__ import annotations

import gc

#: Net container allocations between young collections (CPython's default: 700).
YOUNG_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Run the cyclic garbage collector less often (see module docstring); idempotent.

    Called where a process starts pipeline work: the Celery worker before its pool
    forks (children inherit it), and the CLI's `poll` and `ingest`.
    """
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def skip_collection_at_exit() -> None:
    """Spare the interpreter's shutdown its collections over every live object.

    A CLI command that imported SQLAlchemy, numpy and the pipeline holds ~120,000
    tracked objects, and CPython's shutdown walks them in full collections: ~0.3 s of a
    command that otherwise takes ~1 s. Frozen objects (`gc.freeze`) are skipped by those
    collections; they are still freed when their references go, and what only a
    collection would free is left to the operating system as the process ends. So call
    it last, once whatever needs an orderly close (database connections) is closed.
    """
    gc.freeze()
