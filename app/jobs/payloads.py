"""Typed job payloads, one model per job type, as a discriminated union on `type`.

Field names follow the company's TypeScript jobs (camelCase). Options common to every job
(`delay_seconds`, `idempotency_key`, `tenantId`) sit beside the payload fields and are not
part of the stored payload.

Each job type has two models: its payload (`SyncOrdersPayload`: what is stored and what its
handler gets, validated again when a consumer takes the message) and its request
(`SyncOrdersJob`: the payload plus `type` and the options, what the API accepts).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import ConfigDict, EmailStr, Field, field_validator

from app.core.schemas import JsonDatetime, JsonInt, RequestBody
from app.jobs.object_keys import MAX_JOB_KEY_BYTES, InvalidKey, check_key
from app.queues.topology import MAX_DELAY_SECONDS

# Template variables that become links: only absolute http(s) URLs are accepted, so a
# `javascript:` or `data:` URL never reaches an `<a href>` in a recipient's mail client.
URL_SCHEMES = frozenset({"http", "https"})


def is_link_variable(name: str) -> bool:
    lowered = name.lower()
    return lowered.endswith(("url", "uri", "href", "link"))


def is_safe_url(value: object) -> bool:
    """An absolute http(s) URL with a host (no control characters or whitespace)."""
    if not isinstance(value, str) or any(ch.isspace() or ord(ch) < 32 for ch in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in URL_SCHEMES and bool(parts.hostname)


def _unsafe_links(variables: Any, prefix: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(variables, dict):
        for name, value in variables.items():
            path = f"{prefix}{name}"
            if isinstance(value, str) and is_link_variable(str(name)) and not is_safe_url(value):
                found.append(path)
            elif isinstance(value, dict | list):
                found.extend(_unsafe_links(value, f"{path}."))
    elif isinstance(variables, list):
        for index, value in enumerate(variables):
            found.extend(_unsafe_links(value, f"{prefix}{index}."))
    return found


SiteId = Annotated[str, Field(min_length=1, max_length=64, examples=["shop-1"])]
OPTION_FIELDS = frozenset({"type", "delay_seconds", "idempotency_key", "tenantId"})
# Same rules for a payload on its own as inside a request (a stored payload re-validates).
_PAYLOAD_CONFIG = ConfigDict(extra="forbid")


class JobPayload(RequestBody):
    """The stored fields of one job type (base of every payload model)."""

    model_config = _PAYLOAD_CONFIG


class JobOptions(RequestBody):
    model_config = _PAYLOAD_CONFIG

    type: str
    delay_seconds: JsonInt[Annotated[int, Field(ge=0, le=MAX_DELAY_SECONDS)]] | None = Field(
        default=None,
        description="Deliver no sooner than this many seconds from now.",
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Per-job idempotency key (batch submissions; single jobs use the header).",
    )
    tenantId: str | None = Field(
        default=None,
        description="Optional; must equal the authenticated tenant (403 otherwise).",
    )

    def payload(self) -> dict[str, Any]:
        """The stored payload: the job's own fields, JSON-ready."""
        return self.model_dump(mode="json", exclude=set(OPTION_FIELDS))


class SyncOrdersPayload(JobPayload):
    siteId: SiteId
    lastDays: JsonInt[int] = Field(default=40, ge=1, le=3650)
    bulkMode: bool = True


class SyncOrdersJob(SyncOrdersPayload, JobOptions):
    """Sync a shop's recent orders from PrestaShop."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"type": "sync-orders", "siteId": "shop-1"}]}
    )
    type: Literal["sync-orders"]


class SyncProductsPayload(JobPayload):
    siteId: SiteId
    incremental: bool = True
    linkVendors: bool = True


class SyncProductsJob(SyncProductsPayload, JobOptions):
    """Sync a shop's products from PrestaShop."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"type": "sync-products", "siteId": "shop-1"}]}
    )
    type: Literal["sync-products"]


class SyncSingleOrderPayload(JobPayload):
    orderId: JsonInt[int] = Field(ge=1)
    siteId: SiteId | None = None


class SyncSingleOrderJob(SyncSingleOrderPayload, JobOptions):
    """Sync one order, typically after an order webhook."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"type": "sync-single-order", "orderId": 42}]}
    )
    type: Literal["sync-single-order"]


def _any_case(word: str) -> str:
    # JSON Schema patterns have no case-insensitive flag.
    return "".join(f"[{ch.lower()}{ch.upper()}]" if ch.isalpha() else ch for ch in word)


# `EmailStr` refuses these domains (mail to them cannot be delivered); the document says so.
_SPECIAL_USE_DOMAIN = (
    "[.@](" + "|".join(_any_case(name) for name in SPECIAL_USE_DOMAIN_NAMES) + r")\.?$"
)


class SendEmailPayload(JobPayload):
    to: EmailStr = Field(
        description="The recipient; not at a special-use domain ("
        + ", ".join(f".{name}" for name in SPECIAL_USE_DOMAIN_NAMES)
        + ").",
        json_schema_extra={"not": {"pattern": _SPECIAL_USE_DOMAIN}},
    )
    subject: str = Field(min_length=1, max_length=998)
    templateId: str = Field(min_length=1, max_length=100)
    variables: dict[str, Any] = Field(
        default_factory=dict,
        description="Template variables; those named *Url/*Uri/*Href/*Link must be "
        "absolute http(s) URLs.",
    )
    priority: Literal["low", "normal", "high"] = "normal"

    @field_validator("variables")
    @classmethod
    def _links_are_http(cls, value: dict[str, Any]) -> dict[str, Any]:
        unsafe = _unsafe_links(value)
        if unsafe:
            names = ", ".join(f"variables.{name}" for name in unsafe)
            raise ValueError(f"{names}: only absolute http:// or https:// URLs are allowed")
        return value


class SendEmailJob(SendEmailPayload, JobOptions):
    """Render a template and send one email."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "send-email",
                    "to": "ana@example.com",
                    "subject": "Your order shipped",
                    "templateId": "order-shipped",
                    "variables": {"orderId": 42},
                }
            ]
        }
    )
    type: Literal["send-email"]


