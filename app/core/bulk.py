"""Per-row UPDATEs of many rows, as one statement on PostgreSQL.

The consumer's bulk UPDATEs (start attempts, settle jobs, lease and requeue messages) are
written once, as the statement for one row whose per-row values are bind parameters named
`b_*`, and run with a list of rows. SQLite runs that as `executemany` (in-process, each row
costs a few microseconds). On PostgreSQL `executemany` runs the statement once per row on
the server, each with its own executor start-up: 46-106 us per row measured on the
consumer's path, about a third of its time per job. `BulkUpdate` runs the same statement
there once for all the rows, its `b_*` parameters replaced by the columns of
`unnest(:arrays...)` joined on the row's key:

    UPDATE job SET status = v.b_status, ... FROM unnest($1::VARCHAR[], ...) AS v(b_id, ...)
    WHERE job.id = v.b_id

The rows must name each target row once (the join would apply one of several updates of a
row where `executemany` applies them in turn); with a repeated key it falls back to
`executemany`. The rows it updates were locked in key order by the caller's
`SELECT ... FOR UPDATE`, so the join's order takes no new lock in another order.

On SQLite the statement stays one `executemany`, but as driver SQL (`run_rows`): compiled
once per statement and row shape, each row turned into its positional values by the bound
columns' processors. SQLAlchemy's own `executemany` builds and processes a parameter dict per
row (about 2.7 us a row here, and the consumer writes seven rows per job). `insert_rows` does
the same for the INSERTs of many rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, column, func, insert
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import visitors
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import NullType, TypeEngine

ROW_PARAM_PREFIX = "b_"


def _row_params(statement: Update) -> dict[str, TypeEngine[Any]]:
    """The statement's per-row parameters and their types (a SET parameter without a type
    of its own takes its column's)."""
    types: dict[str, TypeEngine[Any]] = {}
    for element in visitors.iterate(statement):
        if isinstance(element, BindParameter) and element.key.startswith(ROW_PARAM_PREFIX):
            if not isinstance(element.type, NullType):
                types[element.key] = element.type
    table = statement.table
    for target, value in statement._values.items() if statement._values else ():
        if isinstance(value, BindParameter) and value.key.startswith(ROW_PARAM_PREFIX):
            name = target if isinstance(target, str) else target.key
            types.setdefault(value.key, table.c[name].type)
    missing = {
        element.key
        for element in visitors.iterate(statement)
        if isinstance(element, BindParameter)
        and element.key.startswith(ROW_PARAM_PREFIX)
        and element.key not in types
    }
    if missing:
        raise TypeError(f"give the row parameters {sorted(missing)} a type")
    return types


