"""Schemathesis against a live emulator with Cloudflare's own Queues schema
(`cloudflare_queues.openapi.json`, sources in its `x-source`): every check but the one that
expects a 405 Cloudflare never documents, bounded examples, and in the end no server error
and no answer that breaks the schema.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.emulator.conftest import ACCOUNT, TOKEN, Emulator
from tests.support.schemathesis import assert_schemathesis_clean

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
SCHEMA = HERE / "cloudflare_queues.openapi.json"
CONFIG = HERE / "schemathesis.toml"
MAX_EXAMPLES = "50"
RUN_TIMEOUT_S = 420


def _fixtures(emulator: Emulator) -> dict[str, str]:
    """A queue with an http_pull consumer and a few messages, for the run to work on."""
    with httpx.Client(
        base_url=emulator.queues_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as api:
        queue = api.post("", json={"queue_name": "schemathesis"}).json()["result"]
        consumer = api.post(
            f"/{queue['queue_id']}/consumers",
            json={"type": "http_pull", "dead_letter_queue": "schemathesis-dlq"},
        ).json()["result"]
        batch = {"messages": [{"body": {"n": n}} for n in range(20)]}
        assert api.post(f"/{queue['queue_id']}/messages/batch", json=batch).status_code == 200
    return {
        "EMULATOR_ACCOUNT_ID": ACCOUNT,
        "EMULATOR_QUEUE_ID": queue["queue_id"],
        "EMULATOR_CONSUMER_ID": consumer["consumer_id"],
    }


# Deletes last: a run that deleted the queue first would meet only 404s afterwards.
SELECTIONS = {
    "everything-but-deletes": ("--exclude-method", "DELETE"),
    "deletes": ("--include-method", "DELETE"),
}


@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_emulator_conforms_to_cloudflares_queues_schema(emulator: Emulator, selection: str) -> None:
    assert_schemathesis_clean(
        CONFIG,
        str(SCHEMA),
        "--url",
        emulator.api_url,
        *SELECTIONS[selection],
        token=TOKEN,
        max_examples=MAX_EXAMPLES,
        timeout_s=RUN_TIMEOUT_S,
        extra_env=_fixtures(emulator),
    )
    # The emulator logged no unexpected exception either (a 500 it answered on purpose
    # would have failed the run above).
    assert "unhandled error" not in emulator.process.output()
