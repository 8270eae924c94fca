"""Provisioning a Cloudflare account from the topology (`jobgate cf sync` and `cf doctor`).

Three steps, kept apart so the diff is plain data that tests can check without an account:
`read_account` reads the account's queues and consumers through the official SDK, `plan`
compares them with the topology (pure), `apply` carries a plan out.

What the account should hold, per `wrangler.jsonc`:
- every topology queue (dead letter queues included) with the topology's `delivery_delay`
  and `message_retention_period`;
- on every consumed queue, one `http_pull` consumer with `batch_size` (`max_batch_size`),
  `max_retries`, `retry_delay`, `visibility_timeout_ms` and the dead letter queue.
  `retry_delay: "exponential"` is 0 in the account: jobgate's consumer sends each retry's
  delay itself. `max_batch_timeout` and `max_concurrency` configure Worker consumers only.

Never destructive without `prune`: queues and consumers the file does not name are reported
(`extra`); a Worker consumer on a consumed queue blocks the pull consumer (`replace`): both
are deleted only with `prune`. A paused queue stays paused (pausing is an operator's act,
not configuration).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from app.queues.base import DEFAULT_PULL_BATCH, DEFAULT_VISIBILITY_TIMEOUT_MS
from app.queues.cloudflare import CloudflareApiError
from app.queues.errors import QueueAuthFailed, QueueUnavailable
from app.queues.topology import DEFAULT_RETENTION_SECONDS, Topology

if TYPE_CHECKING:
    from cloudflare import Cloudflare
    from cloudflare.types.queues.message_ack_params import Retry

# Cloudflare's defaults, for settings an answer leaves out.
QUEUE_DEFAULTS: Mapping[str, int] = {
    "delivery_delay": 0,
    "message_retention_period": DEFAULT_RETENTION_SECONDS,
}
PULL_CONSUMER_DEFAULTS: Mapping[str, int] = {
    "batch_size": DEFAULT_PULL_BATCH,
    "max_retries": 3,
    "retry_delay": 0,
    "visibility_timeout_ms": DEFAULT_VISIBILITY_TIMEOUT_MS,
}
PROBE_QUEUE = "jobgate-doctor-probe"
# What the token needs, in the words of Cloudflare's API token form.
TOKEN_PERMISSION = "Account > Queues > Edit"

Value = int | str | None


# -- the two sides ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountConsumer:
    id: str
    type: str  # "http_pull" or "worker"
    script_name: str | None
    dead_letter_queue: str | None
    settings: Mapping[str, Value]


@dataclass(frozen=True, slots=True)
class AccountQueue:
    id: str
    name: str
    settings: Mapping[str, Value]
    consumers: tuple[AccountConsumer, ...] = ()


@dataclass(frozen=True, slots=True)
class Account:
    queues: Mapping[str, AccountQueue]


@dataclass(frozen=True, slots=True)
class WantedConsumer:
    dead_letter_queue: str | None
    settings: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class WantedState:
    """The account as the topology describes it: queue settings, pull consumers by queue."""

    queues: Mapping[str, Mapping[str, int]]
    consumers: Mapping[str, WantedConsumer]


def wanted_state(topology: Topology) -> WantedState:
    queues = {
        name: {
            "delivery_delay": queue.delivery_delay,
            "message_retention_period": queue.message_retention_period,
        }
        for name, queue in topology.queues.items()
    }
    consumers = {
        name: WantedConsumer(
            dead_letter_queue=config.dead_letter_queue,
            settings={
                "batch_size": config.max_batch_size,
                "max_retries": config.max_retries,
                "retry_delay": config.retry_delay if isinstance(config.retry_delay, int) else 0,
                "visibility_timeout_ms": config.visibility_timeout_ms,
            },
        )
        for name, config in topology.consumers.items()
    }
    return WantedState(queues=queues, consumers=consumers)


# -- the plan -----------------------------------------------------------------------------


class Action(StrEnum):
    create = "create"
    update = "update"
    # A Worker consumer where the topology wants a pull consumer: delete it, then create.
    replace_worker = "replace"
    extra = "extra"
    unchanged = "unchanged"


@dataclass(frozen=True, slots=True)
class FieldChange:
    name: str
    old: Value
    new: Value


@dataclass(frozen=True, slots=True)
class Change:
    action: Action
    kind: Literal["queue", "consumer"]
    queue: str
    fields: tuple[FieldChange, ...] = ()
    # What exists in the account (ids for apply; a Worker's name for people).
    queue_id: str | None = None
    consumer_id: str | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "kind": self.kind,
            "queue": self.queue,
            "fields": {f.name: {"old": f.old, "new": f.new} for f in self.fields},
            "queue_id": self.queue_id,
            "consumer_id": self.consumer_id,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    changes: tuple[Change, ...]
    wanted: WantedState = field(repr=False)

    def of(self, *actions: Action) -> list[Change]:
        return [c for c in self.changes if c.action in actions]

    @property
    def in_sync(self) -> bool:
        """Nothing to create, update or replace (extras alone do not count)."""
        return not self.of(Action.create, Action.update, Action.replace_worker)

    def summary(self) -> dict[str, int]:
        return {action.value: len(self.of(action)) for action in Action}


def _same(old: Value, new: Value) -> bool:
    if isinstance(old, int | float) and isinstance(new, int | float):
        return float(old) == float(new)
    return old == new


def _diff(
    old: Mapping[str, Value], new: Mapping[str, Value], defaults: Mapping[str, Value]
) -> tuple[FieldChange, ...]:
    changes = []
    for name, wanted in new.items():
        current = old.get(name)
        current = defaults.get(name) if current is None else current
        if not _same(current, wanted):
            changes.append(FieldChange(name, current, wanted))
    return tuple(changes)


def _consumer_fields(consumer: WantedConsumer) -> dict[str, Value]:
    return {"dead_letter_queue": consumer.dead_letter_queue, **consumer.settings}


def plan(topology: Topology, account: Account) -> Plan:
    """Every difference between the topology and the account, in the order to apply them."""
    wanted = wanted_state(topology)
    changes: list[Change] = []
    for name, settings in wanted.queues.items():
        existing = account.queues.get(name)
        if existing is None:
            fields = tuple(FieldChange(k, None, v) for k, v in settings.items())
            changes.append(Change(Action.create, "queue", name, fields))
            continue
        diff = _diff(existing.settings, settings, QUEUE_DEFAULTS)
        action = Action.update if diff else Action.unchanged
        changes.append(Change(action, "queue", name, diff, queue_id=existing.id))

    for name in wanted.queues:
        existing = account.queues.get(name)
        consumers = list(existing.consumers) if existing else []
        want = wanted.consumers.get(name)
        queue_id = existing.id if existing else None
        pull = next((c for c in consumers if c.type == "http_pull"), None)
        if want is not None:
            new = _consumer_fields(want)
            if pull is not None:
                consumers.remove(pull)
                old = {"dead_letter_queue": pull.dead_letter_queue, **pull.settings}
                diff = _diff(old, new, PULL_CONSUMER_DEFAULTS)
                changes.append(
                    Change(
                        Action.update if diff else Action.unchanged,
                        "consumer",
                        name,
                        diff,
                        queue_id=queue_id,
                        consumer_id=pull.id,
                    )
                )
            else:
                fields = tuple(FieldChange(k, None, v) for k, v in new.items())
                worker = next((c for c in consumers if c.type == "worker"), None)
                if worker is not None:
                    consumers.remove(worker)
                    changes.append(
                        Change(
                            Action.replace_worker,
                            "consumer",
                            name,
                            (FieldChange("type", "worker", "http_pull"), *fields),
                            queue_id=queue_id,
                            consumer_id=worker.id,
                            detail=f"Worker consumer {worker.script_name!r}",
                        )
                    )
                else:
                    changes.append(
                        Change(Action.create, "consumer", name, fields, queue_id=queue_id)
                    )
        for other in consumers:
            what = f"Worker {other.script_name!r}" if other.type == "worker" else other.type
            changes.append(
                Change(
                    Action.extra,
                    "consumer",
                    name,
                    queue_id=queue_id,
                    consumer_id=other.id,
                    detail=f"{what} consumer not in the topology",
                )
            )

    for name, existing in account.queues.items():
        if name not in wanted.queues:
            changes.append(
                Change(
                    Action.extra,
                    "queue",
                    name,
                    queue_id=existing.id,
                    detail="queue not in the topology (deleting it deletes its messages)",
                )
            )
    return Plan(changes=tuple(changes), wanted=wanted)


# -- talking to the account ---------------------------------------------------------------


@contextmanager
def api_errors(base_url: str, account_id: str) -> Iterator[None]:
    """The SDK's exceptions as our queue errors, each with a one-line detail (no token)."""
    import cloudflare

    try:
        yield
    except cloudflare.APIStatusError as exc:
        if token_refused(exc):
            raise QueueAuthFailed(
                f"Cloudflare refused the token for account {account_id} "
                f"({exc.status_code}{_code(exc)}): check JOBGATE_CF_API_TOKEN and "
                f"JOBGATE_CF_ACCOUNT_ID; the token needs {TOKEN_PERMISSION}",
                backend_status=exc.status_code,
            ) from None
        raise CloudflareApiError(
            f"Cloudflare answered {exc.status_code}{_code(exc)}: {_message(exc)}",
            backend_status=exc.status_code,
        ) from None
    except cloudflare.APIConnectionError as exc:
        raise QueueUnavailable(f"cannot reach {base_url}: {type(exc).__name__}") from None


