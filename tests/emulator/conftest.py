"""The emulator as a real `jobgate emulator` subprocess (uvicorn on a free port), one per
test module, reset before every test through `/_emulator/reset`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import cloudflare
import httpx
import pytest
import pytest_asyncio

from tests.support.servers import ServerProcess, jobgate_argv, jobgate_env

TOKEN = "emulator-test-token"
ACCOUNT = "0123456789abcdef0123456789abcdef"


def emulator_env(database: tuple[str, str | None], **extra: str) -> dict[str, str]:
    url, schema = database
    return jobgate_env(
        url,
        schema=schema,
        extra={
            "JOBGATE_CF_API_TOKEN": TOKEN,
            "JOBGATE_CF_ACCOUNT_ID": ACCOUNT,
            "JOBGATE_EMULATOR_TEST_CONTROLS": "true",
            **extra,
        },
    )


def start_emulator(env: dict[str, str]) -> ServerProcess:
    return ServerProcess(
        lambda port: jobgate_argv("emulator", "--port", str(port)), env=env
    ).start()


class Emulator:
    """A running emulator: its URLs and its test controls."""

    def __init__(self, process: ServerProcess) -> None:
        self.process = process
        self.http = httpx.Client(timeout=30.0)

    @property
    def base_url(self) -> str:
        return self.process.base_url

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/client/v4"

    @property
    def queues_url(self) -> str:
        return f"{self.api_url}/accounts/{ACCOUNT}/queues"

    def control(self, method: str, path: str, body: Any = None) -> Any:
        # The base URL is read each time: a restarted process listens on a new port.
        response = self.http.request(method, f"{self.base_url}/_emulator/{path}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def reset(self) -> None:
        self.control("POST", "reset")

    def advance(self, seconds: float) -> None:
        self.control("POST", "clock", {"advance_seconds": seconds})

    def configure(self, **changes: Any) -> dict[str, Any]:
        config: dict[str, Any] = self.control("POST", "config", changes)
        return config

    def faults(self, **fault: Any) -> None:
        self.control("POST", "faults", fault)

    def close(self) -> None:
        self.http.close()
        self.process.close()


@pytest.fixture(scope="module")
def emulator(database: tuple[str, str | None]) -> Iterator[Emulator]:
    running = Emulator(start_emulator(emulator_env(database)))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(autouse=True)
def _fresh_emulator(emulator: Emulator) -> None:
    emulator.reset()


@pytest_asyncio.fixture
async def cf(emulator: Emulator) -> AsyncIterator[cloudflare.AsyncCloudflare]:
    """The official SDK pointed at the emulator (no retries unless a test asks)."""
    async with cloudflare.AsyncCloudflare(
        api_token=TOKEN, base_url=emulator.api_url, max_retries=0
    ) as client:
        yield client


@pytest_asyncio.fixture
async def api(emulator: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    """Raw HTTP with the right token, for the limits the SDK would refuse to send."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        base_url=emulator.queues_url, headers=headers, timeout=30.0
    ) as client:
        yield client
