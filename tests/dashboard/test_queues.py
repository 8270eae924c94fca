"""The queues page and its controls (pause, resume, purge with confirmation): the operator's
only, through the queue controls service, on the local engine."""

from __future__ import annotations

import re

import httpx
import pytest

from app.bootstrap import Runtime
from tests.dashboard.conftest import BROWSER, TenantKeys, csrf_of, login, submit
from tests.factories import auth

pytestmark = pytest.mark.asyncio
QUEUE = "analytics-events"


def _row(html: str, queue: str) -> str:
    match = re.search(rf'<tr data-queue="{re.escape(queue)}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {queue}"
    return match.group(1)


def _cells(row: str) -> list[str]:
    return [
        re.sub(r"<[^>]+>", "", cell).strip()
        for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    ]


async def test_operator_sees_every_queue_with_its_numbers_and_controls_them(
    client: httpx.AsyncClient, runtime: Runtime, operator_key: str, tenant_a: TenantKeys
) -> None:
    for n in range(3):
        await submit(client, tenant_a.writer, f"e{n}")
    await login(client, operator_key)
    page = await client.get("/dashboard", headers=BROWSER)
    assert page.status_code == 200
    for queue in runtime.topology.queues:
        _row(page.text, queue)
    cells = _cells(_row(page.text, QUEUE))
    assert cells[0] == QUEUE
    assert cells[1] == "3"  # backlog
    assert cells[2] == "0"  # in flight
    assert cells[5] == f"{QUEUE}-dlq"
    assert "active" in cells[7]
    csrf = csrf_of(page.text)

    paused = await client.post(
        f"/dashboard/queues/{QUEUE}/pause", data={"csrf": csrf}, headers=BROWSER
    )
    assert paused.status_code == 303
    page = await client.get("/dashboard", headers=BROWSER)
    assert "paused" in _cells(_row(page.text, QUEUE))[7]
    shown = await client.get("/v1/admin/queues", headers=auth(operator_key))
    [row] = [q for q in shown.json()["data"] if q["name"] == QUEUE]
    assert row["paused"] is True
    resumed = await client.post(
        f"/dashboard/queues/{QUEUE}/resume", data={"csrf": csrf}, headers=BROWSER
    )
    assert resumed.status_code == 303
    page = await client.get("/dashboard", headers=BROWSER)
    assert "active" in _cells(_row(page.text, QUEUE))[7]

    confirm_page = await client.get(f"/dashboard/queues/{QUEUE}/purge", headers=BROWSER)
    assert confirm_page.status_code == 200
    assert 'name="confirm"' in confirm_page.text
    wrong = await client.post(
        f"/dashboard/queues/{QUEUE}/purge",
        data={"csrf": csrf, "confirm": "something-else"},
        headers=BROWSER,
    )
    assert wrong.status_code == 422
    page = await client.get("/dashboard", headers=BROWSER)
    assert _cells(_row(page.text, QUEUE))[1] == "3"
    purged = await client.post(
        f"/dashboard/queues/{QUEUE}/purge", data={"csrf": csrf, "confirm": QUEUE}, headers=BROWSER
    )
    assert purged.status_code == 303
    page = await client.get("/dashboard", headers=BROWSER)
    assert _cells(_row(page.text, QUEUE))[1] == "0"


async def test_queue_controls_are_the_operators_only(
    client: httpx.AsyncClient, tenant_a: TenantKeys
) -> None:
    for action in ("pause", "resume", "purge"):
        response = await client.post(
            f"/dashboard/queues/{QUEUE}/{action}",
            data={"confirm": QUEUE},
            headers=auth(tenant_a.admin),
        )
        assert response.status_code == 403, action
    assert (
        await client.get(f"/dashboard/queues/{QUEUE}/purge", headers=auth(tenant_a.admin))
    ).status_code == 403
    await login(client, tenant_a.admin)
    page = await client.get("/dashboard/jobs", headers=BROWSER)
    assert "/dashboard/queues/" not in page.text
    refused = await client.post(
        f"/dashboard/queues/{QUEUE}/pause", data={"csrf": csrf_of(page.text)}, headers=BROWSER
    )
    assert refused.status_code == 403


async def test_an_unknown_queue_is_404(client: httpx.AsyncClient, operator_key: str) -> None:
    response = await client.post(
        "/dashboard/queues/no-such-queue/pause", headers=auth(operator_key)
    )
    assert response.status_code == 404
