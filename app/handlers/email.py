"""`send-email`: render a Jinja2 template and send it over SMTP (aiosmtplib).

Templates live in `templates/email/`: `<templateId>.txt.j2` (required) and
`<templateId>.html.j2` (optional alternative part). Printing an undefined variable is an
error (the job fails rather than mailing a half-empty template); `{% if x %}` may test one.

Outcomes: a 4xx reply is transient (`RetryLater` after `smtp_retry_delay_seconds`, as the
company's consumer does); connection failures and timeouts are retried with backoff; a 5xx
reply, an unknown template or a missing variable fail at once. Each outcome is recorded in
`email_delivery`; a job whose row says `sent` is not sent again when redelivered, and the
Message-ID is derived from the job id so a receiver can spot the rare duplicate (a crash
between the SMTP `250` and the commit).
"""

from __future__ import annotations

import logging
import re
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr
from pathlib import Path
from typing import Any

import aiosmtplib
import jinja2

from app.consumer.registry import JobContext, PermanentFailure, RetryLater, handler
from app.core.clock import to_datetime
from app.handlers import service
from app.handlers.config import SmtpSettings
from app.handlers.models import EmailDelivery
from app.jobs.payloads import SendEmailPayload, is_safe_url

logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates" / "email"
TEMPLATE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
PRIORITY_HEADER = {"high": "1 (Highest)", "normal": "3 (Normal)", "low": "5 (Lowest)"}


class _Undefined(jinja2.StrictUndefined):
    """Printing or using a missing variable is an error; `{% if optional %}` is allowed."""

    __bool__ = jinja2.Undefined.__bool__  # type: ignore[assignment]


class EmailTemplates:
    """The text and HTML template environments (autoescaping only for HTML)."""

    def __init__(self, directory: Path = TEMPLATES_DIR) -> None:
        loader = jinja2.FileSystemLoader(directory)
        common: dict[str, Any] = {"loader": loader, "undefined": _Undefined}
        self._text = jinja2.Environment(autoescape=False, keep_trailing_newline=True, **common)
        self._html = jinja2.Environment(autoescape=True, **common)
        # `{{ x | url }}`: an http(s) URL, or an inert "#" (the payload model checks only
        # variables named like links).
        for env in (self._text, self._html):
            env.filters["url"] = safe_url

    def render(self, template_id: str, variables: dict[str, Any]) -> tuple[str, str | None]:
        """(text, html or None); raises PermanentFailure for unknown ids or variables."""
        if not TEMPLATE_ID.match(template_id):
            raise PermanentFailure(f"invalid templateId {template_id!r}")
        try:
            text = self._text.get_template(f"{template_id}.txt.j2").render(variables)
        except jinja2.TemplateNotFound as exc:
            raise PermanentFailure(f"unknown email template {template_id!r}") from exc
        except jinja2.UndefinedError as exc:
            raise PermanentFailure(f"template {template_id!r}: {exc.message}") from exc
        try:
            html = self._html.get_template(f"{template_id}.html.j2").render(variables)
        except jinja2.TemplateNotFound:
            html = None
        except jinja2.UndefinedError as exc:
            raise PermanentFailure(f"template {template_id!r}: {exc.message}") from exc
        return text, html


def safe_url(value: Any) -> str:
    """The value if it is an absolute http(s) URL, else "#" (a link that goes nowhere)."""
    return str(value) if is_safe_url(value) else "#"


def _templates(ctx: JobContext[SendEmailPayload]) -> EmailTemplates:
    templates = ctx.resources.state.get(__name__)
    if not isinstance(templates, EmailTemplates):
        templates = ctx.resources.state[__name__] = EmailTemplates()
    return templates


def build_message(
    ctx: JobContext[SendEmailPayload], *, sender: str, text: str, html: str | None
) -> EmailMessage:
    payload = ctx.payload
    _, sender_address = parseaddr(sender)
    domain = sender_address.rpartition("@")[2] or "jobgate.invalid"
    message = EmailMessage()
    try:
        message["From"] = sender
        message["To"] = payload.to
        message["Subject"] = payload.subject
    except ValueError as exc:  # CR/LF in a header: refused, never retried
        raise PermanentFailure(f"invalid header: {exc}") from exc
    # Stable across retries, so a duplicate after a crash is recognisable downstream.
    message["Message-ID"] = f"<{ctx.job_id}@{domain}>"
    message["Date"] = formatdate(ctx.resources.clock.now_ms() / 1000, localtime=False)
    message["X-Priority"] = PRIORITY_HEADER[payload.priority]
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def smtp_options(settings: SmtpSettings) -> dict[str, Any]:
    return {
        "hostname": settings.host,
        "port": settings.port,
        "username": settings.username,
        "password": settings.password,
        "use_tls": settings.tls == "tls",
        "start_tls": settings.tls == "starttls",
        "timeout": settings.timeout_seconds,
    }


async def _record(
    ctx: JobContext[SendEmailPayload], message: EmailMessage, status: str, detail: str | None = None
) -> None:
    async with ctx.resources.sessionmaker() as session:
        await service.upsert(
            session,
            EmailDelivery,
            [
                {
                    "job_id": ctx.job_id,
                    "tenant_id": ctx.tenant_id,
                    "recipient": ctx.payload.to[:320],
                    "template_id": ctx.payload.templateId[:100],
                    "message_id": str(message["Message-ID"]),
                    "status": status,
                    "detail": detail,
                    "updated_at": to_datetime(ctx.resources.clock.now_ms()),
                }
            ],
            keys=["job_id"],
        )
        await session.commit()


def _reply_code(exc: aiosmtplib.SMTPException) -> int | None:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        # Any temporary refusal makes the whole send worth retrying.
        return min(codes, key=lambda c: (c >= 500, c)) if codes else None
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code
    return None


@handler("send-email", SendEmailPayload, timeout_seconds=120)
async def send_email(ctx: JobContext[SendEmailPayload]) -> None:
    """Render `templateId` with `variables` and send it from the tenant's sender."""
    resources = ctx.resources
    async with resources.sessionmaker() as session:
        done = await session.get(EmailDelivery, ctx.job_id)
        sender_row = await service.get_email_sender(session, tenant_id=ctx.tenant_id)
    if done is not None and done.status == "sent":
        logger.info("email job %s was sent already; not sending again", ctx.job_id)
        return
    sender = resources.settings.smtp.default_sender
    if sender_row is not None:
        sender = formataddr((sender_row.display_name or "", sender_row.address))
    text, html = _templates(ctx).render(ctx.payload.templateId, ctx.payload.variables)
    message = build_message(ctx, sender=sender, text=text, html=html)
    try:
        await aiosmtplib.send(message, **smtp_options(resources.settings.smtp))
    except aiosmtplib.SMTPException as exc:
        code = _reply_code(exc)
        if code is not None and 400 <= code < 500:
            delay = resources.settings.smtp.retry_delay_seconds
            raise RetryLater(delay, f"SMTP {code}: {exc}") from exc
        if code is not None and code >= 500:
            await _record(ctx, message, "failed", f"SMTP {code}: {exc}")
            raise PermanentFailure(f"SMTP {code}: {exc}") from exc
        raise  # connection, timeout, protocol: transient
    await _record(ctx, message, "sent")
    await ctx.progress(100, "sent")
