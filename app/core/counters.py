"""Row counters kept by database triggers, so that "how many rows (and bytes) of this kind
per key" is a read of a few counter rows instead of a COUNT over the rows themselves.

A `CountedRows` names a table, the column that groups it (a tenant, a queue), an optional
size column and the condition a row must meet to count. Triggers on that table add the
changes to `row_counter` in the transaction that writes the rows, so the counters are exact
for every writer on the database (several gateways, the consumer, the emulator, a manual
SQL edit) and roll back with it:

- SQLite: row-level triggers, each an UPSERT of the one counter row (SQLite has a single
  writer, so that row is never contended). Measured cost: see `docs/counters.md`.
- PostgreSQL: statement-level INSERT and DELETE triggers read the transition tables and
  write one UPSERT per key per statement (a batch of 100 jobs: one counter write); UPDATE
  triggers are row-level with a WHEN clause, so they run only for a row whose counted state
  changes (a job finishing, a message moving to its dead letter queue). Writers update the
  shard of their backend (`pg_backend_pid() % SHARDS`): two transactions rarely wait on one
  counter row until the other commits. Readers sum the shards.

`recount` rebuilds a kind's counters from the rows (`jobgate db recount`): the repair path
after a crash that left them wrong or a trigger dropped by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, Integer, String, delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from app.core.db import table_of

# PostgreSQL counter shards per key (the backend's pid picks one).
SHARDS = 64


class RowCounter(SQLModel, table=True):
    """Rows and bytes of one kind for one key, as a sum over its shards."""

    __tablename__ = "row_counter"

    kind: str = Field(sa_column=Column(String(32), primary_key=True))
    group_key: str = Field(sa_column=Column(String(63), primary_key=True))
    shard: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    row_count: int = Field(sa_column=Column(BigInteger, nullable=False))
    byte_count: int = Field(sa_column=Column(BigInteger, nullable=False))


_counter = table_of(RowCounter)


@dataclass(frozen=True, slots=True)
class CountedRows:
    """Which rows of `table` count, grouped by `key` (`size` summed as bytes).

    `condition` is SQL over one row written as `{row}.column` (None: every row counts),
    with no `IN (...)` list: SQLite builds the list's lookup table each time a trigger
    fires, about 100 us a row (`status = 'a' OR status = 'b'` costs next to nothing);
    `watch` lists the columns whose update can change the row's counted state, beyond
    `key` and `size`.
    """

    kind: str
    table: str
    key: str
    size: str | None = None
    condition: str | None = None
    watch: tuple[str, ...] = ()

    def counts(self, row: str) -> str:
        return "TRUE" if self.condition is None else f"({self.condition.format(row=row)})"

    def size_of(self, row: str) -> str:
        return "0" if self.size is None else f"{row}.{self.size}"

    @property
    def columns(self) -> list[str]:
        names = [self.key, *([self.size] if self.size else []), *self.watch]
        return list(dict.fromkeys(names))

    def trigger(self, verb: str) -> str:
        return f"counter_{self.kind}_{verb}"


def _upsert_clause() -> str:
    return (
        "ON CONFLICT (kind, group_key, shard) DO UPDATE SET "
        "row_count = row_counter.row_count + excluded.row_count, "
        "byte_count = row_counter.byte_count + excluded.byte_count"
    )


def _changed(spec: CountedRows, old: str, new: str, distinct: str) -> str:
    parts = [f"{spec.counts(old)} {distinct} {spec.counts(new)}"]
    measured = [spec.key, *([spec.size] if spec.size else [])]
    parts += [f"{old}.{column} {distinct} {new}.{column}" for column in measured]
    return " OR ".join(parts)


def _sqlite_ddl(spec: CountedRows) -> list[str]:
    insert = "INSERT INTO row_counter (kind, group_key, shard, row_count, byte_count) "

    def add(row: str, sign: str, *, checked: bool = False) -> str:
        # `checked`: the trigger's WHEN already tested the row (VALUES is the cheaper form).
        values = f"'{spec.kind}', {row}.{spec.key}, 0, {sign}1, {sign}{spec.size_of(row)}"
        if checked:
            return f"{insert}VALUES ({values}) {_upsert_clause()};"
        return f"{insert}SELECT {values} WHERE {spec.counts(row)} {_upsert_clause()};"

    table, watched = spec.table, ", ".join(spec.columns)
    changed = _changed(spec, "OLD", "NEW", "IS NOT")
    return [
        f"CREATE TRIGGER {spec.trigger('ins')} AFTER INSERT ON {table} FOR EACH ROW "
        f"WHEN {spec.counts('NEW')} BEGIN {add('NEW', '+', checked=True)} END",
        f"CREATE TRIGGER {spec.trigger('del')} AFTER DELETE ON {table} FOR EACH ROW "
        f"WHEN {spec.counts('OLD')} BEGIN {add('OLD', '-', checked=True)} END",
        f"CREATE TRIGGER {spec.trigger('upd')} AFTER UPDATE OF {watched} ON {table} "
        f"FOR EACH ROW WHEN {changed} BEGIN {add('OLD', '-')} {add('NEW', '+')} END",
    ]


def _postgresql_ddl(spec: CountedRows) -> list[str]:
    insert = "INSERT INTO row_counter (kind, group_key, shard, row_count, byte_count) "
    shard = f"pg_backend_pid() % {SHARDS}"
    size = "0" if spec.size is None else f"sum(changed.{spec.size})"
    # Keys in order: two statements that both write several keys lock them in one order.
    bulk = (
        f"{insert}SELECT '{spec.kind}', changed.{spec.key}, {shard}, direction * count(*), "
        f"direction * {size} FROM changed WHERE {spec.counts('changed')} "
        f"GROUP BY changed.{spec.key} ORDER BY changed.{spec.key} {_upsert_clause()};"
    )

    def add(row: str, sign: str) -> str:
        return (
            f"IF {spec.counts(row)} THEN {insert}VALUES ('{spec.kind}', {row}.{spec.key}, "
            f"{shard}, {sign}1, {sign}{spec.size_of(row)}) {_upsert_clause()}; END IF;"
        )

    table, watched = spec.table, ", ".join(spec.columns)
    bulk_fn, row_fn = spec.trigger("bulk"), spec.trigger("row")
    changed = _changed(spec, "OLD", "NEW", "IS DISTINCT FROM")
    return [
        f"CREATE OR REPLACE FUNCTION {bulk_fn}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "DECLARE direction integer := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END; "
        f"BEGIN {bulk} RETURN NULL; END $$",
        f"CREATE OR REPLACE FUNCTION {row_fn}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {add('OLD', '-')} {add('NEW', '+')} RETURN NULL; END $$",
        f"CREATE TRIGGER {spec.trigger('ins')} AFTER INSERT ON {table} "
        f"REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION {bulk_fn}()",
        f"CREATE TRIGGER {spec.trigger('del')} AFTER DELETE ON {table} "
        f"REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION {bulk_fn}()",
        f"CREATE TRIGGER {spec.trigger('upd')} AFTER UPDATE OF {watched} ON {table} "
        f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION {row_fn}()",
    ]


def create_ddl(spec: CountedRows, dialect: str) -> list[str]:
    """The statements that create `spec`'s triggers on `dialect` (sqlite or postgresql)."""
    if dialect == "sqlite":
        return _sqlite_ddl(spec)
    if dialect == "postgresql":
        return _postgresql_ddl(spec)
    raise ValueError(f"row counters do not support the {dialect!r} dialect")


