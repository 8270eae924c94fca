"""Every `$ref` of the API document resolves, in the committed file and as served live.

Both copies are checked: a hand-written reference missing from `components` broke the
generated clients while the drift test passed (both copies were equally broken).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from app.core.config import REPO_ROOT
from app.jobs.payloads import JOB_TYPES
from tests.factories import TenantFactory, auth


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolves(document: dict[str, Any], ref: str) -> bool:
    if not ref.startswith("#/"):
        return False  # the document is self-contained: no external references
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def dangling_refs(document: dict[str, Any]) -> list[str]:
    return [ref for ref in sorted(set(_refs(document))) if not _resolves(document, ref)]


def _committed() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(
        (REPO_ROOT / "openapi.yaml").read_text(encoding="utf-8")
    )
    return document


def test_the_checker_finds_a_dangling_ref() -> None:
    document = {"paths": {"/x": {"$ref": "#/components/schemas/Missing"}}, "components": {}}
    assert dangling_refs(document) == ["#/components/schemas/Missing"]


def test_every_ref_of_openapi_yaml_resolves() -> None:
    document = _committed()
    assert list(_refs(document)), "the document has no references at all"
    assert dangling_refs(document) == []
    # The webhook bodies, read raw to verify a signature first, are generated too.
    schemas = document["components"]["schemas"]
    for name in ("PrestaShopEvent", "UnsignedPrestaShopEvent", "R2Notification"):
        assert name in schemas


@pytest.mark.asyncio
async def test_every_ref_of_the_served_document_resolves(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert dangling_refs(document) == []
    assert document == _committed()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_security_follows_each_routes_authentication() -> None:
    document = _committed()
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    public = {"/healthz", "/readyz"}
    # Their own signature or URL token authenticates these, never a bearer credential.
    signed = {
        "/v1/webhooks/prestashop/{tenant_id}",
        "/v1/webhooks/prestashop/{tenant_id}/ping",
        "/v1/webhooks/prestashop/{tenant_id}/unsigned/{token}",
    }
    for path, method, operation in _operations(document):
        if path in public | signed:
            assert "security" not in operation, (method, path)
        else:
            assert operation["security"] == [{"bearer": []}], (method, path)
            headers = operation["responses"]["401"]["headers"]
            assert headers["WWW-Authenticate"]["required"] is True
    for path in ("/v1/webhooks/prestashop/{tenant_id}", "/v1/webhooks/prestashop/{tenant_id}/ping"):
        signature = document["paths"][path]["post"]["parameters"]
        names = {p["name"] for p in signature if p["in"] == "header"}
        assert names == {"webhook-id", "webhook-timestamp", "webhook-signature"}, path


def test_response_headers_servers_and_examples() -> None:
    document = _committed()
    assert document["servers"] == [{"url": "http://127.0.0.1:8000"}]
    for path, _method, operation in _operations(document):
        for status in ("429", "503"):
            if status in operation["responses"]:
                assert "Retry-After" in operation["responses"][status]["headers"], (path, status)
    submit = document["paths"]["/v1/jobs"]["post"]
    assert "RateLimit-Remaining" in submit["responses"]["202"]["headers"]
    # Admin writes do not pass admission: no rate-limit headers claimed there.
    create_tenant = document["paths"]["/v1/admin/tenants"]["post"]["responses"]["201"]
    assert "RateLimit-Remaining" not in create_tenant.get("headers", {})
    examples = submit["requestBody"]["content"]["application/json"]["examples"]
    assert {example["value"]["type"] for example in examples.values()} == JOB_TYPES
    batch = document["paths"]["/v1/jobs/batch"]["post"]["requestBody"]["content"]
    every = batch["application/json"]["examples"]["every-type"]["value"]["jobs"]
    assert {job["type"] for job in every} == JOB_TYPES


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/admin/jobs"])
def test_the_type_filter_is_an_enum_of_job_types(path: str) -> None:
    parameters = _committed()["paths"][path]["get"]["parameters"]
    [type_filter] = [p for p in parameters if p["name"] == "type"]
    variants = type_filter["schema"]["anyOf"]
    enums = [variant["enum"] for variant in variants if "enum" in variant]
    assert [set(values) for values in enums] == [set(JOB_TYPES)]


@pytest.mark.asyncio
async def test_a_bad_type_filter_is_a_422_naming_the_parameter(
    client: httpx.AsyncClient, tenants: TenantFactory
) -> None:
    created = await tenants.create()
    key = await tenants.key(created.tenant_id)
    response = await client.get("/v1/jobs", params={"type": "bogus"}, headers=auth(key))
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    [error] = response.json()["errors"]
    assert error["loc"] == ["query", "type"]
    good = await client.get("/v1/jobs", params={"type": "send-email"}, headers=auth(key))
    assert good.status_code == 200
