"""Each job type's request model is its payload model plus the options, and what is stored
validates again as the payload model (the consumer re-validates it before the handler)."""

from __future__ import annotations

from typing import Any

import pytest

from app.jobs.payloads import JOB_MODELS, JOB_PAYLOADS, OPTION_FIELDS


def test_every_job_type_has_a_payload_model() -> None:
    assert JOB_PAYLOADS.keys() == JOB_MODELS.keys()
    for job_type, request in JOB_MODELS.items():
        payload = JOB_PAYLOADS[job_type]
        assert issubclass(request, payload)
        assert set(request.model_fields) - set(payload.model_fields) == set(OPTION_FIELDS)


def _examples() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for job_type, request in JOB_MODELS.items():
        extra = request.model_config.get("json_schema_extra")
        assert isinstance(extra, dict)
        for example in extra["examples"]:  # type: ignore[union-attr]
            found.append((job_type, example))
    return found


@pytest.mark.parametrize(("job_type", "example"), _examples())
def test_a_stored_payload_validates_as_its_payload_model(
    job_type: str, example: dict[str, Any]
) -> None:
    request = JOB_MODELS[job_type].model_validate({**example, "delay_seconds": 5})
    stored = request.payload()
    payload = JOB_PAYLOADS[job_type].model_validate(stored)
    assert payload.model_dump(mode="json") == stored
