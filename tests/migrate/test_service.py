"""The mapping of one Bull job to a jobs API body, the mapping file, and how the client tells
new jobs from repeats: pure functions, no Redis or gateway (the end-to-end test has both)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.client.client import _batch_outcome
from app.jobs.schemas import JobPublic
from app.migrate.bull import BullJob, BullState
from app.migrate.errors import MappingInvalid
from app.migrate.schemas import BullMapping
from app.migrate.service import Outcome, Skip, load_mapping, request_for
from app.queues.topology import MAX_DELAY_SECONDS

NOW_MS = 1_800_000_000_000
MAPPING = BullMapping.model_validate(
    {
        "queues": {
            "mail": {"type": "send-email", "rename": {"recipient": "to"}},
            "shop": {"type_field": "type", "names": {"one": "sync-single-order"}},
        },
        "drop": ["tenantId"],
        "select": {"tenantId": ["t1", None]},
    }
)


def bull_job(
    queue: str, data: Any, *, name: str = "__default__", due_ms: int | None = None
) -> BullJob:
    return BullJob(
        queue=queue,
        id="7",
        state=BullState.delayed if due_ms is not None else BullState.waiting,
        name=name,
        data=data,
        due_ms=due_ms,
    )


def mail(**extra: Any) -> dict[str, Any]:
    return {"recipient": "a@example.com", "subject": "Hi", "templateId": "t", **extra}


def skip_of(job: BullJob, *, cap_delay: bool = False) -> Skip:
    with pytest.raises(Skip) as caught:
        request_for(job, MAPPING, now_ms=NOW_MS, cap_delay=cap_delay)
    return caught.value


def test_a_job_becomes_a_keyed_body_with_renamed_and_dropped_fields() -> None:
    body = request_for(
        bull_job("mail", mail(tenantId="t1")), MAPPING, now_ms=NOW_MS, cap_delay=False
    )
    assert body == {
        "to": "a@example.com",
        "subject": "Hi",
        "templateId": "t",
        "type": "send-email",
        "idempotency_key": "bull:mail:7",
    }


def test_the_type_field_wins_over_names_and_leaves_the_payload() -> None:
    job = bull_job("shop", {"type": "sync-orders", "siteId": "s"}, name="one")
    body = request_for(job, MAPPING, now_ms=NOW_MS, cap_delay=False)
    assert (body["type"], "siteId" in body) == ("sync-orders", True)
    by_name = request_for(
        bull_job("shop", {"orderId": 3}, name="one"), MAPPING, now_ms=NOW_MS, cap_delay=False
    )
    assert by_name["type"] == "sync-single-order"
    assert skip_of(bull_job("shop", {"orderId": 3}, name="two")).reason == (
        "job name 'two' is not in the mapping"
    )


def test_delays_keep_what_is_left_up_to_the_maximum() -> None:
    soon = request_for(
        bull_job("mail", mail(), due_ms=NOW_MS + 90_500), MAPPING, now_ms=NOW_MS, cap_delay=False
    )
    assert soon["delay_seconds"] == 91
    overdue = request_for(
        bull_job("mail", mail(), due_ms=NOW_MS - 5_000), MAPPING, now_ms=NOW_MS, cap_delay=False
    )
    assert "delay_seconds" not in overdue
    far = bull_job("mail", mail(), due_ms=NOW_MS + (MAX_DELAY_SECONDS + 10) * 1000)
    assert skip_of(far).outcome is Outcome.skipped
    capped = request_for(far, MAPPING, now_ms=NOW_MS, cap_delay=True)
    assert capped["delay_seconds"] == MAX_DELAY_SECONDS


def test_what_is_skipped_says_why() -> None:
    invalid = skip_of(bull_job("mail", mail(recipient="nope")))
    assert invalid.outcome is Outcome.skipped
    assert invalid.reason.startswith("invalid payload: to: value is not a valid email address")
    other = skip_of(bull_job("mail", mail(tenantId="t2")))
    assert (other.outcome, other.reason) == (Outcome.not_migrated, "not selected: tenantId is 't2'")
    assert skip_of(bull_job("mail", [1, 2])).reason == "its data is a JSON list, not an object"
    broken = BullJob("mail", "9", BullState.waiting, "x", None, None, problem="gone")
    assert skip_of(broken).reason == "gone"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("queues: {q: {type: send-mail}}", "unknown job type 'send-mail'"),
        ("queues: {q: {tpye: send-email}}", "queues.q.tpye: Extra inputs are not permitted"),
        ("queues: [", "is not YAML or JSON"),
        ('{"queues": {}}', "queues: Dictionary should have at least 1 item"),
    ],
)
def test_a_bad_mapping_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingInvalid) as caught:
        load_mapping(path)
    assert message in caught.value.detail
    with pytest.raises(MappingInvalid, match="cannot read"):
        load_mapping(tmp_path / "missing.yaml")


def _job(created_at: datetime) -> JobPublic:
    return JobPublic(
        id="j",
        type="agent-task",
        queue="ai-agent-tasks",
        status="queued",
        attempts=0,
        progress=0,
        payload={},
        delay_seconds=0,
        created_at=created_at,
        updated_at=created_at,
    )


def test_a_batch_answer_tells_new_jobs_from_repeats() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    old, new = _job(now - timedelta(minutes=5)), _job(now)
    assert [s.created for s in _batch_outcome(202, [old, new, new])] == [False, True, True]
    assert [s.created for s in _batch_outcome(202, [new, new])] == [True, True]
    assert [s.created for s in _batch_outcome(200, [old, old])] == [False, False]


def test_the_readme_mapping_example_loads(tmp_path: Path) -> None:
    """The mapping file README's "Coming from Bull" shows is one `load_mapping` accepts."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Coming from Bull") :]
    example = section[
        section.index("```yaml\n") + len("```yaml\n") : section.index(
            "```\n", section.index("```yaml\n") + 8
        )
    ]
    path = tmp_path / "bull.yaml"
    path.write_text(example, encoding="utf-8")
    mapping = load_mapping(path)
    assert set(mapping.queues) == {"email", "prestashop", "analytics"}
