"""`jobgate db`: schema migrations and the row counters' repair."""

from __future__ import annotations

from functools import partial

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from app.cli.common import err, load_settings, run_admin, run_db
from app.settings import Settings

app = typer.Typer(help="Database migrations and maintenance.", no_args_is_help=True)


def upgrade_database(settings: Settings) -> None:
    """Alembic upgrade head (also the first step of `jobgate dev` and `jobgate emulator`)."""
    from app.core.migrations import upgrade

    run_db(partial(upgrade, ini=settings.db.alembic_ini), settings)


@app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (Alembic upgrade head)."""
    upgrade_database(load_settings())
    err.print("[green]database is at the latest revision[/green]")


async def recount_all(session: AsyncSession, _settings: Settings) -> None:
    """Rebuild every row counter from the rows (see `app.core.counters`)."""
    from app.core import counters
    from app.jobs.counters import UNFINISHED_JOBS
    from app.outbox.counters import UNPUBLISHED
    from app.queues.counters import QUEUE_MESSAGES

    await counters.recount(session, [UNFINISHED_JOBS, QUEUE_MESSAGES, UNPUBLISHED])


@app.command("recount")
def db_recount() -> None:
    """Rebuild the row counters (unfinished jobs, queue backlogs, outbox backlog) from the rows.

    The triggers keep them exact; this repairs them after a manual edit that bypassed the
    triggers (a trigger dropped, rows copied in with triggers disabled). Safe while serving.
    """
    run_admin(recount_all)
    err.print("[green]row counters recounted[/green]")
