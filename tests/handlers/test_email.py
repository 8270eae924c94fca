"""`send-email` against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller

from app.bootstrap import Runtime
from app.consumer.registry import InvalidPayload, PermanentFailure, RetryLater
from app.handlers import service
from app.handlers.email import EmailTemplates
from app.handlers.models import EmailDelivery
from app.settings import Settings
from tests.handlers.conftest import MakeRun
from tests.support.fake_prestashop import free_port

pytestmark = pytest.mark.asyncio


@dataclass
class Mailbox:
    """An aiosmtpd handler that stores messages, or answers a set reply to RCPT."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    # e.g. "451 4.3.0 Try again later" or "550 5.1.1 No such user"
    rcpt_reply: str | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


@pytest.fixture
def smtp_settings(handler_settings: Settings, smtp: tuple[Mailbox, int]) -> Settings:
    return handler_settings.updated(smtp={"port": smtp[1], "timeout_seconds": 10.0})


PAYLOAD = {
    "to": "ana@example.com",
    "subject": "Your order shipped",
    "templateId": "order-shipped",
    "variables": {"orderReference": "XKBKNABJK", "customerName": "Ana <3", "shopName": "Acme"},
    "priority": "high",
}


async def delivery(runtime: Runtime, job_id: str) -> EmailDelivery | None:
    async with runtime.sessionmaker() as session:
        return await session.get(EmailDelivery, job_id)


async def test_sends_the_rendered_template_from_the_tenant_sender(
    smtp: tuple[Mailbox, int],
    smtp_settings: Settings,
    runtime: Runtime,
    tenant_id: str,
    make_run: MakeRun,
) -> None:
    mailbox, _ = smtp
    async with runtime.sessionmaker() as session:
        await service.set_email_sender(
            session, tenant_id=tenant_id, address="shop@acme.test", display_name="Acme Shop"
        )
        await session.commit()
    run = make_run("send-email", PAYLOAD, tenant_id=tenant_id, settings=smtp_settings)
    await run()
    assert len(mailbox.messages) == 1
    message = mailbox.messages[0]
    assert message["From"] == "Acme Shop <shop@acme.test>"
    assert message["To"] == "ana@example.com"
    assert message["Subject"] == "Your order shipped"
    assert message["Message-ID"] == f"<{run.ctx.job_id}@acme.test>"
    assert message["X-Priority"].startswith("1")
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    assert "Your order XKBKNABJK has shipped." in text.get_content()
    assert "Hello Ana <3," in text.get_content()
    assert "Ana &lt;3" in html.get_content()  # autoescaped in HTML only
    assert mailbox.envelopes == [("shop@acme.test", ["ana@example.com"])]
    row = await delivery(runtime, run.ctx.job_id)
    assert row is not None
    assert row.status == "sent"

    # Redelivered after the ack was lost: not sent twice.
    await make_run(
        "send-email", PAYLOAD, tenant_id=tenant_id, job_id=run.ctx.job_id, settings=smtp_settings
    )()
    assert len(mailbox.messages) == 1


async def test_default_sender_and_text_only_template(
    smtp: tuple[Mailbox, int], smtp_settings: Settings, tenant_id: str, make_run: MakeRun
) -> None:
    mailbox, _ = smtp
    payload = {**PAYLOAD, "templateId": "notification", "variables": {"message": "Hi"}}
    await make_run("send-email", payload, tenant_id=tenant_id, settings=smtp_settings)()
    message = mailbox.messages[0]
    assert message["From"] == "jobgate <noreply@localhost>"
    assert not message.is_multipart()
    assert message.get_content().strip() == "Hi"


async def test_a_4xx_reply_is_retried_later(
    smtp: tuple[Mailbox, int],
    smtp_settings: Settings,
    runtime: Runtime,
    tenant_id: str,
    make_run: MakeRun,
) -> None:
    mailbox, _ = smtp
    mailbox.rcpt_reply = "451 4.3.0 Mailbox busy, try again later"
    run = make_run("send-email", PAYLOAD, tenant_id=tenant_id, settings=smtp_settings)
    with pytest.raises(RetryLater) as caught:
        await run()
    assert caught.value.delay_seconds == 60
    assert "451" in caught.value.reason
    assert await delivery(runtime, run.ctx.job_id) is None
    mailbox.rcpt_reply = None
    await run()  # the retry goes through
    assert len(mailbox.messages) == 1