def drop_ddl(spec: CountedRows, dialect: str) -> list[str]:
    """The statements that drop `spec`'s triggers (and functions) on `dialect`."""
    on = f" ON {spec.table}" if dialect == "postgresql" else ""
    drops = [f"DROP TRIGGER IF EXISTS {spec.trigger(v)}{on}" for v in ("ins", "del", "upd")]
    if dialect == "postgresql":
        drops += [f"DROP FUNCTION IF EXISTS {spec.trigger(v)}()" for v in ("bulk", "row")]
    return drops


async def totals(
    session: AsyncSession, kind: str, keys: Iterable[str] | None = None
) -> dict[str, tuple[int, int]]:
    """(rows, bytes) per key of `kind` (only `keys` when given); a key with no row is absent.
    Reads the counter rows only: its cost does not grow with the counted rows."""
    counter = _counter.c
    stmt = (
        select(counter.group_key, func.sum(counter.row_count), func.sum(counter.byte_count))
        .where(_counter.c.kind == kind)
        .group_by(_counter.c.group_key)
    )
    if keys is not None:
        stmt = stmt.where(_counter.c.group_key.in_(sorted(set(keys))))
    rows = (await session.execute(stmt)).all()
    return {str(key): (int(count or 0), int(size or 0)) for key, count, size in rows}


async def recount(session: AsyncSession, specs: Sequence[CountedRows]) -> None:
    """Rebuild the counters of `specs` from the rows themselves, in the caller's
    transaction (the caller commits). On PostgreSQL it locks the counted tables against
    writes meanwhile, so no write is counted twice or lost."""
    dialect = session.get_bind().dialect.name
    for spec in specs:
        if dialect == "postgresql":
            await session.execute(text(f"LOCK TABLE {spec.table} IN SHARE MODE"))
        await session.execute(delete(_counter).where(_counter.c.kind == spec.kind))
        size = "0" if spec.size is None else f"COALESCE(SUM(t.{spec.size}), 0)"
        await session.execute(
            text(
                "INSERT INTO row_counter (kind, group_key, shard, row_count, byte_count) "
                f"SELECT :kind, t.{spec.key}, 0, COUNT(*), {size} FROM {spec.table} AS t "
                f"WHERE {spec.counts('t')} GROUP BY t.{spec.key}"
            ),
            {"kind": spec.kind},
        )
