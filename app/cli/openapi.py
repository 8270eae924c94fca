"""`jobgate openapi`: the API document, built from the routes alone."""

from __future__ import annotations

import sys


def openapi() -> None:
    """Print the OpenAPI document as YAML (what openapi.yaml holds)."""
    from app.core.openapi import openapi_yaml
    from app.main import build_api
    from app.settings import get_settings

    # The routes, without the components behind them: no database, queue or secret needed.
    sys.stdout.write(openapi_yaml(build_api(server_url=get_settings().http.public_url)))
