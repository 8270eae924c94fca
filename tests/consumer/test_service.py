"""Wiring a consumer: handlers by module name (JOBGATE_HANDLER_MODULES), idle polling."""

from __future__ import annotations

import pytest

from app.consumer.service import handler_modules, idle_poll_max_ms, load_handlers
from app.jobs.payloads import JOB_PAYLOADS, JOB_TYPES
from app.settings import Settings


def test_register_hook_brings_only_its_handlers() -> None:
    registry = load_handlers(["tests.consumer.e2e_handlers"])
    assert registry.types == JOB_TYPES
    # None of the process-wide registry's (app.handlers) came along.
    assert {spec.func.__module__ for spec in registry.specs} == {"tests.consumer.e2e_handlers"}


def test_company_handlers_cover_every_job_type_with_its_model() -> None:
    registry = load_handlers(["app.handlers"])
    assert registry.types == JOB_TYPES
    assert {spec.job_type: spec.model for spec in registry.specs} == JOB_PAYLOADS


def test_module_list_is_comma_separated() -> None:
    assert handler_modules(" app.handlers, tests.x ,") == ["app.handlers", "tests.x"]


def test_idle_polling_cap_defaults_by_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBGATE_CONSUMER_POLL_MAX_MS", raising=False)
    assert idle_poll_max_ms(Settings().consumer, "local") == 1_000
    assert idle_poll_max_ms(Settings().consumer, "cloudflare") == 2_000
    monkeypatch.setenv("JOBGATE_CONSUMER_POLL_MAX_MS", "300")
    assert idle_poll_max_ms(Settings().consumer, "cloudflare") == 300
