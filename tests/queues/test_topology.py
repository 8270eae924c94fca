"""Queue topology from wrangler.jsonc: the shipped file, defaults, and refusal of bad ones."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import json5
import pytest

from app.bootstrap import build_runtime
from app.core.config import REPO_ROOT
from app.jobs.payloads import JOB_TYPES
from app.main import create_app
from app.queues.topology import (
    DEFAULT_RETENTION_SECONDS,
    TopologyError,
    load_topology,
    parse_topology,
)
from app.settings import Settings

SHIPPED = REPO_ROOT / "wrangler.jsonc"
SEED_QUEUES = {
    "prestashop-sync",
    "email-sending",
    "image-processing",
    "analytics-events",
    "ai-agent-tasks",
}
ROUTES = {
    "sync-orders": "prestashop-sync",
    "sync-products": "prestashop-sync",
    "sync-single-order": "prestashop-sync",
    "send-email": "email-sending",
    "process-image": "image-processing",
    "analytics-event": "analytics-events",
    "agent-task": "ai-agent-tasks",
}


def shipped() -> dict[str, Any]:
    raw = json5.loads(SHIPPED.read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    return raw


def consumer(raw: dict[str, Any], queue: str) -> dict[str, Any]:
    [entry] = [c for c in raw["queues"]["consumers"] if c["queue"] == queue]
    return entry  # type: ignore[no-any-return]


class TestShippedTopology:
    def test_queues_and_routes(self) -> None:
        topology = load_topology(SHIPPED, job_types=JOB_TYPES)
        assert set(topology.queues) == SEED_QUEUES | {f"{q}-dlq" for q in SEED_QUEUES}
        assert set(topology.consumed_queues) == SEED_QUEUES
        assert dict(topology.routes) == ROUTES
        assert topology.queue_for("send-email") == "email-sending"
        assert topology.producer_bindings["PRESTASHOP_QUEUE"] == "prestashop-sync"

    def test_prestashop_sync(self) -> None:
        topology = load_topology(SHIPPED, job_types=JOB_TYPES)
        config = topology.consumers["prestashop-sync"]
        assert config.max_batch_size == 10
        assert config.max_retries == 3
        assert config.dead_letter_queue == "prestashop-sync-dlq"
        assert config.max_batch_timeout == 30
        assert config.retry_delay == "exponential"
        settings = topology.queues["prestashop-sync"]
        assert (settings.max_retries, settings.dead_letter_queue) == (3, "prestashop-sync-dlq")
        # Exponential delays are the consumer's to compute: the engine's fixed delay is 0.
        assert settings.retry_delay == 0

    def test_email_sending(self) -> None:
        topology = load_topology(SHIPPED, job_types=JOB_TYPES)
        config = topology.consumers["email-sending"]
        assert (config.max_batch_size, config.max_retries) == (50, 5)
        assert config.dead_letter_queue == "email-sending-dlq"
        assert topology.queues["email-sending"].max_retries == 5

    def test_image_processing_gets_the_default_dlq(self) -> None:
        topology = load_topology(SHIPPED, job_types=JOB_TYPES)
        config = topology.consumers["image-processing"]
        assert (config.max_batch_size, config.max_retries) == (5, 2)
        assert config.dead_letter_queue == "image-processing-dlq"
        assert topology.queues["image-processing"].dead_letter_queue == "image-processing-dlq"

    def test_analytics_events_are_consumed_in_full_batches(self) -> None:
        # Chosen for throughput (the company's config leaves it open): one INSERT per batch.
        config = load_topology(SHIPPED, job_types=JOB_TYPES).consumers["analytics-events"]
        assert (config.max_batch_size, config.max_batch_timeout) == (100, 1)
        assert config.max_retries == 3
        assert config.dead_letter_queue == "analytics-events-dlq"

    @pytest.mark.parametrize("name", ["ai-agent-tasks"])
    def test_unconfigured_producers_get_cloudflare_defaults(self, name: str) -> None:
        topology = load_topology(SHIPPED, job_types=JOB_TYPES)
        config = topology.consumers[name]
        assert config.max_batch_size == 10
        assert config.max_batch_timeout == 5
        assert config.max_retries == 3
        assert config.retry_delay == 0
        assert config.visibility_timeout_ms == 30_000
        assert config.dead_letter_queue == f"{name}-dlq"
        settings = topology.queues[name]
        assert settings.delivery_delay == 0
        assert settings.message_retention_period == DEFAULT_RETENTION_SECONDS

    def test_dead_letter_queues_have_no_dlq_of_their_own(self) -> None:
        topology = load_topology(SHIPPED, job_types=JOB_TYPES)
        for name in SEED_QUEUES:
            assert topology.queues[f"{name}-dlq"].dead_letter_queue is None
            assert f"{name}-dlq" not in topology.consumers

    def test_default_dlqs_can_be_turned_off(self) -> None:
        raw = shipped()
        raw["jobgate"]["default_dead_letter_queues"] = False
        topology = parse_topology(raw, job_types=JOB_TYPES)
        assert topology.consumers["image-processing"].dead_letter_queue is None
        assert topology.queues["analytics-events"].dead_letter_queue is None
        assert "analytics-events-dlq" not in topology.queues
        # Explicit DLQs stay.
        assert topology.queues["email-sending"].dead_letter_queue == "email-sending-dlq"

    def test_a_declared_dlq_target_gets_no_dlq_chain(self) -> None:
        raw = shipped()
        raw["queues"]["consumers"].append({"queue": "image-processing-dlq", "max_retries": 1})
        topology = parse_topology(raw, job_types=JOB_TYPES)
        assert topology.queues["image-processing"].dead_letter_queue == "image-processing-dlq"
        assert topology.queues["image-processing-dlq"].dead_letter_queue is None
        assert "image-processing-dlq-dlq" not in topology.queues


class TestJsonc:
    def test_comments_and_trailing_commas(self, tmp_path: Path) -> None:
        body = json.dumps(shipped(), indent=2)
        text = "// line comment\n/* block\n comment */\n" + body.replace(
            '"queues": {', '"queues": { // inline\n', 1
        )
        text = text.rstrip().removesuffix("}") + ",}"  # a trailing comma
        path = tmp_path / "wrangler.jsonc"
        path.write_text(text, encoding="utf-8")
        assert set(load_topology(path, job_types=JOB_TYPES).consumed_queues) == SEED_QUEUES

    def test_not_jsonc(self, tmp_path: Path) -> None:
        path = tmp_path / "wrangler.jsonc"
        path.write_text('{"queues": ', encoding="utf-8")
        with pytest.raises(TopologyError, match="not valid JSONC"):
            load_topology(path, job_types=JOB_TYPES)

    def test_top_level_must_be_an_object(self, tmp_path: Path) -> None:
        path = tmp_path / "wrangler.jsonc"
        path.write_text("[]", encoding="utf-8")
        with pytest.raises(TopologyError, match="top level must be an object"):
            load_topology(path, job_types=JOB_TYPES)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(TopologyError, match="cannot read queue topology"):
            load_topology(tmp_path / "absent.jsonc", job_types=JOB_TYPES)


Mutation = Callable[[dict[str, Any]], None]


def _set_consumer(queue: str, **values: Any) -> Mutation:
    return lambda raw: consumer(raw, queue).update(values)


def _set_jobgate(**values: Any) -> Mutation:
    return lambda raw: raw["jobgate"].update(values)


def _route(job_type: str, queue: str | None) -> Mutation:
    def mutate(raw: dict[str, Any]) -> None:
        if queue is None:
            del raw["jobgate"]["routes"][job_type]
        else:
            raw["jobgate"]["routes"][job_type] = queue

    return mutate


def _add_consumer(entry: dict[str, Any]) -> Mutation:
    return lambda raw: raw["queues"]["consumers"].append(entry)


INVALID: dict[str, tuple[Mutation, str]] = {
    "unknown-dlq": (
        _set_consumer("email-sending", dead_letter_queue="nowhere"),
        r"queues\.consumers\[1\]\.dead_letter_queue: unknown queue 'nowhere'",
    ),
    "own-dlq": (
        _set_consumer("email-sending", dead_letter_queue="email-sending"),
        r"queues\.consumers\[1\]\.dead_letter_queue: a queue cannot be its own DLQ",
    ),
    "batch-101": (
        _set_consumer("prestashop-sync", max_batch_size=101),
        r"queues\.consumers\[0\]\.max_batch_size",
    ),
    "batch-0": (
        _set_consumer("prestashop-sync", max_batch_size=0),
        r"queues\.consumers\[0\]\.max_batch_size",
    ),
    "retries-101": (
        _set_consumer("image-processing", max_retries=101),
        r"queues\.consumers\[2\]\.max_retries",
    ),
    "retries-negative": (
        _set_consumer("image-processing", max_retries=-1),
        r"queues\.consumers\[2\]\.max_retries",
    ),
    "retries-bool": (
        _set_consumer("image-processing", max_retries=True),
        r"queues\.consumers\[2\]\.max_retries",
    ),
    "retries-string": (
        _set_consumer("image-processing", max_retries="5"),
        r"queues\.consumers\[2\]\.max_retries",
    ),
    "retry-delay-86401": (
        _set_consumer("email-sending", retry_delay=86_401),
        r"queues\.consumers\[1\]\.retry_delay: .*86400",
    ),
    "retry-delay-word": (
        _set_consumer("email-sending", retry_delay="linear"),
        r"queues\.consumers\[1\]\.retry_delay",
    ),
    "batch-timeout-61": (
        _set_consumer("email-sending", max_batch_timeout=61),
        r"queues\.consumers\[1\]\.max_batch_timeout",
    ),
    "visibility-timeout": (
        _set_consumer("email-sending", visibility_timeout_ms=43_200_001),
        r"queues\.consumers\[1\]\.visibility_timeout_ms",
    ),
    "concurrency-251": (
        _set_consumer("email-sending", max_concurrency=251),
        r"queues\.consumers\[1\]\.max_concurrency",
    ),
    "delivery-delay-86401": (
        _set_jobgate(delivery_delay=86_401),
        r"jobgate\.delivery_delay",
    ),
    "retention-59": (
        _set_jobgate(message_retention_period=59),
        r"jobgate\.message_retention_period",
    ),
    "unknown-jobgate-key": (
        _set_jobgate(default_dead_letter_queue=True),
        r"jobgate\.default_dead_letter_queue\b",
    ),
    "second-consumer": (
        _add_consumer({"queue": "email-sending"}),
        r"queues\.consumers\[4\]\.queue: a second consumer for 'email-sending'",
    ),
    "long-queue-name": (
        _add_consumer({"queue": "q" * 64}),
        r"queues\.consumers\[4\]\.queue",
    ),
    "long-default-dlq-name": (
        _add_consumer({"queue": "q" * 63}),
        r"jobgate\.default_dead_letter_queues: .*'q{63}'",
    ),
    "unknown-route-queue": (
        _route("send-email", "mail"),
        r"jobgate\.routes\.send-email: unknown queue 'mail'",
    ),
    "unknown-job-type": (
        _route("send-fax", "email-sending"),
        r"jobgate\.routes\.send-fax: unknown job type",
    ),
    "job-type-without-route": (
        _route("agent-task", None),
        r"jobgate\.routes: no queue for job type\(s\) agent-task",
    ),
}


class TestInvalidTopology:
    @pytest.mark.parametrize("case", list(INVALID))
    def test_refused_naming_the_field(self, case: str) -> None:
        mutate, expected = INVALID[case]
        raw = copy.deepcopy(shipped())
        mutate(raw)
        with pytest.raises(TopologyError) as caught:
            parse_topology(raw, job_types=JOB_TYPES)
        assert re.search(expected, str(caught.value)), str(caught.value)

    def test_limits_themselves_are_accepted(self) -> None:
        raw = shipped()
        consumer(raw, "email-sending").update(
            max_batch_size=100, max_retries=100, retry_delay=86_400, max_batch_timeout=60
        )
        raw["jobgate"]["delivery_delay"] = 86_400
        topology = parse_topology(raw, job_types=JOB_TYPES)
        settings = topology.queues["email-sending"]
        assert (settings.max_retries, settings.retry_delay, settings.delivery_delay) == (
            100,
            86_400,
            86_400,
        )


class TestStartUp:
    def _bad_config(self, tmp_path: Path) -> Path:
        raw = shipped()
        consumer(raw, "prestashop-sync")["max_retries"] = 101
        path = tmp_path / "wrangler.jsonc"
        path.write_text(json.dumps(raw), encoding="utf-8")
        return path

    def test_build_runtime_refuses_a_bad_config(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("JOBGATE_WRANGLER_CONFIG", str(self._bad_config(tmp_path)))
        settings = Settings()
        with pytest.raises(TopologyError, match=r"queues\.consumers\[0\]\.max_retries"):
            build_runtime(settings)

    def test_create_app_refuses_a_bad_config(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("JOBGATE_WRANGLER_CONFIG", str(self._bad_config(tmp_path)))
        with pytest.raises(TopologyError, match="max_retries"):
            create_app(Settings())

    def test_missing_config_is_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("JOBGATE_WRANGLER_CONFIG", str(tmp_path / "nope.jsonc"))
        with pytest.raises(TopologyError, match="nope.jsonc"):
            build_runtime(Settings())
