"""The sync plan as data (the topology against an account, without an account), and the
SDK's errors as one-line queue errors."""

from __future__ import annotations

import cloudflare
import httpx
import pytest

from app.core.config import REPO_ROOT
from app.jobs.payloads import JOB_TYPES
from app.queues.cloudflare import CloudflareApiError
from app.queues.errors import QueueAuthFailed
from app.queues.provisioning import (
    Account,
    AccountConsumer,
    AccountQueue,
    Action,
    FieldChange,
    api_errors,
    plan,
    wanted_state,
)
from app.queues.topology import Topology, load_topology


def topology() -> Topology:
    return load_topology(REPO_ROOT / "wrangler.jsonc", job_types=JOB_TYPES)


def in_sync_account(topo: Topology) -> dict[str, AccountQueue]:
    """The account exactly as the topology wants it, numbers as the SDK gives them (float)."""
    wanted = wanted_state(topo)
    queues = {}
    for index, (name, settings) in enumerate(wanted.queues.items()):
        consumers: tuple[AccountConsumer, ...] = ()
        if name in wanted.consumers:
            want = wanted.consumers[name]
            consumers = (
                AccountConsumer(
                    id=f"c{index}",
                    type="http_pull",
                    script_name=None,
                    dead_letter_queue=want.dead_letter_queue,
                    settings={k: float(v) for k, v in want.settings.items()},
                ),
            )
        queues[name] = AccountQueue(f"q{index}", name, dict(settings), consumers)
    return queues


class TestPlan:
    def test_an_empty_account_gets_every_queue_then_every_pull_consumer(self) -> None:
        todo = plan(topology(), Account(queues={}))
        assert todo.summary() == {
            "create": 15,
            "update": 0,
            "replace": 0,
            "extra": 0,
            "unchanged": 0,
        }
        kinds = [c.kind for c in todo.changes]
        assert kinds == ["queue"] * 10 + ["consumer"] * 5  # queues (DLQs) before consumers
        prestashop = next(c for c in todo.changes if c.kind == "consumer")
        assert prestashop.queue == "prestashop-sync"
        assert {f.name: f.new for f in prestashop.fields} == {
            "dead_letter_queue": "prestashop-sync-dlq",
            "batch_size": 10,
            "max_retries": 3,
            "retry_delay": 0,  # "exponential": the consumer sends each retry's delay
            "visibility_timeout_ms": 30_000,
        }
        assert not todo.in_sync

    def test_an_account_in_sync_is_unchanged(self) -> None:
        topo = topology()
        todo = plan(topo, Account(queues=in_sync_account(topo)))
        assert {c.action for c in todo.changes} == {Action.unchanged}
        assert todo.in_sync

    def test_settings_left_out_of_an_answer_count_as_cloudflare_defaults(self) -> None:
        topo = topology()
        queues = in_sync_account(topo)
        dlq = queues["prestashop-sync-dlq"]
        queues[dlq.name] = AccountQueue(dlq.id, dlq.name, {})  # no settings in the answer
        agent = queues["ai-agent-tasks"]
        (consumer,) = agent.consumers
        # ai-agent-tasks wants 10 (wrangler's default batch); Cloudflare's pull default is 5.
        sparse = {k: v for k, v in consumer.settings.items() if k != "batch_size"}
        queues[agent.name] = AccountQueue(
            agent.id,
            agent.name,
            agent.settings,
            (AccountConsumer(consumer.id, "http_pull", None, consumer.dead_letter_queue, sparse),),
        )
        todo = plan(topo, Account(queues=queues))
        (update,) = todo.of(Action.update)
        assert (update.kind, update.queue) == ("consumer", "ai-agent-tasks")
        assert update.fields == (FieldChange("batch_size", 5, 10),)

    def test_a_worker_consumer_is_a_replacement_and_others_are_extra(self) -> None:
        topo = topology()
        queues = in_sync_account(topo)
        email = queues["email-sending"]
        worker = AccountConsumer("w1", "worker", "mailer", None, {})
        queues[email.name] = AccountQueue(email.id, email.name, email.settings, (worker,))
        dlq = queues["email-sending-dlq"]
        drain = AccountConsumer("w2", "worker", "dlq-drain", None, {})
        queues[dlq.name] = AccountQueue(dlq.id, dlq.name, dlq.settings, (drain,))
        queues["legacy"] = AccountQueue("q99", "legacy", {})

        todo = plan(topo, Account(queues=queues))
        (replace,) = todo.of(Action.replace_worker)
        assert (replace.queue, replace.consumer_id) == ("email-sending", "w1")
        assert replace.fields[0] == FieldChange("type", "worker", "http_pull")
        extras = [(c.kind, c.queue, c.consumer_id) for c in todo.of(Action.extra)]
        assert extras == [("consumer", "email-sending-dlq", "w2"), ("queue", "legacy", None)]
        assert not todo.in_sync

    def test_a_second_pull_consumer_is_extra(self) -> None:
        topo = topology()
        queues = in_sync_account(topo)
        q = queues["analytics-events"]
        second = AccountConsumer("c-extra", "http_pull", None, None, {})
        queues[q.name] = AccountQueue(q.id, q.name, q.settings, (*q.consumers, second))
        todo = plan(topo, Account(queues=queues))
        assert [(c.queue, c.consumer_id) for c in todo.of(Action.extra)] == [
            ("analytics-events", "c-extra")
        ]
        assert todo.in_sync  # extras alone leave the topology in place


API = "https://api.cloudflare.com/client/v4"
ACCOUNT = "0123456789abcdef0123456789abcdef"


def sdk_error(
    cls: type[cloudflare.APIStatusError], status: int, code: int, message: str
) -> Exception:
    """The exception the SDK raises for such an answer (built from a real response)."""
    body = {"success": False, "errors": [{"code": code, "message": message}], "result": None}
    request = httpx.Request("GET", f"{API}/accounts/{ACCOUNT}/queues")
    return cls(message, response=httpx.Response(status, request=request, json=body), body=body)


class TestApiErrors:
    @pytest.mark.parametrize(
        ("cls", "status", "code"),
        [
            (cloudflare.AuthenticationError, 401, 10000),
            (cloudflare.PermissionDeniedError, 403, 10000),
            # Cloudflare's answer to a token it cannot parse ("Invalid request headers").
            (cloudflare.BadRequestError, 400, 6003),
        ],
    )
    def test_a_refused_token_names_the_settings_and_the_permission(
        self, cls: type[cloudflare.APIStatusError], status: int, code: int
    ) -> None:
        with pytest.raises(QueueAuthFailed) as caught, api_errors(API, ACCOUNT):
            raise sdk_error(cls, status, code, "Authentication error")
        detail = caught.value.detail
        assert f"({status}, code {code})" in detail
        assert ACCOUNT in detail
        assert "JOBGATE_CF_API_TOKEN" in detail
        assert "Account > Queues > Edit" in detail

    def test_another_refusal_is_an_api_error_with_cloudflares_message(self) -> None:
        with pytest.raises(CloudflareApiError) as caught, api_errors(API, ACCOUNT):
            raise sdk_error(cloudflare.BadRequestError, 400, 100127, "batch_size too large")
        assert caught.value.detail == "Cloudflare answered 400, code 100127: batch_size too large"
