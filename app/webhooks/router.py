"""Webhook ingress: PrestaShop (Standard Webhooks, or the opt-in unsigned route) and R2.

Order of checks on the signed route, cheapest first: failed-auth throttle of the client address
(app/admission/auth_failures.py) → declared body size → headers well formed and timestamp
within the tolerance (no body read yet) → the tenant's active secrets (an unknown tenant is
checked against a dummy key and answers the same 401 as a bad signature) → body, read up to
the cap → signature over the raw bytes → payload → replay → jobs. Every
refusal is counted in `jobgate_webhook_refusals_total`; logs never carry secrets,
signatures or bodies.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.admission.deps import Gate, WebhooksGate
from app.core.clock import Clock
from app.core.deps import BoxDep, ClockDep, SessionDep, component
from app.core.errors import (
    AppError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
    problem_responses,
    validation_error,
)
from app.core.openapi import Tag
from app.core.security import SecretBox
from app.core.storable import find_unstorable, find_unstorable_json, unstorable_error
from app.jobs.deps import SubmitterDep
from app.jobs.submitter import JobSubmitter
from app.tenants.deps import JobsWriter
from app.webhooks import prestashop, r2
from app.webhooks import service as webhooks_service
from app.webhooks.config import WebhookSettings
from app.webhooks.schemas import (
    PrestaShopEvent,
    PrestaShopPing,
    R2Accepted,
    R2Notification,
    R2NotificationBatch,
    UnsignedPrestaShopEvent,
    WebhookAccepted,
    WebhookPing,
)
from app.webhooks.verifiers import VerifiedHeaders, WebhookVerificationError, check_fresh, verify

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/webhooks", tags=[Tag.webhooks])

TenantId = Annotated[str, Path(max_length=64, description="The tenant the shop belongs to.")]
SIGNATURE_SCHEME = 'Webhook-Signature realm="jobgate"'
SIGNED_SOURCE = "prestashop"
UNSIGNED_SOURCE = "prestashop-unsigned"
R2_SOURCE = "r2"

_SIGNED_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PrestaShopEvent"}}
        },
    },
    "parameters": [
        {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    ],
}


def _refuse(source: str, reason: str, error: AppError) -> AppError:
    webhooks_service.refusals_total.labels(source=source, reason=reason).inc()
    logger.info("webhook refused: source=%s reason=%s", source, reason)
    return error


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"webhook bodies are limited to {limit} bytes")


def _check_declared_size(request: Request, limit: int, source: str) -> None:
    """413 at once for a declared Content-Length over the cap (nothing read yet)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _refuse(source, "too_large", _too_large(limit))


