"""``GET /api/v1/events``: IPR transitions and deployment steps as Server-Sent Events.

The stream reads the database, not only this process's event bus, so it also sees what another
process wrote, and it can resume. Every event's ``id`` carries both cursors, ``<ipr event id>.<step
id>`` (``id: 42.17``): a client that reconnects with ``Last-Event-ID: 42.17`` gets the IPR events
after 42 and the steps after 17, none lost and none twice, whatever order the two were interleaved
in. Without ``Last-Event-ID`` (or ``?last_event_id=``) the stream starts at what happens next;
``0.0`` replays everything.

A deployment step is sent once it has finished (its row is written when it starts and updated
when it ends), in id order: a finished step waits behind an earlier one still running, so that the
step cursor never skips a row that finishes later.

    retry: 2000

    id: 3.0
    event: ipr.transition
    data: {"action":"approve","actor":"user:alice","at":"...","event_id":3,"from_state":"open",...}

    : heartbeat

The stream wakes on the in-process event bus and also polls every second (another process may
have written); a ``: heartbeat`` comment goes out after ``ALMA_EVENTS_HEARTBEAT_SECONDS`` of
silence. Watching needs the ``viewer`` role.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from alma_mcp.errors import AlmaError, InvalidRequest
from alma_mcp.events import DomainEvent
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.server.identity import principal_from_request
from alma_mcp.services import Services
from alma_mcp.store import Store
from alma_mcp.web.responses import from_alma_error, internal_error

POLL_SECONDS: Final = 1.0
BATCH: Final = 200
RETRY_MS: Final = 2000
EVENT_ID: Final = re.compile(r"^(\d{1,18})\.(\d{1,18})$")
HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
WAKE_KINDS: Final = frozenset({"ipr.transition", "deployment.step"})


@dataclass(frozen=True)
class Cursor:
    """The last IPR event id and the last deployment step id a client has seen."""

    ipr_event: int
    step: int

    def __str__(self) -> str:
        return f"{self.ipr_event}.{self.step}"

    @classmethod
    def parse(cls, raw: str) -> Cursor:
        """``"42.17"`` -> ``Cursor(42, 17)``.

        Raises:
            InvalidRequest: not two dot-separated non-negative integers.
        """
        match = EVENT_ID.match(raw.strip())
        if match is None:
            raise InvalidRequest(
                f"event id {raw[:40]!r} is not one this stream sent; send back the last 'id:' as is "
                "(two numbers joined by a dot, e.g. 42.17), or 0.0 to replay everything",
                data={"last_event_id": raw[:40]},
            )
        return cls(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class _Item:
    at: str
    kind: str
    row_id: int
    data: dict[str, Any]


def current_cursor(store: Store) -> Cursor:
    """The cursor of "now": the newest IPR event and the newest step."""
    with store.lock:
        ipr = store.db.execute("SELECT COALESCE(MAX(id), 0) FROM ipr_events").fetchone()[0]
        step = store.db.execute("SELECT COALESCE(MAX(id), 0) FROM deployment_steps").fetchone()[0]
    return Cursor(int(ipr), int(step))


def _read(store: Store, cursor: Cursor, limit: int) -> tuple[list[_Item], bool]:
    """Events after ``cursor`` (at most ``limit`` of each kind), and whether more are waiting."""
    with store.lock:
        ipr_rows = store.db.execute(
            "SELECT id, ipr_id, actor, action, from_state, to_state, at FROM ipr_events WHERE id > ? "
            "ORDER BY id LIMIT ?",
            [cursor.ipr_event, limit],
        ).fetchall()
        step_rows = store.db.execute(
            "SELECT s.id, s.deployment_id, d.ipr_id, s.resource, s.action, s.engine, s.wave, s.attempt, s.status, "
            "s.message, s.started_at, s.finished_at FROM deployment_steps s "
            "JOIN deployments d ON d.id = s.deployment_id WHERE s.id > ? ORDER BY s.id LIMIT ?",
            [cursor.step, limit],
        ).fetchall()
    ipr_items = [
        _Item(
            at,
            "ipr.transition",
            row_id,
            {
                "event_id": row_id,
                "ipr_id": ipr_id,
                "action": action,
                "from_state": from_state,
                "to_state": to_state,
                "actor": actor,
                "at": at,
            },
        )
        for row_id, ipr_id, actor, action, from_state, to_state, at in ipr_rows
    ]
    step_items: list[_Item] = []
    held_back = False
    for row in step_rows:
        step_id, deployment_id, ipr_id, resource, action, engine, wave, attempt, status, message, started, finished = (
            row
        )
        if finished is None:
            held_back = True  # still running: later steps wait behind it, so the cursor never passes an unsent step
            break
        data = {
            "step_id": step_id,
            "deployment_id": deployment_id,
            "ipr_id": ipr_id,
            "resource": resource,
            "action": action,
            "engine": engine,
            "wave": wave,
            "attempt": attempt,
            "status": status,
            "message": message,
            "started_at": started,
            "finished_at": finished,
        }
        step_items.append(_Item(finished, "deployment.step", step_id, data))
    more = len(ipr_rows) == limit or (len(step_rows) == limit and not held_back)
    return _merge(ipr_items, step_items), more


def _merge(first: list[_Item], second: list[_Item]) -> list[_Item]:
    """Interleave by time, keeping each list's own (id) order: a cursor only ever moves forward."""
    merged: list[_Item] = []
    i = j = 0
    while i < len(first) and j < len(second):
        if second[j].at < first[i].at:
            merged.append(second[j])
            j += 1
        else:
            merged.append(first[i])
            i += 1
    merged.extend(first[i:])
    merged.extend(second[j:])
    return merged


