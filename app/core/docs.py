"""`/docs` (Swagger UI) and `/redoc` from assets this process serves itself.

FastAPI's default pages load their JavaScript, CSS, fonts and favicon from public CDNs, so
they are blank on a machine without internet. The assets are vendored under `app/static/`
(see `app/static/README.md` for their versions and licences) and served at `/static`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PREFIX = "/static"
SWAGGER_UI = f"{STATIC_PREFIX}/vendor/swagger-ui"
REDOC = f"{STATIC_PREFIX}/vendor/redoc"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"

router = APIRouter(tags=["docs"], include_in_schema=False)


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="jobgate - API",
        swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
        oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
        # No badge from the public validator service.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get(OAUTH2_REDIRECT_PATH)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title="jobgate - API reference",
        redoc_js_url=f"{REDOC}/redoc.standalone.js",
        redoc_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
        with_google_fonts=False,
    )


def install_docs(app: FastAPI) -> None:
    """Serve `/static` and the two documentation pages (the app is built with
    `docs_url=None, redoc_url=None`, so FastAPI's CDN pages are not registered)."""
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(router)