def _first_error(exc: Any) -> Mapping[str, Any]:
    body = getattr(exc, "body", None)
    errors = body.get("errors") if isinstance(body, Mapping) else None
    first = errors[0] if isinstance(errors, list) and errors else None
    return first if isinstance(first, Mapping) else {}


def _code(exc: Any) -> str:
    code = _first_error(exc).get("code")
    return f", code {code}" if code is not None else ""


def _message(exc: Any) -> str:
    return str(_first_error(exc).get("message") or type(exc).__name__)


# A token Cloudflare cannot even parse: 400 "Invalid request headers" (6003), with
# "Invalid format for Authorization header" (6111) in its error chain.
MALFORMED_TOKEN_CODES = frozenset({6003, 6111})


def token_refused(exc: Exception) -> bool:
    """Whether an SDK error means the token (or its reach to the account) is the problem."""
    import cloudflare

    if isinstance(exc, cloudflare.AuthenticationError | cloudflare.PermissionDeniedError):
        return True
    return isinstance(exc, cloudflare.BadRequestError) and (
        _first_error(exc).get("code") in MALFORMED_TOKEN_CODES
    )


def _settings(model: Any) -> dict[str, Value]:
    if model is None:
        return {}
    raw = model.model_dump()
    return {k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in raw.items()}


