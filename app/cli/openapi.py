"""`jobgate openapi`: the API document, built from the routes alone."""

from __future__ import annotations

import sys


def openapi() -> None:
    """Print the OpenAPI document as YAML (what openapi.yaml holds)."""
    from app.core.openapi import openapi_yaml
    from app.main import build_api

    # The routes, without the components behind them: no database, queue or secret needed.
    sys.stdout.write(openapi_yaml(build_api()))
