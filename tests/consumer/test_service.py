"""Loading handlers by module name (JOBGATE_HANDLER_MODULES)."""

from __future__ import annotations

from app.consumer.service import handler_modules, load_handlers


def test_register_hook_brings_only_its_handlers() -> None:
    registry = load_handlers(["tests.consumer.e2e_handlers"])
    assert registry.types == {"analytics-event"}
    spec = registry.get("analytics-event")
    assert spec is not None
    assert spec.func.__module__ == "tests.consumer.e2e_handlers"


def test_company_handlers_cover_every_job_type() -> None:
    from app.jobs.payloads import JOB_TYPES

    assert load_handlers(["app.handlers"]).types == JOB_TYPES


def test_module_list_is_comma_separated() -> None:
    assert handler_modules(" app.handlers, tests.x ,") == ["app.handlers", "tests.x"]