def _consumer(raw: Any) -> AccountConsumer:
    return AccountConsumer(
        id=str(raw.consumer_id),
        type=str(raw.type),
        script_name=getattr(raw, "script_name", None),
        dead_letter_queue=raw.dead_letter_queue or None,
        settings=_settings(raw.settings),
    )


def list_queues(client: Cloudflare, account_id: str) -> list[Any]:
    """Every queue of the account, page by page (stopping at an empty or repeated page)."""
    found: dict[str, Any] = {}
    page = 1
    while True:
        batch = client.queues.list(account_id=account_id, extra_query={"page": page}).result
        fresh = [q for q in batch if q.queue_id and q.queue_id not in found]
        if not fresh:
            return list(found.values())
        found.update((str(q.queue_id), q) for q in fresh)
        page += 1


def read_account(client: Cloudflare, account_id: str, *, topology: Topology) -> Account:
    """The account's queues; consumers are read for the topology's queues only (an extra
    queue goes with its consumers)."""
    queues: dict[str, AccountQueue] = {}
    for raw in list_queues(client, account_id):
        name = str(raw.queue_name)
        consumers: tuple[AccountConsumer, ...] = ()
        if name in topology.queues:
            listed = client.queues.consumers.list(raw.queue_id, account_id=account_id)
            consumers = tuple(_consumer(c) for c in listed.result)
        queues[name] = AccountQueue(
            id=str(raw.queue_id), name=name, settings=_settings(raw.settings), consumers=consumers
        )
    return Account(queues=queues)