class BulkUpdate:
    """`statement` (per-row values as `b_*` parameters) for many rows; `key` names the
    parameters that identify a row."""

    def __init__(self, statement: Update, *, key: Sequence[str]) -> None:
        self.statement = statement
        self.key = tuple(key)
        types = _row_params(statement)
        self._names = sorted(types)
        rows = func.unnest(
            *(BindParameter(f"arr_{name}", type_=ARRAY(types[name])) for name in self._names)
        ).table_valued(*(column(name, types[name]) for name in self._names))
        source = rows.render_derived(name="v")  # AS v(b_..., ...): the arrays' names

        def replace(element: Any, **_: Any) -> Any:
            if isinstance(element, BindParameter) and element.key in types:
                return source.c[element.key]
            return None

        no_options: dict[str, Any] = {}
        self._joined = cast(Update, visitors.replacement_traverse(statement, no_options, replace))

    async def execute(self, session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        dialect = session.get_bind().dialect
        if dialect.name == "sqlite":
            await run_rows(session, self.statement, rows)
            return
        if dialect.name != "postgresql" or self._repeats_a_key(rows):
            await session.execute(self.statement, list(rows))
            return
        arrays = {f"arr_{name}": [row[name] for row in rows] for name in self._names}
        await session.execute(self._joined, arrays)

    def _repeats_a_key(self, rows: Sequence[dict[str, Any]]) -> bool:
        return len({tuple(row[name] for name in self.key) for row in rows}) < len(rows)


class _DriverRows(NamedTuple):
    sql: str
    convert: Callable[[Mapping[str, Any]], tuple[Any, ...]]


# (statement or table, dialect, row keys) → its driver SQL, or None: SQLAlchemy runs it.
_compiled: dict[tuple[object, str, tuple[str, ...]], _DriverRows | None] = {}


async def insert_rows(
    session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """`session.execute(insert(table), rows)`: rows of the same keys, as driver SQL on
    SQLite."""
    if not rows:
        return
    if session.get_bind().dialect.name != "sqlite":
        await session.execute(insert(table), list(rows))
        return
    await run_rows(session, insert(table), rows, cache_key=table)


async def run_rows(
    session: AsyncSession,
    statement: Insert | Update,
    rows: Sequence[Mapping[str, Any]],
    *,
    cache_key: object = None,
) -> None:
    """`statement` once per row (rows of the same keys), as driver SQL where the compiled
    statement allows: positional binds, no Python-side column defaults (those go through
    SQLAlchemy, which computes them per row). The compiled form is kept for the life of
    the process, by `cache_key` or else by the statement itself: pass a statement built once
    (a module constant), not one built per call."""
    if not rows:
        return
    dialect = session.get_bind().dialect
    keys = tuple(rows[0])
    key = (statement if cache_key is None else cache_key, dialect.name, keys)
    try:
        plan = _compiled[key]
    except KeyError:
        plan = _compiled[key] = _driver_rows(statement, dialect, keys)
    if plan is None:
        await session.execute(statement, list(rows))
        return
    connection = await session.connection()
    await connection.exec_driver_sql(plan.sql, [plan.convert(row) for row in rows])


def _driver_rows(
    statement: Insert | Update, dialect: Dialect, keys: tuple[str, ...]
) -> _DriverRows | None:
    compiled = statement.compile(
        dialect=dialect, column_keys=list(keys) if isinstance(statement, Insert) else None
    )
    names = compiled.positiontup
    if (
        names is None  # a dialect with named parameters
        or compiled.insert_prefetch
        or compiled.update_prefetch
        or compiled.escaped_bind_names
        or compiled.post_compile_params
        or compiled.literal_execute_params
    ):
        return None
    if not all(callable(process) for process in compiled._bind_processors.values()):
        return None  # a tuple's per-element processors
    processors = cast(Mapping[str, Callable[[Any], Any]], compiled._bind_processors)
    template: list[Any] = []  # a constant's processed value where it stands, else None
    for name in names:
        bind = compiled.binds[name]
        if name in keys:
            template.append(None)
        elif bind.callable is not None or bind.required:
            return None  # computed per execution, or missing from the rows: SQLAlchemy's
        else:
            process = processors.get(name)
            template.append(bind.value if process is None else process(bind.value))
    from_row = [(i, name) for i, name in enumerate(names) if name in keys]
    positions = [i for i, _ in from_row]
    take = _getter([name for _, name in from_row])
    converters = [(i, processors[name]) for i, name in from_row if name in processors]

    if len(positions) == len(names) and not converters:
        return _DriverRows(compiled.string, take)

    def convert(row: Mapping[str, Any]) -> tuple[Any, ...]:
        values = template.copy()
        for index, value in zip(positions, take(row), strict=True):
            values[index] = value
        for index, process in converters:
            values[index] = process(values[index])
        return tuple(values)

    return _DriverRows(compiled.string, convert)


def _getter(names: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """The row's values of `names`, always as a tuple (itemgetter of one name is not)."""
    if len(names) == 1:
        only = names[0]
        return lambda row: (row[only],)
    return itemgetter(*names)
