"""Object stores for images: a local directory by default, S3-compatible (R2) optionally.

Keys are R2-style (`products/42/main.jpg`, `products/42/main.jpg/thumb-200x200`): a key may
be both an object and the prefix of others, which a directory tree cannot represent, so
the local store keeps one flat directory with each key percent-encoded into a file name
(hashed when that name would be too long for the file system).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from app.handlers.config import ObjectStoreSettings
from app.jobs.object_keys import InvalidKey, check_key

# File names are at most 255 bytes on common file systems; longer encoded keys are cut
# and completed with a hash after "#", which percent-encoding never outputs.
MAX_FILE_NAME = 255
_HASHED_PREFIX = MAX_FILE_NAME - 1 - 64


class ObjectStore(Protocol):
    """Get, put and test objects by key. `get` of a missing key returns None."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None: ...

    async def exists(self, key: str) -> bool: ...


class LocalObjectStore:
    """Objects as files in one directory; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        # `quote(safe="")` escapes "/" too, and "." / ".." cannot come out of a checked key
        # as a whole name because such keys are refused below.
        name = quote(check_key(key), safe="")
        if name in (".", ".."):
            raise InvalidKey("an object key cannot be '.' or '..'")
        if len(name) > MAX_FILE_NAME:
            digest = hashlib.sha256(key.encode()).hexdigest()
            name = f"{name[:_HASHED_PREFIX]}#{digest}"
        return self.root / name

    async def get(self, key: str) -> bytes | None:
        path = self.path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        await asyncio.to_thread(self._write, self.path(key), data)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class S3ObjectStore:
    """An S3-compatible bucket (Cloudflare R2) through boto3, which is an optional extra.

    Credentials come from the standard AWS variables/config; calls run in threads.
    """

    def __init__(self, bucket: str, *, endpoint_url: str | None = None) -> None:
        try:
            import boto3  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise RuntimeError("JOBGATE_OBJECT_STORE=s3 needs boto3 (pip install boto3)") from exc
        self.bucket = bucket
        self._client: Any = boto3.client("s3", endpoint_url=endpoint_url)

    async def get(self, key: str) -> bytes | None:
        def _get() -> bytes | None:
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=check_key(key))
            except self._client.exceptions.NoSuchKey:
                return None
            body: bytes = response["Body"].read()
            return body

        return await asyncio.to_thread(_get)

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        await asyncio.to_thread(
            self._client.put_object, Bucket=self.bucket, Key=check_key(key), Body=data, **extra
        )

    async def exists(self, key: str) -> bool:
        def _head() -> bool:
            try:
                self._client.head_object(Bucket=self.bucket, Key=check_key(key))
            except self._client.exceptions.ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                    return False
                raise
            return True

        return await asyncio.to_thread(_head)


def object_store_from_settings(settings: ObjectStoreSettings) -> ObjectStore:
    if settings.kind == "s3":
        if not settings.s3_bucket:
            raise ValueError("JOBGATE_OBJECT_STORE=s3 needs JOBGATE_OBJECT_STORE_S3_BUCKET")
        return S3ObjectStore(settings.s3_bucket, endpoint_url=settings.s3_endpoint_url)
    return LocalObjectStore(settings.dir)
