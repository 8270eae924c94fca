"""Standard Webhooks verifier: official vectors, the reference library, every refusal."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from app.webhooks.verifiers import (
    WebhookVerificationError,
    decode_secret,
    sign,
    sign_headers,
    verify,
)

# Official vector (standard-webhooks repository, every library's tests).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TS = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
WRONG_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
OTHER = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
# A PrestaShop-shaped vector, signed with the official vectors' secret.
PS_ID = "msg_ps_order_42_created"
PS_BODY = (
    b'{"type":"order.created","timestamp":"2021-02-25T15:02:10Z","data":{"shop_id":1,'
    b'"id_order":42,"reference":"XKBKNABJK","current_state":2}}'
)
PS_SIGNATURE = "v1,mGEA4n8zo7uEJr5hqpeZJGNsnqviHVQVsW7USncg9BU="
SECOND_SECRET = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
PS_SIGNATURE_SECOND = "v1,SwC/qwECU0AZsNVDIhbPcGubijqKhTgzApFQagzTqF4="

KEY = decode_secret(SECRET)


def headers(signature: str = SIGNATURE, msg_id: str = MSG_ID, ts: int = TS) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


class TestKnownAnswers:
    def test_official_vector_signs(self) -> None:
        assert len(KEY) == 24
        assert sign(KEY, MSG_ID, TS, BODY) == SIGNATURE

    def test_official_vector_verifies_with_frozen_clock(self) -> None:
        verified = verify(BODY, headers(), [KEY], now=TS)
        assert verified.message_id == MSG_ID
        assert verified.timestamp == TS
        assert verified.secret_index == 0

    def test_official_wrong_signature_is_refused(self) -> None:
        with pytest.raises(WebhookVerificationError):
            verify(BODY, headers(WRONG_SIGNATURE), [KEY], now=TS)

    def test_official_multi_signature_header_is_accepted(self) -> None:
        header = " ".join([OTHER, OTHER.replace("v1,", "v2,"), SIGNATURE, OTHER])
        assert verify(BODY, headers(header), [KEY], now=TS).message_id == MSG_ID

    def test_derived_prestashop_vectors(self) -> None:
        assert sign(KEY, PS_ID, TS, PS_BODY) == PS_SIGNATURE
        assert sign(decode_secret(SECOND_SECRET), PS_ID, TS, PS_BODY) == PS_SIGNATURE_SECOND

    def test_rotation_any_active_secret_matches(self) -> None:
        second = decode_secret(SECOND_SECRET)
        only_second = headers(PS_SIGNATURE_SECOND, PS_ID)
        assert verify(PS_BODY, only_second, [KEY, second], now=TS).secret_index == 1
        both = headers(f"{PS_SIGNATURE} {PS_SIGNATURE_SECOND}", PS_ID)
        assert verify(PS_BODY, both, [second], now=TS).secret_index == 0
        with pytest.raises(WebhookVerificationError):
            verify(PS_BODY, only_second, [KEY], now=TS)

    def test_secret_with_or_without_prefix_and_padding(self) -> None:
        raw = SECRET.removeprefix("whsec_")
        assert decode_secret(raw) == KEY
        assert decode_secret(SECOND_SECRET.rstrip("=")) == decode_secret(SECOND_SECRET)

    @pytest.mark.parametrize("secret", ["", "whsec_", "whsec_!!!not base64"])
    def test_empty_or_garbage_secret_is_refused(self, secret: str) -> None:
        with pytest.raises(ValueError, match="secret"):
            decode_secret(secret)


class TestReferenceLibrary:
    """Signatures made by the `standardwebhooks` package verify here, and vice versa."""

    def test_library_signature_verifies(self) -> None:
        standardwebhooks = pytest.importorskip("standardwebhooks")
        hook = standardwebhooks.Webhook(SECRET)
        stamp = datetime.fromtimestamp(TS, tz=UTC)
        signature = hook.sign(PS_ID, stamp, PS_BODY.decode())
        assert verify(PS_BODY, headers(signature, PS_ID), [KEY], now=TS + 10).secret_index == 0

    def test_our_signature_verifies_in_library(self) -> None:
        standardwebhooks = pytest.importorskip("standardwebhooks")
        now = int(datetime.now(tz=UTC).timestamp())
        sent = sign_headers([SECRET], "msg_cross_check", now, PS_BODY)
        payload = standardwebhooks.Webhook(SECRET).verify(PS_BODY, sent)
        assert payload["data"]["id_order"] == 42
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(SECRET).verify(PS_BODY + b" ", sent)


class TestRefusals:
    def test_tampered_body(self) -> None:
        with pytest.raises(WebhookVerificationError):
            verify(BODY.replace(b"2432", b"2433"), headers(), [KEY], now=TS)

    def test_wrong_secret(self) -> None:
        with pytest.raises(WebhookVerificationError):
            verify(BODY, headers(), [decode_secret(SECOND_SECRET)], now=TS)

    def test_tampered_id_or_timestamp(self) -> None:
        with pytest.raises(WebhookVerificationError):
            verify(BODY, headers(msg_id="msg_other"), [KEY], now=TS)
        with pytest.raises(WebhookVerificationError):
            verify(BODY, headers(ts=TS + 1), [KEY], now=TS)

    def test_tolerance_is_inclusive_and_both_ways(self) -> None:
        assert verify(BODY, headers(), [KEY], now=TS + 300).message_id == MSG_ID
        assert verify(BODY, headers(), [KEY], now=TS - 300).message_id == MSG_ID
        with pytest.raises(WebhookVerificationError, match="too old"):
            verify(BODY, headers(), [KEY], now=TS + 301)
        with pytest.raises(WebhookVerificationError, match="too new"):
            verify(BODY, headers(), [KEY], now=TS - 301)

    @pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
    def test_missing_header(self, missing: str) -> None:
        sent = headers()
        del sent[missing]
        with pytest.raises(WebhookVerificationError, match="missing"):
            verify(BODY, sent, [KEY], now=TS)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("webhook-timestamp", "1614265330.0"),
            ("webhook-timestamp", "1.6e9"),
            ("webhook-timestamp", "-1614265330"),
            ("webhook-timestamp", "now"),
            ("webhook-id", "msg.with.dots"),
            ("webhook-id", "x" * 300),
            ("webhook-signature", "v1"),
            ("webhook-signature", "v1,"),
            ("webhook-signature", "v1,%%%not-base64%%%"),
            ("webhook-signature", "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            ("webhook-signature", "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        ],
    )
    def test_garbage_header(self, name: str, value: str) -> None:
        sent = headers()
        sent[name] = value
        with pytest.raises(WebhookVerificationError):
            verify(BODY, sent, [KEY], now=TS)

    def test_non_utf8_body_is_just_bytes(self) -> None:
        body = b"\xff\xfe\x00garbage"
        sent = headers(sign(KEY, MSG_ID, TS, body))
        assert verify(body, sent, [KEY], now=TS).message_id == MSG_ID

    def test_truncated_signature_never_matches(self) -> None:
        digest = base64.b64decode(SIGNATURE.removeprefix("v1,"))
        short = "v1," + base64.b64encode(digest[:16]).decode()
        with pytest.raises(WebhookVerificationError):
            verify(BODY, headers(short), [KEY], now=TS)