def format_event(event_id: str, kind: str, data: dict[str, Any]) -> str:
    """One SSE event: ``id``, ``event`` and a one-line JSON ``data`` field."""
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, sort_keys=True, separators=(',', ':'))}\n\n"


HEARTBEAT: Final = ": heartbeat\n\n"


async def event_stream(
    services: Services,
    principal: Principal,
    last_event_id: str | None,
    heartbeat: float,
    *,
    poll_seconds: float = POLL_SECONDS,
) -> AsyncGenerator[str, None]:
    """The stream's text, chunk by chunk (each chunk one event or one comment), forever.

    Raises:
        Forbidden: the principal lacks the ``viewer`` role.
        InvalidRequest: ``last_event_id`` is not one this stream sent.
    """
    principal.require(Role.VIEWER, "watch IPR and deployment events")
    store = services.store
    if last_event_id is not None:
        cursor = Cursor.parse(last_event_id)
    else:
        cursor = await anyio.to_thread.run_sync(current_cursor, store)
    loop = asyncio.get_running_loop()
    wake = anyio.Event()

    def set_wake() -> None:
        wake.set()

    def on_event(event: DomainEvent) -> None:
        # Publishers run on worker threads as well as on the loop: hand the wake-up to the loop.
        if event.kind in WAKE_KINDS:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the stream is gone
                loop.call_soon_threadsafe(set_wake)

    unsubscribe = services.bus.subscribe(on_event)
    try:
        yield f"retry: {RETRY_MS}\n\n"
        quiet_since = time.monotonic()
        while True:
            wake = anyio.Event()  # before reading: an event committed after the read wakes the wait
            items, more = await anyio.to_thread.run_sync(functools.partial(_read, store, cursor, BATCH))
            for item in items:
                if item.kind == "ipr.transition":
                    cursor = Cursor(item.row_id, cursor.step)
                else:
                    cursor = Cursor(cursor.ipr_event, item.row_id)
                yield format_event(str(cursor), item.kind, item.data)
            if items:
                quiet_since = time.monotonic()
            if more:
                continue
            until_heartbeat = quiet_since + heartbeat - time.monotonic()
            with anyio.move_on_after(max(0.0, min(poll_seconds, until_heartbeat))):
                await wake.wait()
            if time.monotonic() - quiet_since >= heartbeat:
                yield HEARTBEAT
                quiet_since = time.monotonic()
    finally:
        unsubscribe()


def events_endpoint(services: Services) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint for ``GET /events``."""

    async def events(request: Request) -> Response:
        principal = principal_from_request(request, services)
        last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        try:
            principal.require(Role.VIEWER, "watch IPR and deployment events")
            if last is not None:
                Cursor.parse(last)
        except AlmaError as err:
            return from_alma_error(err)
        except Exception as exc:  # the one error shape, never a trace
            return internal_error(exc)
        stream = event_stream(services, principal, last, services.settings.events_heartbeat_seconds)
        return StreamingResponse(stream, media_type="text/event-stream", headers=HEADERS)

    return events


def event_routes(services: Services) -> list[BaseRoute]:
    """``/events``, to mount under ``/api/v1`` (``rest_routes`` includes it)."""
    return [Route("/events", events_endpoint(services), methods=["GET"], name="events")]
