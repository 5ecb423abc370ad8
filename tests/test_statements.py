"""The ingest path's batch statements: values pass through their columns' processors."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from storage.statements import _processed

_CELLS = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=5),
    st.lists(st.text(max_size=3), max_size=3),
)


@given(st.lists(st.tuples(_CELLS, _CELLS, _CELLS), min_size=1, max_size=20))
def test_batch_values_go_through_their_column_processors(rows: list[tuple[Any, ...]]) -> None:
    """The memoized, column-wise processing equals a processor call per non-null cell."""
    processors = (None, json.dumps, lambda v: f"<{v}>")
    expected = [
        tuple(v if p is None or v is None else p(v) for p, v in zip(processors, row, strict=True))
        for row in rows
    ]
    assert _processed(rows, processors) == expected