async def _read_body(request: Request, limit: int, source: str) -> bytes:
    """The raw bytes (signatures are over them), refused early when over the cap."""
    _check_declared_size(request, limit, source)
    too_large = _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _refuse(source, "too_large", too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def _malformed(source: str, exc: ValidationError | ValueError) -> AppError:
    if isinstance(exc, ValidationError):
        error = validation_error(exc.errors())
        error.status = 422  # a webhook payload that is not JSON is as malformed as a bad one
        return _refuse(source, "malformed", error)
    return _refuse(source, "malformed", ValidationFailed(str(exc)))


def _check_storable(raw: bytes, source: str) -> None:
    """These routes parse their bodies themselves, so they check strings themselves too."""
    errors = find_unstorable_json(raw, ["body"])
    if errors:
        raise _refuse(source, "malformed", unstorable_error(errors))


@dataclass(frozen=True, slots=True)
class Ingress:
    """What the webhook routes use of the process."""

    settings: WebhookSettings
    clock: Clock
    box: SecretBox
    submitter: JobSubmitter


WebhookSettingsDep = Annotated[WebhookSettings, Depends(component("webhook_settings"))]


async def get_ingress(
    settings: WebhookSettingsDep, clock: ClockDep, box: BoxDep, submitter: SubmitterDep
) -> Ingress:
    return Ingress(settings=settings, clock=clock, box=box, submitter=submitter)


IngressDep = Annotated[Ingress, Depends(get_ingress)]


async def _accept_prestashop(
    session: AsyncSession,
    ingress: Ingress,
    gate: Gate,
    *,
    source: str,
    tenant_id: str,
    external_id: str,
    event: prestashop.ShopEvent,
    shop_url: str | None,
    now_s: int,
) -> webhooks_service.Recorded:
    """A verified PrestaShop event: admit its jobs, plan them, store event and jobs, commit."""
    breaker_delay = await gate.admit_webhook(tenant_id, prestashop.planned_types(event))
    site_id = await prestashop.resolve_site_id(
        session, tenant_id=tenant_id, shop_id=event.shop_id, shop_url=shop_url
    )
    recorded = await webhooks_service.record_event(
        session,
        submitter=ingress.submitter,
        source=source,
        tenant_id=tenant_id,
        external_id=external_id,
        event_type=event.type,
        requests=prestashop.plan_jobs(
            event,
            site_id=site_id,
            now_s=now_s,
            debounce_seconds=ingress.settings.product_debounce_seconds,
            breaker_delay=breaker_delay,
        ),
    )
    await session.commit()
    return recorded


def _accepted(recorded: webhooks_service.Recorded, response: Response) -> WebhookAccepted:
    if recorded.replay:
        response.status_code = status.HTTP_200_OK
    return WebhookAccepted(jobs=recorded.job_ids, replay=recorded.replay)


async def _verified_body(
    request: Request, session: AsyncSession, ingress: Ingress, tenant_id: str
) -> tuple[bytes, VerifiedHeaders, int]:
    """The raw body of a delivery signed by one of the tenant's secrets (and the time it was
    checked at, in seconds), else 401/413."""
    settings = ingress.settings
    limit = settings.max_body_bytes
    # Everything that needs neither the body nor the database comes first, so a flood of
    # unsigned or stale deliveries is refused before a byte of its body is read or hashed.
    _check_declared_size(request, limit, SIGNED_SOURCE)
    now_s = ingress.clock.now_ms() // 1000
    tolerance = settings.tolerance_seconds
    refused = Unauthorized("missing, invalid or stale webhook signature", scheme=SIGNATURE_SCHEME)
    try:
        check_fresh(request.headers, now=now_s, tolerance=tolerance)
    except WebhookVerificationError as exc:
        reason = "stale" if "timestamp too" in str(exc) else "headers"
        raise _refuse(SIGNED_SOURCE, reason, refused) from None
    keys, known = await webhooks_service.signing_keys(session, tenant_id=tenant_id, box=ingress.box)
    raw = await _read_body(request, limit, SIGNED_SOURCE)
    try:
        verified = verify(raw, request.headers, keys, now=now_s, tolerance=tolerance)
    except WebhookVerificationError:
        # An unknown tenant was checked against a dummy key: same work, same answer, so the
        # route does not tell which tenants exist.
        raise _refuse(SIGNED_SOURCE, "signature" if known else "unknown_tenant", refused) from None
    return raw, verified, now_s


@router.post(
    "/prestashop/{tenant_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WebhookAccepted,
    openapi_extra=_SIGNED_BODY_DOC,
    responses={
        200: {"model": WebhookAccepted, "description": "A replay: the first delivery's jobs."},
        **problem_responses(401, 413, 422, 429, 503),
    },
)
async def receive_prestashop_event(
    tenant_id: TenantId,
    request: Request,
    response: Response,
    session: SessionDep,
    ingress: IngressDep,
    gate: WebhooksGate,
) -> WebhookAccepted:
    """Receive a PrestaShop event signed with Standard Webhooks; 202 once its jobs are stored."""
    raw, verified, now_s = await _verified_body(request, session, ingress, tenant_id)
    _check_storable(raw, SIGNED_SOURCE)
    try:
        event = prestashop.from_signed(PrestaShopEvent.model_validate_json(raw))
    except (ValidationError, ValueError) as exc:
        raise _malformed(SIGNED_SOURCE, exc) from None
    recorded = await _accept_prestashop(
        session,
        ingress,
        gate,
        source=SIGNED_SOURCE,
        tenant_id=tenant_id,
        external_id=verified.message_id,
        event=event,
        shop_url=event.shop_url,
        now_s=now_s,
    )
    logger.info(
        "webhook %s: tenant=%s type=%s id=%s secret=%d jobs=%d",
        "replay" if recorded.replay else "accepted",
        tenant_id,
        event.type,
        verified.message_id,
        verified.secret_index,
        len(recorded.job_ids),
    )
    return _accepted(recorded, response)


@router.post(
    "/prestashop/{tenant_id}/ping",
    response_model=WebhookPing,
    openapi_extra={
        **_SIGNED_BODY_DOC,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PrestaShopPing"}}
            },
        },
    },
    responses=problem_responses(401, 413, 422),
)
async def ping_prestashop(
    tenant_id: TenantId, request: Request, session: SessionDep, ingress: IngressDep
) -> WebhookPing:
    """Check a shop's signature and site id without creating a job (the module's "test" button)."""
    raw, _, _ = await _verified_body(request, session, ingress, tenant_id)
    try:
        ping = PrestaShopPing.model_validate_json(raw)
    except ValidationError as exc:
        raise _malformed(SIGNED_SOURCE, exc) from None
    site_id = await prestashop.resolve_site_id(
        session, tenant_id=tenant_id, shop_id=ping.shop.id, shop_url=ping.shop.url
    )
    return WebhookPing(tenant_id=tenant_id, site_id=site_id)