def _pull_settings(settings: Mapping[str, int]) -> Any:
    return {
        "batch_size": settings["batch_size"],
        "max_retries": settings["max_retries"],
        "retry_delay": settings["retry_delay"],
        "visibility_timeout_ms": settings["visibility_timeout_ms"],
    }


@dataclass(slots=True)
class Applied:
    done: list[Change] = field(default_factory=list)
    # Changes left alone: replacements and extras without `prune`.
    skipped: list[Change] = field(default_factory=list)


def apply(client: Cloudflare, account_id: str, todo: Plan, *, prune: bool) -> Applied:
    """Carry out `todo`: queues first (dead letter queues exist before a consumer names
    them), deletions of consumers before the pull consumers that take their place, extra
    queues last. Stops at the first API error (raised); what was done stays done."""
    from cloudflare import omit

    result = Applied()
    ids: dict[str, str] = {c.queue: c.queue_id for c in todo.changes if c.queue_id}

    for change in todo.of(Action.create, Action.update):
        if change.kind != "queue":
            continue
        settings = dict(todo.wanted.queues[change.queue])
        if change.action is Action.create:
            created = client.queues.create(
                account_id=account_id,
                queue_name=change.queue,
                extra_body={"settings": settings},
            )
            if created is None or not created.queue_id:
                raise CloudflareApiError(f"Cloudflare did not create queue {change.queue!r}")
            ids[change.queue] = created.queue_id
        else:
            # PATCH, as wrangler does: `delivery_paused` is left as the operator set it.
            client.queues.edit(
                ids[change.queue],
                account_id=account_id,
                queue_name=change.queue,
                settings={
                    "delivery_delay": settings["delivery_delay"],
                    "message_retention_period": settings["message_retention_period"],
                },
            )
        result.done.append(change)

    for change in todo.of(Action.replace_worker, Action.extra):
        if change.kind == "consumer":
            if not prune:
                result.skipped.append(change)
                continue
            assert change.consumer_id is not None
            client.queues.consumers.delete(
                change.consumer_id, account_id=account_id, queue_id=ids[change.queue]
            )
            if change.action is Action.extra:
                result.done.append(change)

    for change in todo.of(Action.create, Action.update, Action.replace_worker):
        if change.kind != "consumer" or (change.action is Action.replace_worker and not prune):
            continue
        want = todo.wanted.consumers[change.queue]
        dlq = want.dead_letter_queue
        if change.action is Action.update:
            assert change.consumer_id is not None
            client.queues.consumers.update(
                change.consumer_id,
                account_id=account_id,
                queue_id=ids[change.queue],
                type="http_pull",
                # A full replace: "" removes a dead letter queue the account still has.
                dead_letter_queue=dlq or "",
                settings=_pull_settings(want.settings),
            )
        else:
            client.queues.consumers.create(
                ids[change.queue],
                account_id=account_id,
                type="http_pull",
                dead_letter_queue=dlq or omit,
                settings=_pull_settings(want.settings),
            )
        result.done.append(change)

    for change in todo.of(Action.extra):
        if change.kind != "queue":
            continue
        if not prune:
            result.skipped.append(change)
            continue
        assert change.queue_id is not None
        client.queues.delete(change.queue_id, account_id=account_id)
        result.done.append(change)
    return result


