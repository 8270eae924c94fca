"""`process-image`: thumbnails (Pillow) and alt text (an HTTP endpoint) for a stored image.

Thumbnails fit inside `width x height` (aspect ratio kept, never enlarged) and are written
to `{key}/thumb-{width}x{height}` in the original's format, so a rerun overwrites the same
objects. A missing original is recorded (`image_result.status = missing`) and fails the job
permanently, not retried: the object will not appear by waiting, and a job that made nothing
must not read `succeeded`. An undecodable one fails permanently too.
With `object_store_per_tenant`, keys live under `{tenant_id}/` in the store.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from typing import Any, assert_never

import httpx
from PIL import Image, ImageOps, UnidentifiedImageError

from app.consumer.registry import JobContext, PermanentFailure, handler
from app.core.clock import to_datetime
from app.handlers import service
from app.handlers._http import DownstreamError, raise_for_downstream
from app.handlers.models import ImageResult
from app.handlers.objectstore import ObjectStore, object_store_from_settings
from app.jobs.object_keys import InvalidKey
from app.jobs.payloads import AltTextOperation, ProcessImagePayload, ThumbnailOperation

logger = logging.getLogger(__name__)

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


def object_store(ctx: JobContext[ProcessImagePayload]) -> ObjectStore:
    """The process's store (created once; tests may put their own in `state`)."""
    store = ctx.resources.state.get(__name__)
    if store is None:
        settings = ctx.resources.settings.object_store
        store = ctx.resources.state[__name__] = object_store_from_settings(settings)
    return store


def thumbnail_key(key: str, width: int, height: int) -> str:
    return f"{key}/thumb-{width}x{height}"


def sniff(data: bytes) -> str:
    """The image's MIME type; raises PermanentFailure when it is not a readable image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return FORMATS.get(image.format or "", "application/octet-stream")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise PermanentFailure(f"not a readable image: {exc}") from exc


def make_thumbnail(data: bytes, width: int, height: int) -> tuple[bytes, str]:
    """(encoded thumbnail, MIME type). CPU-bound: call it in a thread."""
    with Image.open(io.BytesIO(data)) as original:
        fmt = original.format if original.format in FORMATS else "PNG"
        image = ImageOps.exif_transpose(original)
        image.thumbnail((width, height), Image.Resampling.LANCZOS)
        if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
            image = image.convert("RGB")
        out = io.BytesIO()
        image.save(out, format=fmt)
    return out.getvalue(), FORMATS[fmt]


async def generate_alt_text(
    ctx: JobContext[ProcessImagePayload], key: str, data: bytes, content_type: str
) -> str:
    """POST the image to the configured endpoint; it answers `{"alt_text": "..."}`."""
    settings = ctx.resources.settings
    if not settings.images.alt_text_url:
        raise PermanentFailure("alt-text asked for but JOBGATE_ALT_TEXT_URL is not set")
    body = {
        "key": key,
        "tenant_id": ctx.tenant_id,
        "content_type": content_type,
        "image_base64": base64.b64encode(data).decode(),
    }
    try:
        response = await ctx.resources.http.post(
            settings.images.alt_text_url,
            json=body,
            headers={"Idempotency-Key": ctx.job_id},
            timeout=settings.images.alt_text_timeout_seconds,
        )
    except httpx.TransportError as exc:
        raise DownstreamError(f"alt-text endpoint unreachable: {type(exc).__name__}") from exc
    raise_for_downstream(response, service="alt-text endpoint", now_ms=ctx.resources.clock.now_ms())
    try:
        answer: Any = response.json()
    except ValueError as exc:
        raise DownstreamError("alt-text endpoint answered with a body that is not JSON") from exc
    text = answer.get("alt_text", answer.get("altText")) if isinstance(answer, dict) else None
    if not isinstance(text, str):
        raise DownstreamError("alt-text endpoint answered without an `alt_text` string")
    return text.strip()


async def _record(
    ctx: JobContext[ProcessImagePayload],
    key: str,
    status: str,
    *,
    thumbnails: list[str] | None = None,
    alt_text: str | None = None,
    detail: str | None = None,
) -> None:
    row = {
        "tenant_id": ctx.tenant_id,
        "object_key": key,
        "status": status,
        "thumbnails": thumbnails or [],
        "alt_text": alt_text,
        "detail": detail,
        "job_id": ctx.job_id,
        "updated_at": to_datetime(ctx.resources.clock.now_ms()),
    }
    keys = ["tenant_id", "object_key"]
    # A job without an alt-text operation keeps the alt text an earlier job made.
    columns = [c for c in row if c not in keys and not (c == "alt_text" and alt_text is None)]
    async with ctx.resources.sessionmaker() as session:
        await service.upsert(session, ImageResult, [row], keys=keys, update_columns=columns)
        await session.commit()


@handler("process-image", ProcessImagePayload, timeout_seconds=300)
async def process_image(ctx: JobContext[ProcessImagePayload]) -> None:
    """Run the job's operations on the object `key`, recording the results."""
    key = ctx.payload.key
    operations = ctx.payload.operations
    settings = ctx.resources.settings
    stored = f"{ctx.tenant_id}/{key}" if settings.object_store.per_tenant else key
    store = object_store(ctx)
    try:
        data = await store.get(stored)
    except InvalidKey as exc:
        raise PermanentFailure(f"invalid object key: {exc}") from exc
    if data is None:
        logger.info("image job %s: object is missing; recorded, not retried", ctx.job_id)
        await _record(ctx, key, "missing", detail="the object does not exist")
        raise PermanentFailure(f"object {key!r} does not exist")
    try:
        content_type = sniff(data)
    except PermanentFailure as exc:
        await _record(ctx, key, "invalid", detail=str(exc))
        raise
    thumbnails: list[str] = []
    alt_text: str | None = None
    for index, operation in enumerate(operations, start=1):
        if isinstance(operation, ThumbnailOperation):
            width, height = operation.width, operation.height
            thumb, thumb_type = await asyncio.to_thread(make_thumbnail, data, width, height)
            await store.put(thumbnail_key(stored, width, height), thumb, content_type=thumb_type)
            thumbnails.append(thumbnail_key(key, width, height))
        elif isinstance(operation, AltTextOperation):
            alt_text = await generate_alt_text(ctx, key, data, content_type)
        else:
            assert_never(operation)
        await ctx.progress(index * 100 // len(operations), f"{index}/{len(operations)} done")
    await _record(ctx, key, "processed", thumbnails=thumbnails, alt_text=alt_text)