@router.post(
    "/prestashop/{tenant_id}/unsigned/{token}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WebhookAccepted,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/UnsignedPrestaShopEvent"}
                }
            },
        }
    },
    responses={
        200: {"model": WebhookAccepted, "description": "A repeat of an identical body."},
        **problem_responses(401, 404, 413, 422, 503),
    },
)
async def receive_unsigned_prestashop_event(
    tenant_id: TenantId,
    token: Annotated[str, Path(max_length=128, description="The tenant's unsigned-route token.")],
    request: Request,
    response: Response,
    session: SessionDep,
    ingress: IngressDep,
    gate: WebhooksGate,
) -> WebhookAccepted:
    """WEAKER, opt-in: a `ps_webhooks`-style unsigned `{action, entity, data}` payload.

    Only the secret token in the URL authenticates it: no signature, no timestamp, so a
    captured request can be replayed and the body is not integrity-protected. Identical
    bodies are deduplicated. Prefer the signed route.
    """
    settings = ingress.settings
    # The token is checked before the body is read: a wrong one costs no body.
    _check_declared_size(request, settings.max_body_bytes, UNSIGNED_SOURCE)
    matches = await webhooks_service.check_unsigned_token(session, tenant_id=tenant_id, token=token)
    if matches is None:
        raise _refuse(
            UNSIGNED_SOURCE, "not_enabled", NotFound("no unsigned webhook route for this tenant")
        )
    if not matches:
        raise _refuse(UNSIGNED_SOURCE, "token", Unauthorized("invalid webhook token"))
    raw = await _read_body(request, settings.max_body_bytes, UNSIGNED_SOURCE)
    _check_storable(raw, UNSIGNED_SOURCE)
    try:
        event = prestashop.from_unsigned(UnsignedPrestaShopEvent.model_validate_json(raw))
    except (ValidationError, ValueError) as exc:
        raise _malformed(UNSIGNED_SOURCE, exc) from None
    if event is None:
        webhooks_service.events_total.labels(source=UNSIGNED_SOURCE, outcome="ignored").inc()
        return WebhookAccepted(jobs=[])
    recorded = await _accept_prestashop(
        session,
        ingress,
        gate,
        source=UNSIGNED_SOURCE,
        tenant_id=tenant_id,
        external_id="sha256:" + hashlib.sha256(raw).hexdigest(),
        event=event,
        shop_url=None,
        now_s=ingress.clock.now_ms() // 1000,
    )
    return _accepted(recorded, response)


