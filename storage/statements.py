"""Plain DBAPI statements in a session's transaction, for the ingest path.

SQL is written with ``?`` and rewritten for psycopg's ``%s``. Batches of rows go in one
executemany on SQLite and by COPY on PostgreSQL, through the columns' own bind
processors, so rows are stored exactly as the ORM would store them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.orm import Session


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


class Statements:
    """Plain DBAPI statements on the session's own connection (same transaction).

    The ingest loop runs a handful of statements per article; through SQLAlchemy's
    execution layer each cost ~60-100 µs of Python, several times the indexed SQL
    itself (benchmarks/pipeline.py). SQL is written with ``?`` and rewritten for
    psycopg's ``%s``; values pass through the columns' own bind processors, so rows
    are stored exactly as the ORM would store them.
    """

    def __init__(self, dialect: Any, dbapi_connection: Any) -> None:
        self.dialect = dialect
        self.qmark = self.dialect.paramstyle == "qmark"
        self._cursor = dbapi_connection.cursor()

    @classmethod
    def of(cls, session: Session) -> Statements:
        """Statements in the session's transaction."""
        conn = session.connection()
        return cls(conn.dialect, conn.connection)

    def _sql(self, sql: str) -> str:
        return sql if self.qmark else sql.replace("?", "%s")

    def among(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """A `column IN values` condition and its parameters.

        PostgreSQL gets one array parameter (``= ANY(%s)``): the statement text is then
        the same whatever the number of values, so psycopg prepares it once instead of
        PostgreSQL planning every look-up (~0.8 ms each).
        """
        if self.qmark:
            return f"{column} IN ({_placeholders(len(values))})", list(values)
        return f"{column} = ANY(?)", [list(values)]

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of a query."""
        self._cursor.execute(self._sql(sql), tuple(params))
        return list(self._cursor.fetchall())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement for its effect."""
        self._cursor.execute(self._sql(sql), tuple(params))

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row, or None."""
        self._cursor.execute(self._sql(sql), tuple(params))
        row = self._cursor.fetchone()
        return None if row is None else row[0]

    def insert_many(
        self,
        table: Any,
        columns: Sequence[str],
        rows: list[tuple[Any, ...]],
        *,
        skip_conflicts: bool = False,
    ) -> None:
        """INSERT `rows` (tuples in `columns` order), skipping unique conflicts if asked.

        SQLite: one executemany (in-process, nothing to batch). PostgreSQL: COPY, since
        executemany pays a round trip per row (~30 µs); COPY has no ON CONFLICT, so rows
        that may conflict are copied into a temporary table and inserted from there.
        """
        if not rows:
            return
        processors = _bind_processors(table, tuple(columns), self.dialect.name)
        if any(processors):
            rows = _processed(rows, processors)
        names = ", ".join(columns)
        if self.qmark:
            conflict = " ON CONFLICT DO NOTHING" if skip_conflicts else ""
            sql = f"INSERT INTO {table.name} ({names}) VALUES ({_placeholders(len(columns))})"
            self._cursor.executemany(sql + conflict, rows)
            return
        if not skip_conflicts:
            self._copy(f"{table.name} ({names})", rows)
            return
        staging = f"incoming_{table.name}"
        self._cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
            f"SELECT {names} FROM {table.name} WITH NO DATA"
        )
        self._copy(f"{staging} ({names})", rows)
        self._cursor.execute(
            f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {staging} "
            "ON CONFLICT DO NOTHING"
        )
        self._cursor.execute(f"TRUNCATE {staging}")

    def _copy(self, target: str, rows: list[tuple[Any, ...]]) -> None:
        with self._cursor.copy(f"COPY {target} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _processed(rows: list[tuple[Any, ...]], processors: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Rows with each value passed through its column's bind processor.

    Column by column, memoized per column: a batch repeats the same timestamp, topic
    lists and matched terms many times, and JSON encoding them again each time was most
    of the cost.
    """
    columns = list(zip(*rows, strict=True))
    for index, processor in enumerate(processors):
        if processor is not None:
            columns[index] = _processed_column(columns[index], processor)
    return list(zip(*columns, strict=True))


def _processed_column(values: tuple[Any, ...], processor: Any) -> tuple[Any, ...]:
    memo: dict[Any, Any] = {None: None}
    out = []
    for value in values:
        key = tuple(value) if type(value) is list else value
        done = memo.get(key, memo)
        if done is memo:
            done = memo[key] = processor(value)
        out.append(done)
    return tuple(out)


@lru_cache(maxsize=32)
def _bind_processors(table: Any, columns: tuple[str, ...], dialect_name: str) -> tuple[Any, ...]:
    dialect = _dialect(dialect_name)
    return tuple(
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
    )


@lru_cache(maxsize=4)
def _dialect(name: str) -> Any:
    return psycopg.dialect() if name == "postgresql" else sqlite.dialect()
