"""Read Bull (`bull` v3/v4) and BullMQ (`bullmq`) queues straight from Redis, read only.

Both libraries keep a queue under `<prefix>:<queue>:`: `wait` and `paused` lists (a worker
takes from the right end, so the right end is the oldest), `active` list, `delayed` zset
scored `due_ms * 0x1000 + counter` (the low 12 bits only order jobs due the same
millisecond), `failed` and `completed` zsets, and one hash per job `<prefix>:<queue>:<id>`
(`name`, `data` JSON, `opts`, `timestamp`, `delay`, `attemptsMade`, `failedReason`...), of
which the import needs `name` and `data`. Bull's `priority` zset indexes jobs that also sit
in `wait`; BullMQ keeps prioritized jobs only in `prioritized`, flow parents in
`waiting-children`, and before v5 put marker entries (`0`, `0:<ms>`) in `wait`. Repeatable
jobs (Bull) and job schedulers (BullMQ) are listed in the `repeat` zset, and their next run
waits in `delayed` with an id that starts `repeat:`.

Only read commands are sent (SCAN, TYPE, LLEN, LRANGE, ZCARD, ZRANGE, HGETALL): nothing here
changes, locks or removes a Bull key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a type only: the gateway loads the CLI, and only `migrate` needs redis
    from redis import Redis

DELAY_SCORE_FACTOR = 0x1000
PAGE = 500


class BullState(StrEnum):
    waiting = "waiting"
    paused = "paused"
    prioritized = "prioritized"
    delayed = "delayed"
    failed = "failed"
    active = "active"
    completed = "completed"
    waiting_children = "waiting-children"


# Each state's key suffix; list states are read right to left (oldest first).
STATE_KEYS: dict[BullState, str] = {
    BullState.waiting: "wait",
    BullState.paused: "paused",
    BullState.prioritized: "prioritized",
    BullState.delayed: "delayed",
    BullState.failed: "failed",
    BullState.active: "active",
    BullState.completed: "completed",
    BullState.waiting_children: "waiting-children",
}
# The states whose jobs are read one by one; the others are only counted.
READ_STATES = (
    BullState.waiting,
    BullState.paused,
    BullState.prioritized,
    BullState.delayed,
    BullState.failed,
)
# Suffixes that prove a queue exists (any state, its id counter or its meta).
_MARK_SUFFIXES = (*STATE_KEYS.values(), "id", "meta", "meta-paused", "repeat")
# Ids of the jobs a repeatable job (Bull) or job scheduler (BullMQ) puts in `delayed`.
REPEAT_ID_PREFIX = "repeat:"


@dataclass(frozen=True)
class Repeatable:
    """A repeatable job's definition (its `repeat` zset entry): a cron `pattern` or an
    `every_ms` interval, in Bull's `name:id:endDate:tz:cron` member or BullMQ's
    `repeat:<key>` hash."""

    queue: str
    key: str
    name: str
    pattern: str | None
    every_ms: int | None
    tz: str | None

    def describe(self) -> str:
        when = f"cron {self.pattern!r}" if self.pattern else f"every {self.every_ms} ms"
        return f"{self.name} ({when}{f', {self.tz}' if self.tz else ''})"


@dataclass(frozen=True)
class BullJob:
    """One job as Bull stored it. `data` is None when its JSON is missing or broken
    (`problem` says which); `due_ms` is set for delayed jobs."""

    queue: str
    id: str
    state: BullState
    name: str
    data: Any
    due_ms: int | None
    problem: str | None = None


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def is_marker(job_id: str) -> bool:
    """BullMQ < 5 wakes workers with `0` or `0:<ms>` entries in `wait`: not jobs."""
    return job_id == "0" or job_id.startswith("0:")


class BullReader:
    """The queues of one Redis under one key prefix (`bull` unless Bull was told otherwise)."""

    def __init__(self, redis: Redis, prefix: str = "bull") -> None:
        self.redis = redis
        self.prefix = prefix

    def key(self, queue: str, suffix: str) -> str:
        return f"{self.prefix}:{queue}:{suffix}"

    def queues(self) -> list[str]:
        """Every queue with a key under the prefix, sorted."""
        found: set[str] = set()
        head = f"{self.prefix}:"
        for raw in self.redis.scan_iter(match=f"{head}*", count=1000):
            key = _text(raw) or ""
            rest = key[len(head) :]
            for suffix in _MARK_SUFFIXES:
                if rest.endswith(f":{suffix}") and len(rest) > len(suffix) + 1:
                    found.add(rest[: -len(suffix) - 1])
                    break
        return sorted(found)

    def count(self, queue: str, state: BullState) -> int:
        """How many jobs `state` holds (markers in `wait` included: they are few)."""
        key = self.key(queue, STATE_KEYS[state])
        kind = _text(self.redis.type(key))
        if kind == "list":
            return int(self.redis.llen(key))
        if kind == "zset":
            return int(self.redis.zcard(key))
        if kind == "set":  # Bull 2 kept completed/failed as sets
            return int(self.redis.scard(key))
        return 0

    def counts(self, queue: str) -> dict[BullState, int]:
        return {state: self.count(queue, state) for state in BullState}

    def repeatables(self, queue: str) -> list[Repeatable]:
        listed: list[Any] = self.redis.zrange(self.key(queue, "repeat"), 0, -1)
        members = [_text(raw) or "" for raw in listed]
        pipe = self.redis.pipeline(transaction=False)
        for member in members:
            pipe.hgetall(self.key(queue, f"repeat:{member}"))
        found = []
        for member, raw in zip(members, pipe.execute(), strict=True):
            fields = {_text(k) or "": _text(v) for k, v in raw.items()}
            if fields:  # BullMQ: the definition is a hash
                pattern, every = fields.get("pattern"), _int(fields.get("every"))
                name, tz = fields.get("name") or member, fields.get("tz")
            else:  # Bull: name:jobId:endDate:tz:cron-or-every
                parts = member.split(":", 4)
                name, tz, last = parts[0], parts[3] if len(parts) == 5 else None, parts[-1]
                every = _int(last) if last.isdigit() else None
                pattern = None if every is not None else last
            found.append(Repeatable(queue, member, name, pattern, every, tz or None))
        return found

    def _ids(self, queue: str, state: BullState) -> Iterator[tuple[str, float | None]]:
        key = self.key(queue, STATE_KEYS[state])
        kind = _text(self.redis.type(key))
        if kind == "list":
            size = int(self.redis.llen(key))
            # Oldest first: workers pop from the right.
            for end in range(size, 0, -PAGE):
                start = max(0, end - PAGE)
                page = self.redis.lrange(key, start, end - 1)
                for raw in reversed(page):
                    yield _text(raw) or "", None
        elif kind == "zset":
            start = 0
            while True:
                scored: list[Any] = self.redis.zrange(key, start, start + PAGE - 1, withscores=True)
                for raw, score in scored:
                    yield _text(raw) or "", float(score)
                if len(scored) < PAGE:
                    break
                start += PAGE
        elif kind == "set":
            for raw in self.redis.sscan_iter(key, count=PAGE):
                yield _text(raw) or "", None

    def jobs(self, queue: str, state: BullState) -> Iterator[BullJob]:
        """The jobs of one state with their hashes, in Bull's processing order."""
        seen: set[str] = set()
        batch: list[tuple[str, float | None]] = []
        for job_id, score in self._ids(queue, state):
            if is_marker(job_id) or job_id in seen:
                continue
            seen.add(job_id)
            batch.append((job_id, score))
            if len(batch) >= PAGE:
                yield from self._load(queue, state, batch)
                batch = []
        if batch:
            yield from self._load(queue, state, batch)

    def _load(
        self, queue: str, state: BullState, ids: list[tuple[str, float | None]]
    ) -> Iterator[BullJob]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id, _ in ids:
            pipe.hgetall(self.key(queue, job_id))
        for (job_id, score), raw in zip(ids, pipe.execute(), strict=True):
            fields = {_text(k) or "": _text(v) for k, v in raw.items()}
            yield _job(queue, job_id, state, score, fields)


def _job(
    queue: str, job_id: str, state: BullState, score: float | None, fields: dict[str, Any]
) -> BullJob:
    data: Any = None
    problem: str | None = None
    if not fields:
        problem = "its job hash is gone (removed while listed)"
    elif fields.get("data") is None:
        problem = "the job hash has no data"
    else:
        try:
            data = json.loads(fields["data"])
        except ValueError as exc:
            problem = f"its data is not JSON: {exc}"
    due_ms = None
    if state is BullState.delayed and score is not None:
        due_ms = int(score) // DELAY_SCORE_FACTOR
    return BullJob(
        queue=queue,
        id=job_id,
        state=state,
        name=fields.get("name") or "__default__",
        data=data,
        due_ms=due_ms,
        problem=problem,
    )
