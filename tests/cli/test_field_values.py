"""`jobgate jobs submit --field NAME=VALUE`: VALUE is JSON, except for a text field."""

from __future__ import annotations

from typing import Any

import pytest

from app.cli.jobs import field_value


@pytest.mark.parametrize(
    ("job_type", "name", "raw", "value"),
    [
        ("sync-orders", "siteId", "1", "1"),  # a site id is text, even when it looks numeric
        ("sync-single-order", "siteId", "1", "1"),  # optional text
        ("sync-orders", "lastDays", "3", 3),
        ("sync-orders", "bulkMode", "false", False),
        ("send-email", "variables", '{"a": 1}', {"a": 1}),
        ("analytics-event", "name", "signup", "signup"),  # not JSON: the text
        ("no-such-type", "x", "1", 1),  # unknown: JSON, and the gateway answers
    ],
)
def test_field_values(job_type: str, name: str, raw: str, value: Any) -> None:
    found = field_value(job_type, name, raw)
    assert (type(found), found) == (type(value), value)
