"""What every command group shares: the admin session and the error exit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer
from rich.console import Console

from app.core.db import create_engine, create_sessionmaker
from app.core.errors import AppError, database_problem, describe_database_error
from app.settings import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

T = TypeVar("T")
# Progress and notices for people; results go to stdout so they can be piped.
err = Console(stderr=True)


def fail(*lines: str, code: int = 1) -> NoReturn:
    """Exit `code` after `error: LINE` on stderr for each line: no traceback.

    Plain text rather than rich markup: a line stays one line whatever the terminal width,
    and brackets in a message are printed, not read as markup.
    """
    for line in lines:
        typer.secho("error:", fg=typer.colors.RED, err=True, nl=False)
        typer.echo(" " + " ".join(line.splitlines()), err=True)
    raise typer.Exit(code)


# What the gateway would call a bug or a missing schema, at the door: the connection itself.
_CANNOT_CONNECT = {
    "28": "the database refused the credentials of JOBGATE_DATABASE_URL",
    "3D": "the database of JOBGATE_DATABASE_URL does not exist",
    "SQLITE_CANTOPEN": "cannot open the SQLite file of JOBGATE_DATABASE_URL",
}


def load_settings() -> Settings:
    """The settings, or exit 2 naming each setting the environment got wrong."""
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as exc:
        # Name the variable the operator set (JOBGATE_PORT), not the nested field (http.port).
        names = {fields: name for name, fields in Settings.env_vars().items()}

        def setting(loc: tuple[int | str, ...]) -> str:
            root, field = (str(loc[0]), str(loc[1]) if len(loc) > 1 else None)
            return names.get((root, field)) or names.get((root, None)) or ".".join(map(str, loc))

        fail(
            *(f"invalid setting {setting(error['loc'])}: {error['msg']}" for error in exc.errors()),
            code=2,
        )


def _database_message(exc: BaseException) -> str | None:
    """One line for a database failure (class and code, never its text: it can quote values)."""
    from sqlalchemy.exc import DBAPIError

    what = describe_database_error(exc)
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    sqlstate = getattr(orig, "sqlstate", None)
    code = sqlstate[:2] if isinstance(sqlstate, str) else getattr(orig, "sqlite_errorname", None)
    if code in _CANNOT_CONNECT:
        return f"{_CANNOT_CONNECT[code]} ({what})"
    problem = database_problem(exc)
    if problem is not None:
        return f"{problem.detail} ({what})"
    return f"database error: {what}" if isinstance(exc, DBAPIError) else None


@contextmanager
def domain_errors() -> Iterator[None]:
    """Exit 1 with one line for what the user can fix: an AppError, an unreachable database."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    try:
        yield
    except AppError as exc:
        fail(exc.detail)
    except (DBAPIError, PoolTimeout, OSError) as exc:
        message = _database_message(exc)
        if message is None:
            raise
        fail(message)


def _join_sqlite_workers(*, timeout: float) -> None:
    for thread in threading.enumerate():
        if thread.name.endswith("(_connection_worker_thread)"):
            thread.join(timeout)


def run_db(work: Callable[[AsyncEngine], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run `work` on an engine of its own (disposed after), with `domain_errors` exits."""
    settings = settings or load_settings()

    async def run() -> T:
        engine = create_engine(settings.db)
        try:
            return await work(engine)
        finally:
            await engine.dispose()
            # aiosqlite answers a failed connect from its worker thread, through this loop:
            # closing the loop first prints that thread's "Event loop is closed" traceback.
            await asyncio.to_thread(_join_sqlite_workers, timeout=5.0)

    with domain_errors():
        return asyncio.run(run())


def run_admin(
    work: Callable[[AsyncSession, Settings], Awaitable[T]], settings: Settings | None = None
) -> T:
    """Run one unit of admin work in a session whose transaction commits when it returns."""
    settings = settings or load_settings()

    async def in_session(engine: AsyncEngine) -> T:
        async with create_sessionmaker(engine)() as session:
            result = await work(session, settings)
            await session.commit()
            return result

    return run_db(in_session, settings)
