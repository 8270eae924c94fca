"""Test-only controls under `/_emulator/` (not Cloudflare's): mounted only when
`JOBGATE_EMULATOR_TEST_CONTROLS=true`.

- `GET|POST /_emulator/clock` — read, set (`{"now_ms"}`), move (`{"advance_ms"}` /
  `{"advance_seconds"}`) or freeze (`{"frozen": true}`) the emulator's clock: delays,
  leases, retention, rate windows;
- `POST /_emulator/reset` — forget every queue, consumer, message, fault and counter, and
  return the clock and the settings to their start values;
- `GET /_emulator/state` — queues, consumers and metrics (with the messages under a lease:
  `in_flight`), pending faults, settings;
- `POST|DELETE /_emulator/faults` — schedule (`{"kind": "error"|"rate_limit"|"drop",
  "count", "retry_after", "match", "after"}`) or clear faults;
- `GET|POST /_emulator/config` — read or change the emulator settings (without the
  `emulator_` prefix: `{"json_body": "plain", "rate_limits": true, ...}`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from app.emulator.config import EmulatorConfig, OffsetClock
from app.emulator.errors import BodyInvalid
from app.emulator.router import ServiceDep, queue_out
from app.emulator.schemas import Metrics, as_int, parse_json
from app.emulator.service import EmulatorService
from app.emulator.throttle import Fault, FaultPlan

router = APIRouter(prefix="/_emulator")


def get_faults(request: Request) -> FaultPlan:
    faults: FaultPlan = request.app.state.faults
    return faults


FaultsDep = Annotated[FaultPlan, Depends(get_faults)]


async def _object(request: Request) -> dict[str, Any]:
    body = parse_json(await request.body())
    if not isinstance(body, dict):
        raise BodyInvalid("the request body must be a JSON object")
    return body


def _clock(service: EmulatorService) -> OffsetClock:
    return service.clock


@router.get("/clock")
async def read_clock(service: ServiceDep) -> dict[str, int]:
    clock = _clock(service)
    return {"now_ms": clock.now_ms(), "offset_ms": clock.offset_ms}


@router.post("/clock")
async def move_clock(request: Request, service: ServiceDep) -> dict[str, int]:
    body = await _object(request)
    clock = _clock(service)
    if "frozen" in body:
        clock.freeze(bool(body["frozen"]))
    if "now_ms" in body:
        now_ms = as_int(body["now_ms"])
        if now_ms is None:
            raise BodyInvalid("now_ms must be an integer")
        clock.set(now_ms)
    elif "advance_ms" in body or "advance_seconds" in body:
        seconds = body.get("advance_seconds", 0)
        ms = body.get("advance_ms", 0)
        if not isinstance(seconds, int | float) or as_int(ms) is None:
            raise BodyInvalid("advance_seconds must be a number and advance_ms an integer")
        clock.advance(int(seconds * 1000) + int(ms))
    elif "frozen" not in body:
        raise BodyInvalid("give now_ms, advance_ms, advance_seconds or frozen")
    return {"now_ms": clock.now_ms(), "offset_ms": clock.offset_ms}


@router.post("/reset")
async def reset(request: Request, service: ServiceDep, faults: FaultsDep) -> dict[str, bool]:
    await service.reset()
    faults.clear()
    _clock(service).reset()
    fresh = EmulatorConfig.from_settings(request.app.state.settings.emulator)
    service.config.update(fresh.as_dict())
    return {"ok": True}


@router.get("/state")
async def state(service: ServiceDep, faults: FaultsDep) -> dict[str, Any]:
    queues = []
    for record in service.list_queues():
        queue = queue_out(record)
        queue["metrics"] = Metrics.of(await service.metrics(record)).model_dump()
        # Not in Cloudflare's metrics: tests wait on it for a consumer's acks to land.
        queue["in_flight"] = (await service.engine.stats(record.id)).in_flight
        queues.append(queue)
    return {
        "now_ms": service.clock.now_ms(),
        "queues": queues,
        "faults": [fault_out(f) for f in faults.pending],
        "config": service.config.as_dict(),
    }


def fault_out(fault: Fault) -> dict[str, Any]:
    return {
        "kind": fault.kind,
        "remaining": fault.remaining,
        "retry_after": fault.retry_after,
        "match": fault.match,
        "after": fault.after,
    }


@router.post("/faults")
async def add_fault(request: Request, faults: FaultsDep) -> dict[str, Any]:
    body = await _object(request)
    count = as_int(body.get("count", 1))
    retry_after = as_int(body.get("retry_after", 1))
    if count is None or retry_after is None or retry_after < 0:
        raise BodyInvalid("count and retry_after must be integers")
    fault = Fault(
        kind=body.get("kind", "error"),
        remaining=count,
        retry_after=retry_after,
        match=str(body.get("match", "")),
        after=bool(body.get("after", False)),
    )
    faults.add(fault)
    return {"faults": [fault_out(f) for f in faults.pending]}


@router.delete("/faults")
async def clear_faults(faults: FaultsDep) -> dict[str, Any]:
    faults.clear()
    return {"faults": []}


@router.get("/config")
async def read_config(service: ServiceDep) -> dict[str, Any]:
    return service.config.as_dict()


@router.post("/config")
async def change_config(request: Request, service: ServiceDep) -> dict[str, Any]:
    service.config.update(await _object(request))
    return service.config.as_dict()
