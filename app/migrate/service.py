"""Bull jobs into jobgate jobs: map each through the mapping file, validate it as the gateway
would, and submit it through the jobs API in batches, keyed `bull:{queue}:{id}`.

Every job read ends in exactly one row of the `Summary`: imported, already imported (the
key's original answered again), not migrated (by design: active, completed, flow parents,
failed without `include_failed`, not selected) or skipped for an error (unknown queue or
name, invalid payload, refused by the gateway, delayed past jobgate's maximum). Nothing is
dropped without a row, and nothing is written to Redis.

A second run within the gateway's idempotency window (24 h by default) imports nothing
twice: waiting and failed jobs repeat their first body exactly; a delayed job's remaining
delay has shrunk, which the gateway answers with 409 for its key, counted as already imported.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from app.client import JobgateClient, ProblemError, Submitted
from app.jobs.payloads import JOB_MODELS, JOB_TYPES
from app.jobs.schemas import MAX_BATCH_JOBS
from app.migrate.bull import READ_STATES, REPEAT_ID_PREFIX, BullJob, BullReader, BullState
from app.migrate.errors import MappingInvalid, NoQueues
from app.migrate.schemas import BullMapping
from app.queues.topology import MAX_DELAY_SECONDS

# The gateway refuses a batch over 256,000 bytes; its count of a job adds ids and the
# tenant to the payload, so leave room.
MAX_BATCH_BYTES = 200_000
_JOB_OVERHEAD_BYTES = 300
# Answers about one job of a batch: the batch is retried job by job to find which.
_PER_JOB_STATUSES = frozenset({403, 409, 413, 422})


class Outcome(StrEnum):
    imported = "imported"
    would_import = "would import"
    replayed = "already imported"
    not_migrated = "not migrated"
    skipped = "skipped (error)"


NOT_MIGRATED_REASONS: dict[BullState, str] = {
    BullState.active: "a Bull worker holds it now: let it finish, or run again if it fails",
    BullState.completed: "finished in Bull",
    BullState.waiting_children: "a BullMQ flow parent waiting for its children (no flows)",
}
FAILED_WITHOUT_FLAG = "failed in Bull: pass --include-failed to run it again in jobgate"
REPEAT_RUN = "the next run of a repeatable job: make the repeatable a jobgate schedule"
REPEATABLE = "make it a jobgate schedule (jobgate schedules create)"


def idempotency_key(job: BullJob) -> str:
    return f"bull:{job.queue}:{job.id}"


def load_mapping(path: Path) -> BullMapping:
    """The mapping file (YAML or JSON), or MappingInvalid naming what is wrong."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingInvalid(f"cannot read the mapping file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise MappingInvalid(f"the mapping file {path} is not YAML or JSON: {exc}") from None
    try:
        return BullMapping.model_validate(raw)
    except ValidationError as exc:
        raise MappingInvalid(f"the mapping file {path}: {validation_message(exc)}") from None


def validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)


@dataclass
class Row:
    count: int = 0
    examples: list[str] = field(default_factory=list)


RowKey = tuple[str, str, Outcome, str]


@dataclass
class Summary:
    """Counts per (queue, state, outcome, reason), with up to 3 example job ids per row."""

    rows: dict[RowKey, Row] = field(default_factory=dict)

    def add(
        self,
        queue: str,
        state: str,
        outcome: Outcome,
        reason: str = "",
        *,
        job_id: str | None = None,
        count: int = 1,
    ) -> None:
        row = self.rows.setdefault((queue, state, outcome, reason), Row())
        row.count += count
        if job_id is not None and len(row.examples) < 3:
            row.examples.append(job_id)

    def total(self, *outcomes: Outcome) -> int:
        return sum(row.count for key, row in self.rows.items() if key[2] in outcomes)

    @property
    def errors(self) -> int:
        return self.total(Outcome.skipped)


class Skip(Exception):
    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