@router.post(
    "/r2",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=R2Accepted,
    response_model_exclude_none=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/R2Notification"},
                            {"$ref": "#/components/schemas/R2NotificationBatch"},
                        ]
                    }
                }
            },
        }
    },
    responses={
        200: {"model": R2Accepted, "description": "Every notification was seen before."},
        **problem_responses(401, 403, 413, 422, 503),
    },
)
async def receive_r2_notifications(
    principal: JobsWriter,
    request: Request,
    response: Response,
    session: SessionDep,
    ingress: IngressDep,
    gate: WebhooksGate,
) -> R2Accepted:
    """R2 event notifications (one, or `{messages: [...]}`) → `process-image` jobs.

    Objects created under a rule's bucket and prefix make one job per object version
    (bucket + key + eTag); redeliveries answer with the same job; other events are ignored.
    Ignored notifications are counted in `ignored`, those no rule matches are listed in
    `unmatched`, and `hint` says what to check (still a 202: the delivery was received).
    """
    raw = await _read_body(request, ingress.settings.max_body_bytes, R2_SOURCE)
    try:
        parsed = json.loads(raw)
        storable_errors = find_unstorable(parsed, ["body"])
        if storable_errors:
            raise _refuse(R2_SOURCE, "malformed", unstorable_error(storable_errors))
        if isinstance(parsed, dict) and "messages" in parsed:
            notifications = R2NotificationBatch.model_validate(parsed).messages
        else:
            notifications = [R2Notification.model_validate(parsed)]
    except (ValidationError, ValueError) as exc:
        raise _malformed(R2_SOURCE, exc) from None
    rules = await r2.list_rules(session, tenant_id=principal.tenant_id)
    try:
        planned = [
            (notification, r2.plan_job(rule, notification) if rule is not None else None)
            for notification in notifications
            for rule in [r2.match_rule(rules, notification)]
        ]
    except ValidationError as exc:  # e.g. a key too long to process
        raise _malformed(R2_SOURCE, exc) from None
    # Charged per job the delivery makes, not per request: objects seen before make none.
    identities = {r2.object_identity(n) for n, job in planned if job is not None}
    known = await webhooks_service.known_events(
        session, source=R2_SOURCE, tenant_id=principal.tenant_id, external_ids=identities
    )
    job_count = len(identities - known)
    breaker_delay = await gate.admit_webhook(principal.tenant_id, ["process-image"] * job_count)
    job_ids: list[str] = []
    unmatched: list[str] = []
    processed = replays = ignored = 0
    for notification, job in planned:
        if job is not None and breaker_delay:
            job = job.model_copy(update={"delay_seconds": breaker_delay})
        if job is None:
            webhooks_service.events_total.labels(source=R2_SOURCE, outcome="ignored").inc()
            ignored += 1
            if r2.match_rule(rules, notification) is None:
                unmatched.append(f"{notification.bucket}/{notification.object.key}")
            continue
        identity = r2.object_identity(notification)
        recorded = await webhooks_service.record_event(
            session,
            submitter=ingress.submitter,
            source=R2_SOURCE,
            tenant_id=principal.tenant_id,
            external_id=identity,
            event_type=notification.action,
            requests=[(job, identity)],
        )
        processed += 1
        replays += recorded.replay
        job_ids.extend(i for i in recorded.job_ids if i not in job_ids)
    await session.commit()
    replay = processed > 0 and replays == processed
    if replay:
        response.status_code = status.HTTP_200_OK
    return R2Accepted(
        jobs=job_ids,
        replay=replay,
        ignored=ignored,
        unmatched=unmatched or None,
        hint=r2.ignored_hint(ignored=ignored, unmatched=len(unmatched), rules=len(rules)),
    )
