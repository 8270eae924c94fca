"""The start-up check that job models, topology routes and handlers name the same job types.

Three places name job types: the payload models (`app.jobs.payloads.JOB_PAYLOADS`), the
routes of the topology (`jobgate.routes` in `wrangler.jsonc`) and the registered handlers.
When they disagree, jobs are accepted that nothing runs (they would fail on their first
delivery with "no handler"), or a handler waits for a type no one can submit. So a consumer
refuses to start (`Consumer`), and so can the gateway (`check_job_types` with every queue),
with one message naming each mismatch.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from pydantic import BaseModel

from app.consumer.registry import HandlerRegistry
from app.jobs.payloads import JOB_PAYLOADS
from app.queues.topology import Topology


class JobTypeMismatch(ValueError):
    """Job models, routes and handlers do not name the same job types."""


def job_type_problems(
    *,
    models: Mapping[str, type[BaseModel]],
    routes: Mapping[str, str],
    registry: HandlerRegistry,
    queues: Collection[str] | None = None,
) -> list[str]:
    """Each disagreement, described. A routed job type needs a handler only when its queue
    is among `queues` (None: every queue), so a consumer of some queues may load only the
    handlers of those."""
    problems: list[str] = []
    for job_type in sorted(models.keys() | routes.keys() | registry.types):
        model = models.get(job_type)
        queue = routes.get(job_type)
        spec = registry.get(job_type)
        if model is None:
            if queue is not None:
                problems.append(f"jobgate.routes names job type {job_type!r}, which has no model")
            if spec is not None:
                problems.append(
                    f"a handler ({spec.func.__module__}.{spec.func.__qualname__}) is "
                    f"registered for job type {job_type!r}, which has no model"
                )
            continue
        if queue is None:
            problems.append(
                f"job type {job_type!r} has a model ({model.__name__}) but no queue in "
                "jobgate.routes"
            )
        if spec is None:
            if queue is not None and (queues is None or queue in queues):
                problems.append(f"job type {job_type!r} (queue {queue!r}) has no handler")
        elif spec.model is not model:
            problems.append(
                f"the handler for job type {job_type!r} takes {spec.model.__name__}, "
                f"but its model is {model.__name__}"
            )
    return problems


def check_job_types(
    topology: Topology,
    registry: HandlerRegistry,
    *,
    queues: Collection[str] | None = None,
    models: Mapping[str, type[BaseModel]] = JOB_PAYLOADS,
) -> None:
    """Raise `JobTypeMismatch` naming every disagreement (see `job_type_problems`)."""
    problems = job_type_problems(
        models=models, routes=topology.routes, registry=registry, queues=queues
    )
    if problems:
        raise JobTypeMismatch(
            "job models, queue routes and handlers disagree: " + "; ".join(problems)
        )