def job_type_of(job: BullJob, data: dict[str, Any], mapping: BullMapping) -> str:
    rules = mapping.queues[job.queue]
    if rules.type_field is not None and rules.type_field in data:
        value = data[rules.type_field]
        if value not in JOB_TYPES:
            raise Skip(Outcome.skipped, f"unknown job type {value!r} in `{rules.type_field}`")
        return str(value)
    if job.name in rules.names:
        return rules.names[job.name]
    if rules.type is not None:
        return rules.type
    raise Skip(Outcome.skipped, f"job name {job.name!r} is not in the mapping")


def request_for(
    job: BullJob, mapping: BullMapping, *, now_ms: int, cap_delay: bool
) -> dict[str, Any]:
    """The jobs API body for one Bull job (validated as the gateway will), or Skip."""
    if job.problem is not None:
        raise Skip(Outcome.skipped, job.problem)
    data = job.data
    if not isinstance(data, dict):
        raise Skip(Outcome.skipped, f"its data is a JSON {type(data).__name__}, not an object")
    for name, wanted in mapping.select.items():
        if data.get(name) not in (wanted if isinstance(wanted, list) else [wanted]):
            raise Skip(Outcome.not_migrated, f"not selected: {name} is {data.get(name)!r}")
    rules = mapping.queues[job.queue]
    job_type = job_type_of(job, data, mapping)
    left_out: set[str] = {*mapping.drop, *rules.drop}
    if rules.type_field is not None:
        left_out.add(rules.type_field)
    payload: dict[str, Any] = {
        rules.rename.get(str(k), str(k)): v for k, v in data.items() if k not in left_out
    }
    body: dict[str, Any] = {**payload, "type": job_type, "idempotency_key": idempotency_key(job)}
    body.pop("delay_seconds", None)
    if job.due_ms is not None:
        remaining = math.ceil((job.due_ms - now_ms) / 1000)
        if remaining > MAX_DELAY_SECONDS:
            if not cap_delay:
                raise Skip(
                    Outcome.skipped,
                    f"due in more than {MAX_DELAY_SECONDS} s (jobgate's longest delay): run "
                    "again within a day of its due time, or pass --cap-delay",
                )
            remaining = MAX_DELAY_SECONDS
        if remaining > 0:
            body["delay_seconds"] = remaining
    try:
        JOB_MODELS[job_type].model_validate(body)
    except ValidationError as exc:
        raise Skip(Outcome.skipped, f"invalid payload: {validation_message(exc)}") from None
    return body


