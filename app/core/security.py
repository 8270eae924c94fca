"""Secret handling: API keys are hashed, webhook secrets encrypted at rest."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken

API_KEY_PREFIX = "jg_"
# Operator keys belong to no tenant; their own prefix sends them to their own table.
OPERATOR_KEY_PREFIX = "jgo_"


def new_api_key(kind: str = API_KEY_PREFIX) -> tuple[str, str]:
    """Return (full key, visible prefix). The prefix finds the row, the hash proves it."""
    public = secrets.token_hex(4)
    key = f"{kind}{public}_{secrets.token_urlsafe(32)}"
    return key, f"{kind}{public}"


def api_key_prefix(key: str, kind: str = API_KEY_PREFIX) -> str | None:
    if not key.startswith(kind):
        return None
    public, sep, rest = key[len(kind) :].partition("_")
    # Keys are made of ASCII letters and digits: anything else (a NUL, say) is no key, and
    # must not reach the database lookup.
    if not sep or len(public) != 8 or not rest or not (public.isascii() and public.isalnum()):
        return None
    return f"{kind}{public}"


def hash_api_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_matches(key: str, key_hash: str) -> bool:
    return hmac.compare_digest(hash_api_key(key), key_hash)


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class SecretBox:
    """Symmetric encryption for secrets that must be read back (webhook secrets, shop keys)."""

    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(b"jobgate-secret-box:" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("secret cannot be decrypted with the configured key") from exc