async def test_a_5xx_reply_fails_without_retry_and_is_recorded(
    smtp: tuple[Mailbox, int],
    smtp_settings: Settings,
    runtime: Runtime,
    tenant_id: str,
    make_run: MakeRun,
) -> None:
    mailbox, _ = smtp
    mailbox.rcpt_reply = "550 5.1.1 No such user"
    run = make_run("send-email", PAYLOAD, tenant_id=tenant_id, settings=smtp_settings)
    with pytest.raises(PermanentFailure, match="550"):
        await run()
    row = await delivery(runtime, run.ctx.job_id)
    assert row is not None
    assert row.status == "failed"
    assert row.detail is not None
    assert "550" in row.detail


async def test_an_unreachable_server_is_transient(
    handler_settings: Settings, tenant_id: str, make_run: MakeRun
) -> None:
    closed = handler_settings.updated(smtp={"port": free_port(), "timeout_seconds": 5.0})
    run = make_run("send-email", PAYLOAD, tenant_id=tenant_id, settings=closed)
    with pytest.raises(aiosmtplib.SMTPConnectError) as caught:
        await run()
    assert not isinstance(caught.value, PermanentFailure | RetryLater)


@pytest.mark.parametrize(
    ("template_id", "variables", "reason"),
    [
        ("no-such-template", {}, "unknown email template"),
        ("../../etc/passwd", {}, "invalid templateId"),
        ("notification", {}, "'message' is undefined"),
    ],
)
async def test_template_problems_fail_permanently(
    smtp: tuple[Mailbox, int],
    smtp_settings: Settings,
    tenant_id: str,
    make_run: MakeRun,
    template_id: str,
    variables: dict[str, Any],
    reason: str,
) -> None:
    payload = {**PAYLOAD, "templateId": template_id, "variables": variables}
    with pytest.raises(PermanentFailure, match=reason):
        await make_run("send-email", payload, tenant_id=tenant_id, settings=smtp_settings)()
    assert smtp[0].messages == []


async def test_header_injection_is_refused(
    smtp: tuple[Mailbox, int], smtp_settings: Settings, tenant_id: str, make_run: MakeRun
) -> None:
    payload = {**PAYLOAD, "subject": "Hi\r\nBcc: everyone@example.com"}
    with pytest.raises(PermanentFailure, match="invalid header"):
        await make_run("send-email", payload, tenant_id=tenant_id, settings=smtp_settings)()
    assert smtp[0].messages == []


async def test_an_http_link_reaches_the_href(
    smtp: tuple[Mailbox, int], smtp_settings: Settings, tenant_id: str, make_run: MakeRun
) -> None:
    mailbox, _ = smtp
    url = "https://track.example/p?id=1&x=2"
    payload = {**PAYLOAD, "variables": {**PAYLOAD["variables"], "trackingUrl": url}}
    await make_run("send-email", payload, tenant_id=tenant_id, settings=smtp_settings)()
    html = mailbox.messages[0].get_body(preferencelist=("html",))
    assert html is not None
    assert 'href="https://track.example/p?id=1&amp;x=2"' in html.get_content()


UNSAFE_URLS = ["javascript:alert(document.cookie)", "data:text/html,<script>x</script>"]


@pytest.mark.parametrize("url", UNSAFE_URLS)
async def test_a_stored_job_with_an_unsafe_link_fails_unsent(
    smtp: tuple[Mailbox, int],
    smtp_settings: Settings,
    tenant_id: str,
    make_run: MakeRun,
    url: str,
) -> None:
    """Stored before accept-time checks existed: its payload no longer validates."""
    payload = {**PAYLOAD, "variables": {**PAYLOAD["variables"], "trackingUrl": url}}
    with pytest.raises(InvalidPayload, match="variables.trackingUrl: only absolute http"):
        await make_run("send-email", payload, tenant_id=tenant_id, settings=smtp_settings)()
    assert smtp[0].messages == []


@pytest.mark.parametrize("url", UNSAFE_URLS)
async def test_the_url_filter_renders_an_unsafe_link_inert(url: str) -> None:
    """Defence in depth behind the payload model: `| url` never emits a non-http(s) link."""
    variables = {**PAYLOAD["variables"], "trackingUrl": url}
    text, html = EmailTemplates().render("order-shipped", variables)
    assert html is not None
    assert 'href="#"' in html
    assert "javascript:" not in html + text
    assert "data:" not in html + text


async def test_readme_lists_every_email_template() -> None:
    """README's template table names exactly the templates that exist (`templateId`)."""
    import re

    from app.core.config import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("| `templateId` | variables |", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"^\| `([a-z0-9-]+)`", section, flags=re.MULTILINE))
    shipped = {
        path.name.removesuffix(".txt.j2")
        for path in (REPO_ROOT / "app/handlers/templates/email").glob("*.txt.j2")
    }
    assert listed == shipped
