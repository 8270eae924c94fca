"""Dashboard sessions: an encrypted cookie holding the credential pasted at login.

The cookie is a Fernet token (AES-CBC + HMAC, with its issue time) under a key derived from
`JOBGATE_SECRET_KEY` for this purpose only, so it can be neither read nor forged without the
secret key, and it expires `SESSION_SECONDS` after login. It carries the credential itself,
encrypted, so every request authenticates again: a revoked key ends its sessions at once.

CSRF: each session has a random nonce; forms carry HMAC(nonce) and a state-changing request
must send it back. The login form, before any session exists, uses a short-lived cookie
nonce the same way (double submit), so a third-party page cannot log a browser in either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken

SESSION_COOKIE = "jobgate_session"
LOGIN_COOKIE = "jobgate_login"
SESSION_SECONDS = 8 * 3600
LOGIN_FORM_SECONDS = 3600
# Cookies are scoped to the dashboard's own paths.
COOKIE_PATH = "/dashboard"


@dataclass(frozen=True, slots=True)
class DashboardSession:
    credential: str
    nonce: str


def _derive(secret_key: str, purpose: bytes) -> bytes:
    return hashlib.sha256(b"jobgate-dashboard-" + purpose + b":" + secret_key.encode()).digest()


class SessionCodec:
    """Seals and opens session cookies; makes and checks CSRF tokens."""

    def __init__(self, secret_key: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(secret_key, b"session")))
        self._csrf_key = _derive(secret_key, b"csrf")

    def seal(self, credential: str, *, now_s: int) -> str:
        body = json.dumps({"c": credential, "n": secrets.token_urlsafe(16)}).encode()
        return self._fernet.encrypt_at_time(body, now_s).decode()

    def open(self, cookie: str, *, now_s: int) -> DashboardSession | None:
        """The session, or None when the cookie is forged, tampered with or expired."""
        try:
            body = self._fernet.decrypt_at_time(cookie.encode(), SESSION_SECONDS, now_s)
            data = json.loads(body)
            return DashboardSession(credential=str(data["c"]), nonce=str(data["n"]))
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None

    def new_login_nonce(self, *, now_s: int) -> str:
        """A signed, timestamped nonce for the login form's cookie."""
        nonce = f"{now_s}.{secrets.token_urlsafe(16)}"
        return f"{nonce}.{self._mac(b'login:' + nonce.encode())}"

    def login_nonce_valid(self, value: str, *, now_s: int) -> bool:
        nonce, _, mac = value.rpartition(".")
        issued, _, _ = nonce.partition(".")
        if not value.isascii() or not hmac.compare_digest(
            mac, self._mac(b"login:" + nonce.encode())
        ):
            return False
        return issued.isdigit() and 0 <= now_s - int(issued) <= LOGIN_FORM_SECONDS

    def csrf_token(self, nonce: str) -> str:
        return self._mac(b"csrf:" + nonce.encode())

    def csrf_valid(self, nonce: str, token: str | None) -> bool:
        if token is None or not token.isascii():
            return False
        return hmac.compare_digest(token, self.csrf_token(nonce))

    def _mac(self, message: bytes) -> str:
        return hmac.new(self._csrf_key, message, hashlib.sha256).hexdigest()
