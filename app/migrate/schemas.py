"""The mapping file of `jobgate migrate bull`: which Bull queue (and job name) is which
jobgate job type, and how a Bull job's data becomes that type's payload.

```yaml
queues:
  email:                        # a Bull queue name
    type: send-email            # every job of the queue...
    rename: {recipient: to}     # ...with its data's `recipient` field named `to`
  prestashop:
    type_field: type            # the type is the data's own `type` field (then dropped)
    drop: [tenantId]            # fields jobgate does not take
  media:
    names:                      # by Bull job name; `type` (if any) for the other names
      thumbnail: process-image
select: {tenantId: acme}        # only jobs whose data has this value (or one of a list)
```

JSON with the same shape works too (YAML reads JSON).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.jobs.payloads import JOB_TYPES


def _known_type(value: str) -> str:
    if value not in JOB_TYPES:
        raise ValueError(f"unknown job type {value!r}: one of {', '.join(sorted(JOB_TYPES))}")
    return value


class QueueMapping(BaseModel):
    """How the jobs of one Bull queue become jobgate jobs."""

    model_config = ConfigDict(extra="forbid")

    type: str | None = Field(default=None, description="The job type of every job.")
    names: dict[str, str] = Field(
        default_factory=dict, description="Bull job name -> job type (before `type`)."
    )
    type_field: str | None = Field(
        default=None,
        description="A data field holding the job type (before `names`); removed from the payload.",
    )
    rename: dict[str, str] = Field(default_factory=dict, description="Data field -> payload field.")
    drop: list[str] = Field(default_factory=list, description="Data fields left out.")

    @field_validator("type")
    @classmethod
    def _type(cls, value: str | None) -> str | None:
        return None if value is None else _known_type(value)

    @field_validator("names")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for job_type in value.values():
            _known_type(job_type)
        return value


class BullMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queues: dict[str, QueueMapping] = Field(min_length=1)
    select: dict[str, Any] = Field(
        default_factory=dict,
        description="Only jobs whose data has these field values (a value or a list of "
        "accepted values; null matches a missing field), e.g. one Bull tenant's.",
    )
    drop: list[str] = Field(default_factory=list, description="Data fields left out, every queue.")
