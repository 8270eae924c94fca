"""JWT test kit: real keys, a JWKS served over real HTTP, settings that trust both."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from joserfc.jwk import ECKey, KeySet, RSAKey

from app.core.config import REPO_ROOT, DatabaseSettings, Environment, SecuritySettings
from app.queues.config import QueueBackendSettings
from app.settings import Settings
from app.tenants.config import JwtSettings
from tests.support.servers import TEST_SECRET_KEY

ISSUER = "https://id.example.test/"
AUDIENCE = "https://jobgate.example.test"
HS_SECRET = "a-shared-secret-of-at-least-32-bytes!!"
ADMIN_TOKEN = "admin-token-for-tests-0123456789"


class JwksServer:
    """A JWKS endpoint on 127.0.0.1; `keys` can be swapped to simulate rotation."""

    def __init__(self, keys: list[Any]) -> None:
        self.keys = keys
        self.hits = 0
        self.fail = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                if outer.fail:
                    self.send_response(500)
                    self.end_headers()
                    return
                body = json.dumps(KeySet(outer.keys).as_dict(private=False)).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="session")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"})


@pytest.fixture(scope="session")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig"})


@pytest.fixture
def jwks(rsa_key: RSAKey, ec_key: ECKey) -> Iterator[JwksServer]:
    server = JwksServer([rsa_key, ec_key])
    yield server
    server.close()


@pytest.fixture
def settings(database: tuple[str, str | None], jwks: JwksServer) -> Settings:
    url, _ = database
    return Settings(
        environment=Environment.test,
        db=DatabaseSettings(url=url, sqlite_synchronous="NORMAL"),
        queues=QueueBackendSettings(wrangler_config=REPO_ROOT / "wrangler.jsonc"),
        # The key `jobgate` subprocesses of the test get: they read what the test stored.
        security=SecuritySettings(secret_key=TEST_SECRET_KEY, admin_token=ADMIN_TOKEN),
        jwt=JwtSettings(
            issuer=ISSUER,
            audience=AUDIENCE,
            jwks_url=jwks.url,
            hs256_secret=HS_SECRET,
            leeway_seconds=30,
        ),
    )
