"""Every key the API accepts for `process-image` can be stored and processed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from app.consumer.registry import PermanentFailure
from app.handlers.objectstore import MAX_FILE_NAME, LocalObjectStore
from app.jobs.object_keys import MAX_JOB_KEY_BYTES
from app.jobs.payloads import ProcessImageJob
from app.settings import Settings
from tests.handlers.conftest import MakeRun

pytestmark = pytest.mark.asyncio


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    "key",
    [
        "€" * (MAX_JOB_KEY_BYTES // 3),  # longest in bytes; percent-encoded: 9 bytes each
        "k" * MAX_JOB_KEY_BYTES,
        "a/" * (MAX_JOB_KEY_BYTES // 2),
    ],
)
async def test_the_longest_accepted_keys_are_processed(
    handler_settings: Settings, tenant_id: str, make_run: MakeRun, key: str
) -> None:
    job = ProcessImageJob.model_validate(
        {
            "type": "process-image",
            "key": key,
            "operations": [{"type": "thumbnail", "width": 8192, "height": 8192}],
        }
    )
    store = LocalObjectStore(handler_settings.object_store.dir)
    await store.put(f"{tenant_id}/{key}", png())
    run = make_run("process-image", job.payload(), tenant_id=tenant_id)
    await run()
    assert await store.get(f"{tenant_id}/{key}/thumb-8192x8192") is not None
    names = [p.name for p in Path(store.root).iterdir()]
    assert all(len(name.encode()) <= MAX_FILE_NAME for name in names)


async def test_long_keys_keep_distinct_files(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    long = "x" * 900
    await store.put(long + "a", b"1")
    await store.put(long + "b", b"2")
    assert await store.get(long + "a") == b"1"
    assert await store.get(long + "b") == b"2"
    assert len(list(tmp_path.iterdir())) == 2


async def test_an_occurred_at_out_of_range_fails_permanently(
    tenant_id: str, make_run: MakeRun
) -> None:
    """Jobs stored before the API refused such times end at once, not after four attempts."""
    payload = {"name": "x", "occurredAt": "9999-12-31T23:59:59-01:00"}
    with pytest.raises(PermanentFailure, match="out of range"):
        await make_run("analytics-event", payload, tenant_id=tenant_id)()
