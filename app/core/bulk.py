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

The arrays also look the rows up: `WHERE job.id = ANY($2::VARCHAR[])`, the key's own
array again, through the key's index. Joined on the key alone, PostgreSQL hash-joined the
arrays with a sequential scan of the whole table whenever its statistics made the table
look small enough (the job table keeps every finished job): a settle UPDATE of 100 jobs
read all 20,000 rows of the table, 77 us a row.

The rows must name each target row once (the join would apply one of several updates of a
row where `executemany` applies them in turn); with a repeated key it falls back to
`executemany`. The rows it updates were locked in key order by the caller's
`SELECT ... FOR UPDATE`, so the join's order takes no new lock in another order.

On SQLite the statement stays one `executemany`, but as driver SQL (`run_rows`): compiled
once per statement and row shape, each row turned into its positional values by the bound
columns' processors. SQLAlchemy's own `executemany` builds and processes a parameter dict per
row (about 2.7 us a row here, and the consumer writes seven rows per job). `insert_rows` does
the same for the INSERTs of many rows.

On the consumer's one SQLite connection, whose statements run on the event loop's thread,
`run_rows` and `DriverQuery` (a SELECT or DELETE by a list of ids, compiled once) hand their
driver SQL straight to sqlite3, without SQLAlchemy's per-statement execution.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, any_, column, func, insert
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import CursorResult, Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, ColumnClause, ColumnElement
from sqlalchemy.types import NullType, TypeEngine

from app.core.sqlite_driver import inline_sqlite, run_inline

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


def _key_column(statement: Update, name: str) -> ColumnElement[Any]:
    """The column of the statement's `column == :name` condition."""
    where = statement.whereclause
    for element in visitors.iterate(where) if where is not None else ():
        if (
            isinstance(element, BinaryExpression)
            and element.operator is operators.eq
            and isinstance(element.right, BindParameter)
            and element.right.key == name
            and isinstance(element.left, ColumnClause)
        ):
            return element.left
    raise TypeError(f"the key {name} needs a `column == :{name}` condition")


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
        joined = cast(Update, visitors.replacement_traverse(statement, no_options, replace))
        first = self.key[0]
        self._joined = joined.where(
            _key_column(statement, first)
            == any_(BindParameter(f"arr_{first}", type_=ARRAY(types[first])))
        )

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
    values = [plan.convert(row) for row in rows]
    if (raw := inline_sqlite(connection)) is not None:
        run_inline(raw, plan.sql, values, many=True)
    else:
        await connection.exec_driver_sql(plan.sql, values)


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
    # The row's values in the statement's order, as one generated expression (a loop over
    # positions cost 2.7 us a row, this 0.6): `row[name]`, through its column's processor
    # where it has one, or a constant of the statement, processed once here.
    namespace: dict[str, Any] = {}
    parts: list[str] = []
    for index, name in enumerate(names):
        bind = compiled.binds[name]
        process = processors.get(name)
        if name in keys:
            if process is None:
                parts.append(f"row[{name!r}]")
            else:
                namespace[f"process_{index}"] = process
                parts.append(f"process_{index}(row[{name!r}])")
        elif bind.callable is not None or bind.required:
            return None  # computed per execution, or missing from the rows: SQLAlchemy's
        else:
            namespace[f"constant_{index}"] = bind.value if process is None else process(bind.value)
            parts.append(f"constant_{index}")
    if not namespace:  # every value straight from the row
        return _DriverRows(compiled.string, _getter(list(names)))
    # The source holds only the compiled statement's own bind names, quoted by repr().
    convert = eval(f"lambda row: ({', '.join(parts)},)", namespace)
    return _DriverRows(compiled.string, convert)


def _getter(names: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """The row's values of `names`, always as a tuple (itemgetter of one name is not)."""
    if len(names) == 1:
        only = names[0]
        return lambda row: (row[only],)
    return itemgetter(*names)


class DriverQuery:
    """`statement` (a module constant whose per-call values are named bind parameters, one of
    them at most `expanding`) run without SQLAlchemy's per-statement machinery where the
    session's SQLite connection runs statements inline (the consumer's): compiled once,
    its driver SQL kept per length of the expanding list. Elsewhere SQLAlchemy runs it.

    The consumer's per-batch SELECTs and DELETEs by a list of ids spent more time in
    SQLAlchemy (cache key, the IN list's expansion, execution context, result) than in
    SQLite. `rows()` returns plain tuples in the selected columns' order: only for columns
    whose values need no result processing (text and integers)."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._plan: _QueryPlan | None = None
        self._sql: dict[int, str] = {}

    async def rows(self, session: AsyncSession, **params: Any) -> Sequence[Sequence[Any]]:
        connection = await session.connection()
        raw = inline_sqlite(connection)
        plan = None if raw is None else self._plan_for(connection.dialect)
        if raw is None or plan is None:
            return await self._through_sqlalchemy(session, params)
        values: list[Any] = []
        length = -1
        for name, constant, process in plan.binds:
            value = params[name] if constant is _FROM_CALL else constant
            if name == plan.expanding:
                length = len(value)
                values.extend(value if process is None else map(process, value))
            else:
                values.append(value if process is None else process(value))
        if length == 0:  # IN () is not SQL: SQLAlchemy renders the empty list its own way
            return await self._through_sqlalchemy(session, params)
        if plan.expanding is None:
            return run_inline(raw, plan.sql, values)
        try:
            sql = self._sql[length]
        except KeyError:
            sql = self._sql[length] = plan.sql.replace(plan.token, ", ".join("?" * length))
        return run_inline(raw, sql, values)

    async def _through_sqlalchemy(
        self, session: AsyncSession, params: dict[str, Any]
    ) -> Sequence[Sequence[Any]]:
        result = cast(CursorResult[Any], await session.execute(self.statement, params))
        return result.all() if result.returns_rows else []

    def _plan_for(self, dialect: Dialect) -> _QueryPlan | None:
        if self._plan is None:
            self._plan = _query_plan(self.statement, dialect)
        return self._plan if self._plan is not _NO_PLAN else None


_FROM_CALL = object()  # a bind parameter whose value each call gives


class _QueryPlan(NamedTuple):
    sql: str
    token: str  # the expanding parameter's place holder in `sql`
    expanding: str | None
    binds: list[tuple[str, Any, Callable[[Any], Any] | None]]  # name, constant, processor


_NO_PLAN = _QueryPlan("", "", None, [])


def _query_plan(statement: Executable, dialect: Dialect) -> _QueryPlan:
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    names = compiled.positiontup
    if names is None or compiled.escaped_bind_names or compiled.literal_execute_params:
        return _NO_PLAN
    processors = compiled._bind_processors
    binds: list[tuple[str, Any, Callable[[Any], Any] | None]] = []
    expanding: str | None = None
    for name in names:
        bind = compiled.binds[name]
        if bind.callable is not None or not callable(processors.get(name, len)):
            return _NO_PLAN
        if bind.expanding:
            if expanding is not None:  # two lists, or one list twice
                return _NO_PLAN
            expanding = name
        process = processors.get(name)
        if bind.required or bind.expanding:
            binds.append((name, _FROM_CALL, process))
        else:  # a constant of the statement: processed once, here
            binds.append((name, bind.value if process is None else process(bind.value), None))
    token = f"__[POSTCOMPILE_{expanding}]"
    if expanding is not None and compiled.string.count(token) != 1:
        return _NO_PLAN
    return _QueryPlan(compiled.string, token, expanding, binds)
