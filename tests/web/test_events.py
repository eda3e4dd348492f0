"""/api/v1/events: Server-Sent Events of IPR transitions and deployment steps, resumable, with heartbeats."""

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from starlette.applications import Starlette

from alma_mcp.errors import Forbidden, InvalidRequest
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.server.app import build_server
from alma_mcp.services import Services
from alma_mcp.settings import Settings
from alma_mcp.store import utc_now
from alma_mcp.web.events import Cursor, event_stream, format_event
from alma_mcp.web.rest import rest_routes

pytestmark = pytest.mark.anyio

SHOP: dict[str, Any] = {
    "name": "shop",
    "resources": [
        {"name": "db", "type": "database", "provider": "simulation"},
        {"name": "web", "type": "compute", "provider": "simulation", "dependencies": ["db"]},
    ],
}
MODEL = Principal(id="mcp:model", roles=frozenset({Role.VIEWER, Role.PROPOSER, Role.DEPLOYER}))
ALICE = Principal(id="user:alice", roles=frozenset({Role.VIEWER, Role.APPROVER}))
READER = Principal(id="key:reader", roles=frozenset({Role.VIEWER}))
NOBODY = Principal(id="key:nobody", roles=frozenset())
LONG = 60.0  # a heartbeat or poll interval that a test never waits for


@pytest.fixture
def settings() -> Settings:
    return Settings(db_path=":memory:", sim_time_scale=0.0)  # simulated deploys take no time


def parse(chunk: str) -> dict[str, Any]:
    """One SSE event chunk -> {"id", "event", "data"}."""
    fields = dict(line.split(": ", 1) for line in chunk.strip("\n").split("\n"))
    return {"id": fields["id"], "event": fields["event"], "data": json.loads(fields["data"])}


async def take(stream: AsyncIterator[str], count: int, *, skip_heartbeats: bool = True) -> list[str]:
    chunks: list[str] = []
    with anyio.fail_after(5):
        while len(chunks) < count:
            chunk = await anext(stream)
            if chunk.startswith("retry:") or (skip_heartbeats and chunk.startswith(":")):
                continue
            chunks.append(chunk)
    return chunks


async def deployed_ipr(services: Services) -> int:
    view = services.iprs.create(MODEL, title="shop", blueprint=SHOP)
    services.iprs.review(ALICE, view.ipr.id, "approve")
    outcome = await services.orchestrator.deploy(MODEL, view.ipr.id)
    assert outcome.state == "succeeded"
    return view.ipr.id


def test_cursors_parse_and_print() -> None:
    assert Cursor.parse("42.17") == Cursor(42, 17)
    assert str(Cursor(3, 0)) == "3.0"
    for bad in ("", "1", "1.", ".1", "a.b", "1.2.3", "-1.2", "1e3.0", "9" * 19 + ".0"):
        with pytest.raises(InvalidRequest):
            Cursor.parse(bad)


def test_an_event_is_id_event_and_one_line_of_json() -> None:
    assert format_event("3.1", "ipr.transition", {"b": 1, "a": "x\ny"}) == (
        'id: 3.1\nevent: ipr.transition\ndata: {"a":"x\\ny","b":1}\n\n'
    )


async def test_the_stream_starts_with_a_retry_hint_and_replays_from_zero(services: Services) -> None:
    view = services.iprs.create(MODEL, title="shop", blueprint=SHOP)
    stream = event_stream(services, READER, "0.0", LONG)
    try:
        assert await anext(stream) == "retry: 2000\n\n"
        [chunk] = await take(stream, 1)
    finally:
        await stream.aclose()
    event = parse(chunk)
    assert event["id"] == "1.0"
    assert event["event"] == "ipr.transition"
    assert event["data"] == {
        "event_id": 1,
        "ipr_id": view.ipr.id,
        "action": "open",
        "from_state": None,
        "to_state": "open",
        "actor": "mcp:model",
        "at": view.events[0].at,
    }


async def test_transitions_and_steps_interleave_with_both_cursors_in_every_id(services: Services) -> None:
    ipr_id = await deployed_ipr(services)
    stream = event_stream(services, READER, "0.0", LONG)
    try:
        events = [parse(c) for c in await take(stream, 6)]
    finally:
        await stream.aclose()
    assert [(e["event"], e["id"]) for e in events] == [
        ("ipr.transition", "1.0"),  # open
        ("ipr.transition", "2.0"),  # approve
        ("ipr.transition", "3.0"),  # deploy
        ("deployment.step", "3.1"),  # db
        ("deployment.step", "3.2"),  # web
        ("ipr.transition", "4.2"),  # succeed
    ]
    step = events[3]["data"]
    assert {k: step[k] for k in ("step_id", "ipr_id", "resource", "action", "engine", "attempt", "status")} == {
        "step_id": 1,
        "ipr_id": ipr_id,
        "resource": "db",
        "action": "create",
        "engine": "simulation",
        "attempt": 1,
        "status": "succeeded",
    }
    assert step["finished_at"] is not None


