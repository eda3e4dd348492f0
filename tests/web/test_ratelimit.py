"""Token buckets and the HTTP rate-limit middleware: exact counts, headers and 429s with a driven clock."""

from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from alma_mcp.errors import ConfigError
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.settings import Settings
from alma_mcp.web.ratelimit import (
    Decision,
    RateLimiter,
    RateLimitMiddleware,
    classify,
    client_address,
    parse_networks,
)

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8000"
SEED = {"global": 60, "streaming": 20, "generation": 30, "tools": 40, "crud": 100}


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(clock: Clock, **changes: int) -> RateLimiter:
    return RateLimiter({**SEED, **changes}, burst=10, max_clients=1000, clock=clock)


class StubAuth:
    """Stands in for the auth middleware: ``X-Test-Principal`` / ``X-Test-Rpm`` go to ``scope["state"]``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            state = scope.setdefault("state", {})
            if b"x-test-principal" in headers:
                state["principal"] = Principal(id=headers[b"x-test-principal"].decode(), roles=frozenset({Role.VIEWER}))
            if b"x-test-rpm" in headers:
                state["rate_limit_rpm"] = int(headers[b"x-test-rpm"])
        await self.app(scope, receive, send)


async def echo_state(request: Request) -> JSONResponse:
    state: dict[str, Any] = request.scope.get("state", {})
    return JSONResponse({"client": state.get("rate_limit_client"), "class": state.get("rate_limit_class")})


def app_with(rate_limiter: RateLimiter, trusted: tuple[str, ...] = ()) -> ASGIApp:
    paths = ["/healthz", "/metrics", "/mcp", "/sse", "/api/v1/tools/{name}", "/api/v1/iprs", "/api/v1/other"]
    routes = [Route(p, echo_state, methods=["GET", "POST", "DELETE"]) for p in paths]
    return StubAuth(RateLimitMiddleware(Starlette(routes=routes), rate_limiter, trusted))


def http(app: ASGIApp, client: tuple[str, int] = ("127.0.0.1", 50000)) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app, client=client), base_url=BASE)


def rate_headers(response: httpx2.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("x-ratelimit") or k == "retry-after"}


# -- the bucket ---------------------------------------------------------------------------------------


def test_a_burst_of_ten_then_refusal_with_exact_counts() -> None:
    clock = Clock()
    limits = limiter(clock)
    decisions = [limits.check("a", "global") for _ in range(10)]
    assert [d.allowed for d in decisions] == [True] * 10
    assert [d.remaining for d in decisions] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    refused = limits.check("a", "global")
    assert refused == Decision(allowed=False, route_class="global", limit=60, remaining=0, reset=10, retry_after=1)
    assert refused.message == "rate limit exceeded: 60 requests per minute for global routes; retry in 1 s"


def test_at_ten_rpm_six_seconds_refill_exactly_one_request() -> None:
    clock = Clock()
    limits = limiter(clock, **{"global": 10})
    assert all(limits.check("a", "global").allowed for _ in range(10))
    first = limits.check("a", "global")
    assert (first.allowed, first.retry_after, first.reset) == (False, 6, 60)
    clock.advance(5.999)
    assert not limits.check("a", "global").allowed
    clock.advance(0.001)
    again = limits.check("a", "global")
    assert (again.allowed, again.remaining, again.reset) == (True, 0, 60)
    after = limits.check("a", "global")
    assert (after.allowed, after.retry_after) == (False, 6)


def test_refill_stops_at_the_burst() -> None:
    clock = Clock()
    limits = limiter(clock)
    limits.check("a", "crud")
    clock.advance(3600)
    assert sum(limits.check("a", "crud").allowed for _ in range(12)) == 10


def test_classes_and_clients_have_separate_buckets() -> None:
    clock = Clock()
    limits = limiter(clock)
    assert all(limits.check("a", "tools").allowed for _ in range(10))
    assert not limits.check("a", "tools").allowed
    assert limits.check("a", "crud").allowed
    assert limits.check("b", "tools").allowed


def test_a_key_limit_replaces_the_class_rate() -> None:
    clock = Clock()
    limits = limiter(clock)
    assert all(limits.check("k", "tools", rpm=120).allowed for _ in range(10))
    refused = limits.check("k", "tools", rpm=120)
    assert (refused.limit, refused.retry_after, refused.reset) == (120, 1, 5)
    clock.advance(1.0)
    assert [limits.check("k", "tools", rpm=120).allowed for _ in range(3)] == [True, True, False]


def test_memory_stays_at_the_cap_with_100000_clients() -> None:
    clock = Clock()
    limits = RateLimiter.from_settings(Settings(db_path=":memory:"), clock=clock)
    assert limits.max_clients == 10_000
    for n in range(100_000):
        limits.check(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", "global")
    assert len(limits) == 10_000
    stats = limits.stats()
    assert stats["active_clients"] == 10_000
    assert stats["total_requests"] == 100_000
    # The least recently used were dropped: the first client starts again from a full bucket.
    assert limits.check("10.0.0.0", "global").remaining == 9
    assert len(limits) == 10_000


def test_stats_count_requests_blocks_and_top_clients() -> None:
    clock = Clock()
    rejected: list[str] = []
    limits = RateLimiter(SEED, burst=10, max_clients=1000, clock=clock, on_reject=rejected.append)
    for _ in range(12):
        limits.check("key:ops", "tools")
    for _ in range(3):
        limits.check("192.0.2.7", "crud")
    stats = limits.stats()
    assert stats["total_requests"] == 15
    assert stats["total_blocked"] == 2
    assert stats["block_rate"] == pytest.approx(2 / 15)
    assert stats["active_clients"] == 2
    assert stats["top_clients"] == [
        {"client": "key:ops", "requests": 12, "blocked": 2},
        {"client": "192.0.2.7", "requests": 3, "blocked": 0},
    ]
    assert stats["classes"]["tools"] == {"limit": 40, "active": 1, "total": 12, "rejected": 2}
    assert stats["classes"]["crud"] == {"limit": 100, "active": 1, "total": 3, "rejected": 0}
    assert stats["classes"]["global"] == {"limit": 60, "active": 0, "total": 0, "rejected": 0}
    assert rejected == ["tools", "tools"]


def test_settings_give_the_seed_defaults() -> None:
    limits = RateLimiter.from_settings(Settings(db_path=":memory:"))
    assert limits.limits == SEED
    assert limits.burst == 10
    assert limits.enabled


def test_an_unknown_route_class_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown route class 'bulk'"):
        limiter(Clock()).check("a", "bulk")


# -- classification -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        ("GET", "/healthz", {}, None),
        ("GET", "/metrics", {}, None),
        ("POST", "/mcp", {}, "tools"),
        ("POST", "/mcp", {"mcp-method": "tools/call", "mcp-name": "validate_blueprint"}, "tools"),
        ("POST", "/mcp", {"mcp-method": "tools/call", "mcp-name": "create_blueprint"}, "generation"),
        ("POST", "/mcp", {"mcp-method": "tools/call", "mcp-name": "customize_template"}, "generation"),
        ("POST", "/mcp", {"mcp-method": "tools/list"}, "global"),
        ("POST", "/mcp", {"mcp-method": "subscriptions/listen"}, "streaming"),
        ("GET", "/mcp", {}, "streaming"),
        ("DELETE", "/mcp", {}, "global"),
        ("GET", "/sse", {}, "streaming"),
        ("GET", "/api/v1/events", {}, "streaming"),
        ("POST", "/api/v1/tools/validate_blueprint", {}, "tools"),
        ("GET", "/api/v1/tools", {}, "tools"),
        ("GET", "/api/v1/iprs/3", {}, "crud"),
        ("POST", "/api/v1/templates/redis-cluster/customize", {}, "crud"),
        ("GET", "/api/v1/toolsmith", {}, "global"),
        ("POST", "/messages/", {}, "global"),
        ("GET", "/", {}, "global"),
    ],
)
def test_routes_are_classified(method: str, path: str, headers: dict[str, str], expected: str | None) -> None:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    assert classify(scope) == expected


# -- client addresses ---------------------------------------------------------------------------------


def scope_from(peer: str, forwarded: list[str]) -> Scope:
    return {
        "type": "http",
        "client": (peer, 1234),
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded],
    }


def test_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    trusted = parse_networks(["10.0.0.0/8"])
    assert client_address(scope_from("203.0.113.9", ["198.51.100.1"]), trusted) == "203.0.113.9"
    assert client_address(scope_from("10.0.0.2", ["198.51.100.1"]), ()) == "10.0.0.2"


def test_the_rightmost_untrusted_forwarded_address_is_the_client() -> None:
    trusted = parse_networks(["10.0.0.0/8", "fd00::/8"])
    spoofed = scope_from("10.0.0.2", ["1.2.3.4, 198.51.100.7, 10.1.1.1"])
    assert client_address(spoofed, trusted) == "198.51.100.7"
    assert client_address(scope_from("10.0.0.2", ["1.2.3.4", "198.51.100.8"]), trusted) == "198.51.100.8"
    assert client_address(scope_from("fd00::1", ["2001:db8::5"]), trusted) == "2001:db8::5"
    assert client_address(scope_from("10.0.0.2", ["10.3.3.3, 10.2.2.2"]), trusted) == "10.3.3.3"
    assert client_address(scope_from("10.0.0.2", ["not-an-ip"]), trusted) == "10.0.0.2"
    assert client_address(scope_from("10.0.0.2", []), trusted) == "10.0.0.2"


def test_an_invalid_trusted_proxy_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_networks(["10.0.0.0/33"])
    assert "'10.0.0.0/33' is not an IP address or CIDR" in caught.value.message
    assert caught.value.code == "config.invalid"


# -- the middleware -----------------------------------------------------------------------------------


async def test_every_response_carries_exact_rate_limit_headers() -> None:
    clock = Clock()
    async with http(app_with(limiter(clock))) as h:
        first = await h.get("/api/v1/other")
        assert first.status_code == 200
        assert rate_headers(first) == {
            "x-ratelimit-limit": "60",
            "x-ratelimit-remaining": "9",
            "x-ratelimit-reset": "1",
        }
        tools = await h.post("/api/v1/tools/validate_blueprint")
        assert rate_headers(tools) == {
            "x-ratelimit-limit": "40",
            "x-ratelimit-remaining": "9",
            "x-ratelimit-reset": "2",
        }
        clock.advance(0.5)
        again = await h.get("/api/v1/other")
        assert rate_headers(again) == {
            "x-ratelimit-limit": "60",
            "x-ratelimit-remaining": "8",
            "x-ratelimit-reset": "2",
        }


async def test_the_eleventh_request_gets_a_429_in_the_one_error_shape() -> None:
    clock = Clock()
    async with http(app_with(limiter(clock))) as h:
        for _ in range(10):
            assert (await h.post("/api/v1/tools/validate_blueprint")).status_code == 200
        refused = await h.post("/api/v1/tools/validate_blueprint")
        assert refused.status_code == 429
        assert rate_headers(refused) == {
            "x-ratelimit-limit": "40",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": "15",
            "retry-after": "2",
        }
        assert refused.json() == {
            "ok": False,
            "status": 429,
            "error": {
                "code": "rate_limit.exceeded",
                "message": "rate limit exceeded: 40 requests per minute for tools routes; retry in 2 s",
                "data": {"route_class": "tools", "limit": 40, "retry_after": 2},
            },
        }
        clock.advance(1.5)  # 1.5 s at 40 rpm = exactly one token
        assert (await h.post("/api/v1/tools/validate_blueprint")).status_code == 200
        assert (await h.post("/api/v1/tools/validate_blueprint")).status_code == 429


async def test_exempt_paths_are_never_limited_nor_marked() -> None:
    clock = Clock()
    async with http(app_with(limiter(clock))) as h:
        for _ in range(30):
            for path in ("/healthz", "/metrics"):
                response = await h.get(path)
                assert response.status_code == 200
                assert rate_headers(response) == {}


async def test_a_disabled_limiter_lets_everything_through_unmarked() -> None:
    limits = RateLimiter.from_settings(Settings(db_path=":memory:", rate_limit_enabled=False), clock=Clock())
    async with http(app_with(limits)) as h:
        for _ in range(30):
            response = await h.post("/api/v1/tools/x")
            assert response.status_code == 200
            assert rate_headers(response) == {}


async def test_principals_have_their_own_buckets_and_key_limits() -> None:
    clock = Clock()
    limits = limiter(clock)
    async with http(app_with(limits)) as h:
        for _ in range(10):
            await h.get("/api/v1/iprs", headers={"x-test-principal": "key:alice"})
        refused = await h.get("/api/v1/iprs", headers={"x-test-principal": "key:alice"})
        assert refused.status_code == 429
        assert (await h.get("/api/v1/iprs", headers={"x-test-principal": "key:bob"})).status_code == 200
        assert (await h.get("/api/v1/iprs")).status_code == 200  # the address is another client
        fast = await h.get("/api/v1/iprs", headers={"x-test-principal": "key:carol", "x-test-rpm": "600"})
        assert rate_headers(fast)["x-ratelimit-limit"] == "600"
        assert rate_headers(fast)["x-ratelimit-reset"] == "1"
    clients = {c["client"]: c["requests"] for c in limits.stats()["top_clients"]}
    assert clients == {"key:alice": 11, "key:bob": 1, "127.0.0.1": 1, "key:carol": 1}


async def test_the_charged_client_and_class_reach_the_app() -> None:
    async with http(app_with(limiter(Clock()))) as h:
        body = (await h.post("/mcp", headers={"mcp-method": "tools/call", "mcp-name": "create_blueprint"})).json()
        assert body == {"client": "127.0.0.1", "class": "generation"}
        body = (await h.get("/sse", headers={"x-test-principal": "key:alice"})).json()
        assert body == {"client": "key:alice", "class": "streaming"}


async def test_behind_a_trusted_proxy_forwarded_clients_get_their_own_buckets() -> None:
    clock = Clock()
    app = app_with(limiter(clock), trusted=("10.0.0.0/8",))
    async with http(app, client=("10.0.0.2", 40000)) as proxy:
        for _ in range(10):
            assert (await proxy.get("/api/v1/other", headers={"x-forwarded-for": "198.51.100.1"})).status_code == 200
        assert (await proxy.get("/api/v1/other", headers={"x-forwarded-for": "198.51.100.1"})).status_code == 429
        spoof = {"x-forwarded-for": "198.51.100.2, 198.51.100.1"}  # the client wrote the left part itself
        assert (await proxy.get("/api/v1/other", headers=spoof)).status_code == 429
        other = await proxy.get("/api/v1/other", headers={"x-forwarded-for": "198.51.100.3"})
        assert other.json()["client"] == "198.51.100.3"
    async with http(app, client=("203.0.113.5", 40000)) as direct:
        body = (await direct.get("/api/v1/other", headers={"x-forwarded-for": "198.51.100.9"})).json()
        assert body["client"] == "203.0.113.5"
