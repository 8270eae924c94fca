"""The `jobgate` command line: one module per command group, assembled here.

Commands reach the database through `common.run_admin` (one committed session) or
`common.run_db` (an engine), and end on a user's mistake through `common.fail` (one line on
stderr, an exit code, no traceback).
"""

from __future__ import annotations

import typer

from app.cli import (
    cf,
    db,
    dlq,
    email_policy,
    help,
    jobs,
    keys,
    migrate,
    openapi,
    operators,
    queues,
    schedules,
    server,
    shops,
    tenants,
    webhooks,
)

help.install()
cli = typer.Typer(help="jobgate: background jobs on Cloudflare Queues.", no_args_is_help=True)
# Registration order is the order `jobgate --help` lists them in.
cli.add_typer(db.app, name="db")
cli.add_typer(tenants.app, name="tenants")
cli.command()(server.serve)
cli.command()(server.dev)
cli.command()(openapi.openapi)
cli.command()(server.emulator)
cli.add_typer(shops.app, name="shops")
cli.add_typer(email_policy.app, name="email-policy")
cli.command()(server.consume)
cli.add_typer(keys.app, name="keys")
cli.add_typer(webhooks.app, name="webhooks")
cli.add_typer(operators.app, name="operators")
cli.add_typer(schedules.app, name="schedules")
cli.add_typer(jobs.app, name="jobs")
cli.add_typer(dlq.app, name="dlq")
cli.add_typer(queues.app, name="queues")
cli.add_typer(cf.app, name="cf")
cli.add_typer(migrate.app, name="migrate")


def main() -> None:
    cli()