class ThumbnailOperation(RequestBody):
    model_config = ConfigDict(extra="forbid")

    type: Literal["thumbnail"]
    width: JsonInt[int] = Field(ge=1, le=8192)
    height: JsonInt[int] = Field(ge=1, le=8192)


class AltTextOperation(RequestBody):
    model_config = ConfigDict(extra="forbid")

    type: Literal["alt-text"]


ImageOperation = Annotated[ThumbnailOperation | AltTextOperation, Field(discriminator="type")]


class ProcessImagePayload(JobPayload):
    key: str = Field(
        min_length=1,
        max_length=MAX_JOB_KEY_BYTES,
        description=f"The object key: 1 to {MAX_JOB_KEY_BYTES} bytes of UTF-8, no control "
        "characters, not '.' or '..'.",
        # The validator's rules, in the document (only the byte count is beyond JSON Schema).
        json_schema_extra={"pattern": "^[^\\x00-\\x1f\\x7f]+$", "not": {"enum": [".", ".."]}},
    )
    operations: list[ImageOperation] = Field(min_length=1, max_length=20)

    @field_validator("key")
    @classmethod
    def _storable_key(cls, key: str) -> str:
        # Refused here, not in the handler: it would fail every attempt and end `dead`.
        if len(key.encode()) > MAX_JOB_KEY_BYTES:
            raise ValueError(f"the key is longer than {MAX_JOB_KEY_BYTES} bytes of UTF-8")
        if key in (".", ".."):
            raise ValueError("the key cannot be '.' or '..'")
        try:
            check_key(key)
        except InvalidKey as exc:
            raise ValueError(str(exc)) from None
        return key


class ProcessImageJob(ProcessImagePayload, JobOptions):
    """Make thumbnails and alt text for one stored image."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "process-image",
                    "key": "products/42/main.jpg",
                    "operations": [{"type": "thumbnail", "width": 200, "height": 200}],
                }
            ]
        }
    )
    type: Literal["process-image"]


class AnalyticsEventPayload(JobPayload):
    name: str = Field(min_length=1, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)
    occurredAt: JsonDatetime | None = Field(
        default=None,
        description="When it happened (years 1 to 9999 in UTC); the submission time when omitted.",
    )

    @field_validator("occurredAt")
    @classmethod
    def _representable_in_utc(cls, value: datetime | None) -> datetime | None:
        # 9999-12-31T23:00-05:00 parses, but is past the last datetime once in UTC.
        if value is not None and value.tzinfo is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError("the time is out of range once converted to UTC") from None
        return value


class AnalyticsEventJob(AnalyticsEventPayload, JobOptions):
    """Record one analytics event."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"type": "analytics-event", "name": "order.paid", "properties": {}}]
        }
    )
    type: Literal["analytics-event"]


class AgentTaskPayload(JobPayload):
    agentType: str = Field(min_length=1, max_length=100)
    dryRun: bool = False


class AgentTaskJob(AgentTaskPayload, JobOptions):
    """Run an AI agent for the tenant."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"type": "agent-task", "agentType": "content-management"}]}
    )
    type: Literal["agent-task"]


JobRequest = Annotated[
    SyncOrdersJob
    | SyncProductsJob
    | SyncSingleOrderJob
    | SendEmailJob
    | ProcessImageJob
    | AnalyticsEventJob
    | AgentTaskJob,
    Field(discriminator="type"),
]

JOB_MODELS: dict[str, type[JobOptions]] = {
    "sync-orders": SyncOrdersJob,
    "sync-products": SyncProductsJob,
    "sync-single-order": SyncSingleOrderJob,
    "send-email": SendEmailJob,
    "process-image": ProcessImageJob,
    "analytics-event": AnalyticsEventJob,
    "agent-task": AgentTaskJob,
}
JOB_TYPES = frozenset(JOB_MODELS)
# The job types as a type: a filter declared with it is an enum in the API document, and a
# bad value is FastAPI's 422 naming the parameter.
JobTypeName = Literal[
    "sync-orders",
    "sync-products",
    "sync-single-order",
    "send-email",
    "process-image",
    "analytics-event",
    "agent-task",
]
# One request-body example per job type (its model's first), for the API document.
JOB_EXAMPLES: dict[str, dict[str, Any]] = {
    name: {
        "summary": (model.__doc__ or name).strip().splitlines()[0],
        "value": model.model_json_schema()["examples"][0],
    }
    for name, model in JOB_MODELS.items()
}
# What a handler of each job type is bound to (its stored payload's model).
JOB_PAYLOADS: dict[str, type[JobPayload]] = {
    "sync-orders": SyncOrdersPayload,
    "sync-products": SyncProductsPayload,
    "sync-single-order": SyncSingleOrderPayload,
    "send-email": SendEmailPayload,
    "process-image": ProcessImagePayload,
    "analytics-event": AnalyticsEventPayload,
    "agent-task": AgentTaskPayload,
}
