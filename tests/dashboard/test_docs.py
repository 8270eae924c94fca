"""`/docs` and `/redoc` reference only assets this gateway serves, and it serves them."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.asyncio

_ASSET = re.compile(
    r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'|Redoc\.init\(['"]([^'"]+)"""
)


def _references(html: str) -> list[str]:
    return [next(g for g in match.groups() if g) for match in _ASSET.finditer(html)]


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        (
            "/docs",
            {
                "/static/vendor/swagger-ui/swagger-ui-bundle.js",
                "/static/vendor/swagger-ui/swagger-ui.css",
                "/static/vendor/swagger-ui/favicon-32x32.png",
            },
        ),
        ("/redoc", {"/static/vendor/redoc/redoc.standalone.js"}),
    ],
)
async def test_docs_pages_use_only_same_origin_assets(
    client: httpx.AsyncClient, page: str, assets: set[str]
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    assert "cdn.jsdelivr.net" not in html
    assert "fonts.googleapis.com" not in html
    assert "fastapi.tiangolo.com" not in html
    references = _references(html)
    assert assets <= set(references), references
    for reference in references:
        assert reference.startswith("/"), f"{page} references {reference}"
        assert not reference.startswith("//"), f"{page} references {reference}"
    for asset in assets:
        served = await client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 500
    assert "/openapi.json" in references or "/openapi.json" in html
    assert (await client.get("/openapi.json")).status_code == 200


async def test_the_oauth2_redirect_page_is_local(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert _references(response.text) == []  # inline script only: nothing is loaded


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


async def test_every_ref_of_the_document_resolves(client: httpx.AsyncClient) -> None:
    """A dangling `$ref` makes ReDoc render nothing but an error."""
    document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    refs = set(_refs(document))
    assert "#/components/schemas/PrestaShopEvent" in refs
    for ref in refs:
        prefix, _, name = ref.rpartition("/")
        assert prefix == "#/components/schemas", ref
        assert name in schemas, f"{ref} does not resolve"
