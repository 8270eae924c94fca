"""`jobgate db`: schema migrations."""

from __future__ import annotations

from functools import partial

import typer

from app.cli.common import err, load_settings, run_db
from app.settings import Settings

app = typer.Typer(help="Database migrations.", no_args_is_help=True)


def upgrade_database(settings: Settings) -> None:
    """Alembic upgrade head (also the first step of `jobgate dev` and `jobgate emulator`)."""
    from app.core.migrations import upgrade

    run_db(partial(upgrade, ini=settings.db.alembic_ini), settings)


@app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (Alembic upgrade head)."""
    upgrade_database(load_settings())
    err.print("[green]database is at the latest revision[/green]")