# -- doctor -------------------------------------------------------------------------------


class Status(StrEnum):
    ok = "ok"
    fail = "fail"
    skipped = "skipped"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""
    # Cloudflare refused the token (401/403), rather than the account lacking something.
    denied: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
            "denied": self.denied,
        }


def _denied(exc: Any, what: str, account_id: str) -> Check:
    if exc.status_code in (400, 401):
        return Check(
            what,
            Status.fail,
            f"the token is not valid ({exc.status_code}{_code(exc)}): mistyped, expired or revoked",
            f"create an API token with {TOKEN_PERMISSION} and set JOBGATE_CF_API_TOKEN",
            denied=True,
        )
    return Check(
        what,
        Status.fail,
        f"the token may not {what} in account {account_id} ({exc.status_code}{_code(exc)})",
        f"give the token {TOKEN_PERMISSION} on this account, and check JOBGATE_CF_ACCOUNT_ID",
        denied=True,
    )


PROBE_STEPS = ("push", "pull", "ack")


def _pull_probe(
    client: Cloudflare, account_id: str, queue_id: str, marker: str, *, attempts: int
) -> str | None:
    """Pull until the probe shows up; its lease. Other messages stay leased meanwhile (so
    the next pull gets newer ones), then are released at once (a retry without delay)."""
    others: list[Retry] = []
    try:
        for attempt in range(attempts):
            pulled = client.queues.messages.pull(
                queue_id, account_id=account_id, batch_size=10, visibility_timeout_ms=60_000
            )
            lease = None
            for message in (pulled.messages or []) if pulled else []:
                # A text body comes back as it was sent (a json one would be base64).
                if marker in str(message.body):
                    lease = message.lease_id or ""
                else:
                    others.append({"lease_id": message.lease_id or "", "delay_seconds": 0})
            if lease is not None:
                return lease
            if attempt + 1 < attempts:
                time.sleep(0.5)  # a fresh message can take a moment to become visible
        return None
    finally:
        if others:
            client.queues.messages.ack(queue_id, account_id=account_id, acks=[], retries=others)


def _probe_steps(
    client: Cloudflare, account_id: str, queue_id: str, name: str, checks: list[Check]
) -> None:
    marker = uuid.uuid4().hex
    client.queues.messages.push(
        queue_id,
        account_id=account_id,
        body=f"jobgate doctor probe {marker}",
        content_type="text",
    )
    checks.append(Check("push", Status.ok, f"sent a probe message to {name}"))
    lease = _pull_probe(client, account_id, queue_id, marker, attempts=10)
    if lease is None:
        checks.append(
            Check(
                "pull",
                Status.fail,
                f"the probe message did not come back from {name}",
                "check that the queue is not paused and has an http_pull consumer",
            )
        )
        return
    checks.append(Check("pull", Status.ok, "leased the probe message"))
    acked = client.queues.messages.ack(
        queue_id, account_id=account_id, acks=[{"lease_id": lease}], retries=[]
    )
    if acked is None or not acked.ack_count:
        checks.append(
            Check(
                "ack", Status.fail, "the ack removed nothing", f"give the token {TOKEN_PERMISSION}"
            )
        )
    else:
        checks.append(Check("ack", Status.ok, "acknowledged the probe message"))


