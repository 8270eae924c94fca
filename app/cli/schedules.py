"""`jobgate schedules`: cron schedules that submit jobs (app/scheduler)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.common import err, fail, run_admin
from app.cli.gateway import JsonOption, listing
from app.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.scheduler.models import Schedule

app = typer.Typer(
    help="Cron schedules (UTC) that submit a tenant's job at every occurrence.",
    no_args_is_help=True,
)


def _schedule_json(row: Schedule) -> dict[str, object]:
    from app.scheduler.schemas import SchedulePublic

    public: dict[str, object] = SchedulePublic.model_validate(row).model_dump(mode="json")
    return {"tenant_id": row.tenant_id, **public}


@app.command("create")
def schedules_create(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    name: Annotated[str, typer.Argument(help="A name, unique per tenant.")],
    cron: Annotated[
        str,
        typer.Option(
            "--cron", metavar="EXPR", help="Five fields, e.g. '0 */3 * * *' (in --timezone)."
        ),
    ],
    job: Annotated[
        str,
        typer.Option(
            "--job", help='The job as JSON, e.g. \'{"type":"sync-orders","siteId":"s1"}\'.'
        ),
    ],
    timezone: Annotated[
        str,
        typer.Option(
            "--timezone", metavar="ZONE", help="IANA time zone of --cron, e.g. Europe/Paris."
        ),
    ] = "UTC",
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it paused.")] = False,
) -> None:
    """Create a schedule and print it as JSON."""
    from pydantic import ValidationError

    from app.core.clock import utcnow
    from app.scheduler import service as scheduler_service
    from app.scheduler.schemas import ScheduleCreate
    from app.tenants import service as tenants_service

    try:
        body = ScheduleCreate.model_validate(
            {
                "name": name,
                "cron": cron,
                "timezone": timezone,
                "job": json.loads(job),
                "enabled": not disabled,
            }
        )
    except json.JSONDecodeError as exc:
        fail(f"--job is not valid JSON: {exc}", code=2)
    except ValidationError as exc:
        fail(
            *(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            ),
            code=2,
        )

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, object]:
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
        row = await scheduler_service.create_schedule(
            session, tenant_id=tenant_id, body=body, now=utcnow()
        )
        return _schedule_json(row)

    print(json.dumps(run_admin(work)))


@app.command("list")
def schedules_list(
    tenant_id: Annotated[
        str | None, typer.Argument(help="The tenant's id (default: every tenant).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List schedules."""
    from app.scheduler import service as scheduler_service
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, object]]:
        if tenant_id is not None:
            await tenants_service.get_tenant(session, tenant_id=tenant_id)
        rows = await scheduler_service.list_schedules(session, tenant_id=tenant_id)
        return [_schedule_json(row) for row in rows]

    columns = ["tenant_id", "id", "name", "cron", "enabled", "next_run_at", "last_error"]
    listing(run_admin(work), columns, as_json=as_json)


@app.command("delete")
def schedules_delete(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    schedule_id: Annotated[str, typer.Argument(help="The schedule's id (from `schedules list`).")],
) -> None:
    """Delete a schedule (the jobs it submitted stay)."""
    from app.scheduler import service as scheduler_service
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> None:
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
        await scheduler_service.delete_schedule(
            session, tenant_id=tenant_id, schedule_id=schedule_id
        )

    run_admin(work)
    err.print(f"schedule {schedule_id} deleted")