@pytest.mark.parametrize("resume_after", range(6))
async def test_resuming_from_any_id_loses_and_repeats_nothing(services: Services, resume_after: int) -> None:
    await deployed_ipr(services)
    first = event_stream(services, READER, "0.0", LONG)
    try:
        everything = await take(first, 6)
    finally:
        await first.aclose()
    last_seen = parse(everything[resume_after])["id"]
    resumed = event_stream(services, READER, last_seen, LONG)
    try:
        rest = await take(resumed, 5 - resume_after) if resume_after < 5 else []
    finally:
        await resumed.aclose()
    assert everything[: resume_after + 1] + rest == everything


async def test_without_last_event_id_the_stream_starts_at_what_happens_next(services: Services) -> None:
    services.iprs.create(MODEL, title="old", blueprint=SHOP)
    stream = event_stream(services, READER, None, LONG, poll_seconds=LONG)
    try:
        assert await anext(stream) == "retry: 2000\n\n"
        new = await anyio.to_thread.run_sync(lambda: services.iprs.create(MODEL, title="new", blueprint=SHOP))
        [chunk] = await take(stream, 1)  # woken by the event bus: the poll interval is a minute
    finally:
        await stream.aclose()
    event = parse(chunk)
    assert (event["id"], event["data"]["ipr_id"]) == ("2.0", new.ipr.id)


async def test_a_quiet_stream_sends_heartbeats(services: Services) -> None:
    stream = event_stream(services, READER, None, 0.05, poll_seconds=LONG)
    try:
        chunks = await take(stream, 2, skip_heartbeats=False)
    finally:
        await stream.aclose()
    assert chunks == [": heartbeat\n\n", ": heartbeat\n\n"]


async def test_a_running_step_holds_back_later_steps_until_it_finishes(services: Services) -> None:
    view = services.iprs.create(MODEL, title="shop", blueprint=SHOP)
    now = utc_now()
    with services.store.atomic() as db:
        deployment = db.execute(
            "INSERT INTO deployments (ipr_id, kind, state, actor, started_at) VALUES (?, 'deploy', 'running', 'x', ?)",
            [view.ipr.id, now],
        ).lastrowid
        insert = (
            "INSERT INTO deployment_steps (deployment_id, resource, action, engine, wave, attempt, status, "
            "started_at, finished_at) VALUES (?, ?, 'create', 'simulation', 0, 1, ?, ?, ?)"
        )
        db.execute(insert, [deployment, "db", "running", now, None])
        db.execute(insert, [deployment, "web", "succeeded", now, now])
    stream = event_stream(services, READER, "1.0", 0.05, poll_seconds=0.01)
    try:
        assert await take(stream, 1, skip_heartbeats=False) == [": heartbeat\n\n"]  # step 2 waits behind step 1
        with services.store.atomic() as db:
            db.execute("UPDATE deployment_steps SET status = 'succeeded', finished_at = ? WHERE resource = 'db'", [now])
        events = [parse(c) for c in await take(stream, 2)]  # found by polling: no bus event was published
    finally:
        await stream.aclose()
    assert [(e["id"], e["data"]["resource"]) for e in events] == [("1.1", "db"), ("1.2", "web")]


async def test_watching_needs_the_viewer_role(services: Services) -> None:
    stream = event_stream(services, NOBODY, None, LONG)
    with pytest.raises(Forbidden):
        await anext(stream)


async def test_an_invalid_last_event_id_is_refused(services: Services) -> None:
    stream = event_stream(services, READER, "yesterday", LONG)
    with pytest.raises(InvalidRequest):
        await anext(stream)


@pytest.fixture
def app(services: Services) -> Starlette:
    return Starlette(routes=rest_routes(services, build_server(services)))


async def test_http_refusals_come_before_the_stream_in_the_error_shape(app: Starlette) -> None:
    async def as_nobody(scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["principal"] = NOBODY
        await app(scope, receive, send)

    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=as_nobody), base_url="http://127.0.0.1") as h:
        refused = await h.get("/api/v1/events")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "auth.forbidden"
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1") as h:
        bad = await h.get("/api/v1/events", headers={"Last-Event-ID": "nope"})
        bad_query = await h.get("/api/v1/events", params={"last_event_id": "1"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "request.invalid")
    assert bad_query.status_code == 400


async def test_events_stream_through_a_real_server(services: Services, app: Starlette) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections wait in the backlog until uvicorn accepts them: no start-up polling
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", http="h11"))
    services.iprs.create(MODEL, title="before", blueprint=SHOP)
    received: list[dict[str, Any]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        try:
            async with (
                httpx2.AsyncClient(timeout=10) as http,
                http.stream("GET", f"http://127.0.0.1:{port}/api/v1/events", headers={"Last-Event-ID": "0.0"}) as r,
            ):
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                assert r.headers["cache-control"] == "no-cache"
                block: list[str] = []
                with anyio.fail_after(10):
                    async for line in r.aiter_lines():
                        if line:
                            block.append(line)
                            continue
                        if block and not block[0].startswith(("retry:", ":")):
                            received.append(parse("\n".join(block)))
                            if len(received) == 1:  # the replayed event arrived: now make a new one
                                await anyio.to_thread.run_sync(
                                    lambda: services.iprs.create(MODEL, title="after", blueprint=SHOP)
                                )
                            if len(received) == 2:
                                break
                        block = []
        finally:
            server.should_exit = True
    assert [(e["id"], e["data"]["ipr_id"]) for e in received] == [("1.0", 1), ("2.0", 2)]