def probe(
    client: Cloudflare,
    account_id: str,
    *,
    queue: str | None,
    existing_ids: Mapping[str, str],
) -> list[Check]:
    """Push one text message, pull it, ack it: a check per step.

    With `queue` None: on a queue of its own (`jobgate-doctor-probe`, created with a pull
    consumer and deleted after), so no real message is touched. With an existing `queue`:
    other messages pulled before the probe are released at once (a retry with no delay,
    which counts as one delivery attempt for them).
    """
    import cloudflare

    own_queue = queue is None
    name = queue or PROBE_QUEUE
    queue_id = existing_ids.get(name)
    checks: list[Check] = []
    try:
        if own_queue:
            if queue_id is None:
                created = client.queues.create(account_id=account_id, queue_name=PROBE_QUEUE)
                queue_id = created.queue_id if created else None
            assert queue_id is not None
            listed = client.queues.consumers.list(queue_id, account_id=account_id).result
            if not any(c.type == "http_pull" for c in listed):
                client.queues.consumers.create(queue_id, account_id=account_id, type="http_pull")
        if queue_id is None:
            checks.append(
                Check(
                    "push",
                    Status.fail,
                    f"queue {name!r} does not exist",
                    "name a queue of the account (`jobgate cf sync` creates the topology's)",
                )
            )
        else:
            _probe_steps(client, account_id, queue_id, name, checks)
    except cloudflare.APIStatusError as exc:
        if not token_refused(exc):
            raise
        step = next(n for n in PROBE_STEPS if n not in {c.name for c in checks})
        checks.append(_denied(exc, step, account_id))
    finally:
        if own_queue and queue_id is not None:
            try:
                client.queues.delete(queue_id, account_id=account_id)
            except cloudflare.APIError:
                checks.append(
                    Check(
                        "cleanup",
                        Status.fail,
                        f"could not delete {PROBE_QUEUE}",
                        f"delete the queue {PROBE_QUEUE} by hand",
                    )
                )
    done = {c.name for c in checks}
    return checks + [Check(n, Status.skipped, "not reached") for n in PROBE_STEPS if n not in done]


def check_consumers(topology: Topology, account: Account) -> list[Check]:
    """Each topology queue exists; each consumed one has a pull consumer (a Worker consumer
    takes the messages before jobgate can pull them)."""
    checks = []
    for name in topology.queues:
        queue = account.queues.get(name)
        what = f"queue {name}"
        if queue is None:
            checks.append(Check(what, Status.fail, "missing", "run `jobgate cf sync`"))
            continue
        if name not in topology.consumers:
            checks.append(Check(what, Status.ok, "exists (dead letter queue, no consumer)"))
            continue
        workers = [c for c in queue.consumers if c.type == "worker"]
        pulls = [c for c in queue.consumers if c.type == "http_pull"]
        if workers:
            scripts = ", ".join(repr(w.script_name) for w in workers)
            checks.append(
                Check(
                    what,
                    Status.fail,
                    f"consumed by Worker {scripts}: jobgate cannot pull from it",
                    f"remove that consumer (`wrangler queues consumer remove {name} "
                    f"{workers[0].script_name}`) or run `jobgate cf sync --prune`",
                )
            )
        elif not pulls:
            checks.append(
                Check(what, Status.fail, "no http_pull consumer", "run `jobgate cf sync`")
            )
        else:
            checks.append(Check(what, Status.ok, "http_pull consumer"))
    return checks


def diagnose(
    client: Cloudflare,
    account_id: str,
    topology: Topology,
    *,
    probe_queue: str | None,
    run_probe: bool,
) -> list[Check]:
    """Can the token read queues, push, pull and ack; are the consumers pull consumers."""
    import cloudflare

    try:
        account = read_account(client, account_id, topology=topology)
    except cloudflare.APIStatusError as exc:
        if not token_refused(exc):
            raise
        return [
            _denied(exc, "read queues", account_id),
            *(Check(n, Status.skipped, "needs read access") for n in PROBE_STEPS),
        ]
    checks = [Check("read queues", Status.ok, f"{len(account.queues)} queue(s) in the account")]
    if run_probe:
        ids = {name: queue.id for name, queue in account.queues.items()}
        checks += probe(client, account_id, queue=probe_queue, existing_ids=ids)
    else:
        checks += [Check(n, Status.skipped, "--no-probe") for n in PROBE_STEPS]
    return checks + check_consumers(topology, account)
