"""`process-image`: real Pillow images in a temp object store, alt text over real HTTP."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from app.bootstrap import Runtime
from app.consumer.registry import PermanentFailure, RetryLater
from app.handlers._http import DownstreamError
from app.handlers.models import ImageResult
from app.handlers.objectstore import LocalObjectStore
from app.jobs.object_keys import InvalidKey
from app.settings import Settings
from tests.handlers.conftest import MakeRun
from tests.handlers.endpoint import Reply, ScriptedEndpoint
from tests.support.fake_prestashop import ThreadedServer

pytestmark = pytest.mark.asyncio


def png(width: int, height: int, mode: str = "RGBA") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), (200, 30, 30, 255) if mode == "RGBA" else 128).save(
        out, format="PNG"
    )
    return out.getvalue()


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture
def store(handler_settings: Settings) -> LocalObjectStore:
    return LocalObjectStore(handler_settings.object_store.dir)


@pytest.fixture
def alt_text() -> Iterator[tuple[ScriptedEndpoint, ThreadedServer]]:
    endpoint = ScriptedEndpoint(default=Reply(200, {"alt_text": "A red square mug "}))
    with ThreadedServer(endpoint.app) as server:
        yield endpoint, server


async def result(runtime: Runtime, tenant_id: str, key: str) -> ImageResult | None:
    async with runtime.sessionmaker() as session:
        return await session.get(ImageResult, (tenant_id, key))


async def test_thumbnails_are_written_next_to_the_original(
    store: LocalObjectStore, runtime: Runtime, tenant_id: str, make_run: MakeRun
) -> None:
    key = "products/42/main.jpg"
    await store.put(f"{tenant_id}/{key}", jpeg(800, 400))
    payload = {
        "key": key,
        "operations": [
            {"type": "thumbnail", "width": 200, "height": 200},
            {"type": "thumbnail", "width": 1600, "height": 1600},
        ],
    }
    run = make_run("process-image", payload, tenant_id=tenant_id)
    await run()
    small = await store.get(f"{tenant_id}/{key}/thumb-200x200")
    big = await store.get(f"{tenant_id}/{key}/thumb-1600x1600")
    assert small is not None
    assert big is not None
    with Image.open(io.BytesIO(small)) as image:
        assert image.format == "JPEG"
        assert image.size == (200, 100)  # fits the box, keeps the aspect ratio
    with Image.open(io.BytesIO(big)) as image:
        assert image.size == (800, 400)  # never enlarged
    assert run.progress.percents == [50, 100]
    row = await result(runtime, tenant_id, key)
    assert row is not None
    assert row.status == "processed"
    assert row.thumbnails == [f"{key}/thumb-200x200", f"{key}/thumb-1600x1600"]
    # A rerun (redelivery) overwrites the same objects.
    await make_run("process-image", payload, tenant_id=tenant_id)()
    assert sorted(p.name for p in Path(store.root).iterdir() if not p.name.startswith(".")) == [
        f"{tenant_id}%2Fproducts%2F42%2Fmain.jpg",
        f"{tenant_id}%2Fproducts%2F42%2Fmain.jpg%2Fthumb-1600x1600",
        f"{tenant_id}%2Fproducts%2F42%2Fmain.jpg%2Fthumb-200x200",
    ]


async def test_a_missing_object_is_recorded_and_fails_the_job(
    store: LocalObjectStore, runtime: Runtime, tenant_id: str, make_run: MakeRun
) -> None:
    payload = {"key": "gone.png", "operations": [{"type": "thumbnail", "width": 10, "height": 10}]}
    run = make_run("process-image", payload, tenant_id=tenant_id)
    # Permanent: the job ends `failed` at once (not retried, never `succeeded`).
    with pytest.raises(PermanentFailure, match="'gone.png' does not exist"):
        await run()
    row = await result(runtime, tenant_id, "gone.png")
    assert row is not None
    assert row.status == "missing"
    assert run.progress.calls == []


async def test_objects_of_another_tenant_are_out_of_reach(
    store: LocalObjectStore, runtime: Runtime, tenant_id: str, make_run: MakeRun
) -> None:
    await store.put("someone-else/secret.png", png(10, 10))
    payload = {
        "key": "../someone-else/secret.png",
        "operations": [{"type": "thumbnail", "width": 5, "height": 5}],
    }
    with pytest.raises(PermanentFailure, match="does not exist"):
        await make_run("process-image", payload, tenant_id=tenant_id)()
    row = await result(runtime, tenant_id, "../someone-else/secret.png")
    assert row is not None
    assert row.status == "missing"


async def test_an_unreadable_image_fails_permanently(
    store: LocalObjectStore, runtime: Runtime, tenant_id: str, make_run: MakeRun
) -> None:
    await store.put(f"{tenant_id}/notes.txt", b"not an image")
    payload = {"key": "notes.txt", "operations": [{"type": "thumbnail", "width": 5, "height": 5}]}
    with pytest.raises(PermanentFailure, match="not a readable image"):
        await make_run("process-image", payload, tenant_id=tenant_id)()
    row = await result(runtime, tenant_id, "notes.txt")
    assert row is not None
    assert row.status == "invalid"


async def test_alt_text_comes_from_the_configured_endpoint(
    store: LocalObjectStore,
    alt_text: tuple[ScriptedEndpoint, ThreadedServer],
    handler_settings: Settings,
    runtime: Runtime,
    tenant_id: str,
    make_run: MakeRun,
) -> None:
    endpoint, server = alt_text
    settings = handler_settings.updated(images={"alt_text_url": server.base_url + "/"})
    image = png(64, 32)
    await store.put(f"{tenant_id}/mug.png", image)
    payload = {"key": "mug.png", "operations": [{"type": "alt-text"}]}
    run = make_run("process-image", payload, tenant_id=tenant_id, settings=settings)
    await run()
    headers, body = endpoint.requests[0]
    assert headers["idempotency-key"] == run.ctx.job_id
    assert body["key"] == "mug.png"
    assert body["content_type"] == "image/png"
    assert base64.b64decode(body["image_base64"]) == image
    row = await result(runtime, tenant_id, "mug.png")
    assert row is not None
    assert row.alt_text == "A red square mug"

    # A later thumbnail-only job keeps the alt text.
    thumb = {"key": "mug.png", "operations": [{"type": "thumbnail", "width": 8, "height": 8}]}
    await make_run("process-image", thumb, tenant_id=tenant_id, settings=settings)()
    row = await result(runtime, tenant_id, "mug.png")
    assert row is not None
    assert row.alt_text == "A red square mug"
    assert row.thumbnails == ["mug.png/thumb-8x8"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(503, {"error": "busy"}, {"Retry-After": "30"}), RetryLater),
        (Reply(429, "slow down"), RetryLater),
        (Reply(500, {"error": "boom"}), DownstreamError),
        (Reply(200, "<html>not json</html>"), DownstreamError),
        (Reply(422, {"error": "bad image"}), PermanentFailure),
    ],
)
async def test_alt_text_endpoint_failures(
    store: LocalObjectStore,
    alt_text: tuple[ScriptedEndpoint, ThreadedServer],
    handler_settings: Settings,
    tenant_id: str,
    make_run: MakeRun,
    reply: Reply,
    expected: type[Exception],
) -> None:
    endpoint, server = alt_text
    endpoint.replies.append(reply)
    settings = handler_settings.updated(images={"alt_text_url": server.base_url + "/"})
    await store.put(f"{tenant_id}/mug.png", png(8, 8))
    payload = {"key": "mug.png", "operations": [{"type": "alt-text"}]}
    with pytest.raises(expected) as caught:
        await make_run("process-image", payload, tenant_id=tenant_id, settings=settings)()
    if isinstance(caught.value, RetryLater):
        assert caught.value.delay_seconds == (30 if reply.status == 503 else 60)


async def test_alt_text_without_an_endpoint_fails_permanently(
    store: LocalObjectStore, tenant_id: str, make_run: MakeRun
) -> None:
    await store.put(f"{tenant_id}/mug.png", png(8, 8))
    payload = {"key": "mug.png", "operations": [{"type": "alt-text"}]}
    with pytest.raises(PermanentFailure, match="ALT_TEXT_URL"):
        await make_run("process-image", payload, tenant_id=tenant_id)()


async def test_local_store_keys(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    assert await store.get("a/b") is None
    assert not await store.exists("a/b")
    await store.put("a/b", b"1")
    await store.put("a/b/c", b"2")  # a key may also be a prefix of others
    assert await store.get("a/b") == b"1"
    assert await store.get("a/b/c") == b"2"
    assert await store.exists("a/b/c")
    for bad in ("", "..", ".", "x\ny"):
        with pytest.raises(InvalidKey):
            store.path(bad)
    assert store.path("../../etc/passwd").parent == tmp_path


async def test_s3_store_needs_boto3_and_a_bucket(handler_settings: Settings) -> None:
    from app.handlers.objectstore import object_store_from_settings

    no_bucket = handler_settings.updated(object_store={"kind": "s3"})
    with pytest.raises(ValueError, match="S3_BUCKET"):
        object_store_from_settings(no_bucket.object_store)
    try:
        import boto3  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        configured = no_bucket.updated(object_store={"s3_bucket": "media"})
        with pytest.raises(RuntimeError, match="needs boto3"):
            object_store_from_settings(configured.object_store)
    else:
        pytest.skip("boto3 is installed; the S3 store needs a real endpoint to test")