@dataclass
class Migration:
    """One run over the queues of `reader`. With `client` None it is a dry run."""

    reader: BullReader
    mapping: BullMapping
    client: JobgateClient | None
    include_failed: bool = False
    cap_delay: bool = False
    on_progress: Callable[[int], None] = lambda _: None
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000)
    summary: Summary = field(default_factory=Summary)
    _pending: list[tuple[BullJob, dict[str, Any]]] = field(default_factory=list)
    _pending_bytes: int = 0

    def queues(self, only: list[str] | None) -> list[str]:
        """The queues to read: `only`, else every queue found under the prefix; NoQueues
        when there is none, or one of `only` has no key (a wrong prefix or a typo would
        otherwise import nothing and say nothing)."""
        found = self.reader.queues()
        where = f"under the key prefix {self.reader.prefix!r}"
        if not only:
            if not found:
                raise NoQueues(f"no Bull queue {where} (see --prefix)")
            return found
        missing = sorted(set(only) - set(found))
        if missing:
            raise NoQueues(f"no Bull queue {', '.join(map(repr, missing))} {where}")
        return sorted(set(only))

    def migrated_states(self) -> tuple[BullState, ...]:
        return tuple(s for s in READ_STATES if s is not BullState.failed or self.include_failed)

    def size(self, queues: list[str]) -> int:
        """How many jobs `run` will read one by one (the progress bar's total)."""
        return sum(
            self.reader.count(queue, state)
            for queue in queues
            if queue in self.mapping.queues
            for state in self.migrated_states()
        )

    def run(self, queues: list[str]) -> Summary:
        for queue in queues:
            self._queue(queue)
        self._flush()
        return self.summary

    def _queue(self, queue: str) -> None:
        counts = self.reader.counts(queue)
        for state, reason in NOT_MIGRATED_REASONS.items():
            if counts[state]:
                self.summary.add(queue, state, Outcome.not_migrated, reason, count=counts[state])
        if counts[BullState.failed] and not self.include_failed:
            self.summary.add(
                queue,
                BullState.failed,
                Outcome.not_migrated,
                FAILED_WITHOUT_FLAG,
                count=counts[BullState.failed],
            )
        for repeatable in self.reader.repeatables(queue):
            reason = f"{repeatable.describe()}: {REPEATABLE}"
            self.summary.add(
                queue, "repeatable", Outcome.not_migrated, reason, job_id=repeatable.key
            )
        if queue not in self.mapping.queues:
            for state in self.migrated_states():
                if counts[state]:
                    self.summary.add(
                        queue,
                        state,
                        Outcome.skipped,
                        "queue not in the mapping",
                        count=counts[state],
                    )
            return
        for state in self.migrated_states():
            if counts[state]:
                for job in self.reader.jobs(queue, state):
                    self._job(job)

    def _job(self, job: BullJob) -> None:
        if job.state is BullState.delayed and job.id.startswith(REPEAT_ID_PREFIX):
            self._record(job, Outcome.not_migrated, REPEAT_RUN)
            return
        try:
            body = request_for(job, self.mapping, now_ms=self.now_ms(), cap_delay=self.cap_delay)
        except Skip as skip:
            self._record(job, skip.outcome, skip.reason)
            return
        size = len(json.dumps(body, ensure_ascii=False).encode()) + _JOB_OVERHEAD_BYTES
        if self._pending and (
            len(self._pending) >= MAX_BATCH_JOBS or self._pending_bytes + size > MAX_BATCH_BYTES
        ):
            self._flush()
        self._pending.append((job, body))
        self._pending_bytes += size

    def _record(self, job: BullJob, outcome: Outcome, reason: str = "") -> None:
        self.summary.add(job.queue, job.state, outcome, reason, job_id=job.id)
        self.on_progress(1)

    def _flush(self) -> None:
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if not pending:
            return
        if self.client is None:
            for job, _ in pending:
                self._record(job, Outcome.would_import)
            return
        self._send(pending)

    def _send(self, pending: list[tuple[BullJob, dict[str, Any]]]) -> None:
        """One batch; when the gateway refuses a job of it (all or none), the jobs it
        could be are sent apart: halves, down to the job alone (as the outbox relay does)."""
        assert self.client is not None
        if len(pending) <= 1:
            for item in pending:
                self._submit_one(*item)
            return
        try:
            answers = self.client.batch_outcome([body for _, body in pending])
        except ProblemError as error:
            if error.status not in _PER_JOB_STATUSES:
                raise
            delayed = [item for item in pending if item[0].state is BullState.delayed]
            if error.status == 409 and delayed:
                # On a second run every delayed job's key conflicts: those alone, the rest
                # as a batch.
                self._send([item for item in pending if item[0].state is not BullState.delayed])
                for item in delayed:
                    self._submit_one(*item)
                return
            half = len(pending) // 2
            self._send(pending[:half])
            self._send(pending[half:])
            return
        for (job, _), answer in zip(pending, answers, strict=True):
            self._answered(job, answer)

    def _submit_one(self, job: BullJob, body: dict[str, Any]) -> None:
        assert self.client is not None
        try:
            answer = self.client.submit_outcome(body)
        except ProblemError as error:
            if error.status not in _PER_JOB_STATUSES:
                raise
            if error.status == 409 and job.state is BullState.delayed:
                # Its key's original differs only by the delay, which shrinks run after run.
                self._record(job, Outcome.replayed, "imported before with a longer delay")
                return
            fields = [
                f"{'.'.join(str(p) for p in e.get('loc', []) if p != 'body')}: {e.get('msg')}"
                for e in error.errors
            ]
            reason = "; ".join([f"refused by the gateway: {error}", *fields])
            self._record(job, Outcome.skipped, reason)
            return
        self._answered(job, answer)

    def _answered(self, job: BullJob, answer: Submitted) -> None:
        self._record(job, Outcome.imported if answer.created else Outcome.replayed)
