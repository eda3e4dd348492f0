"""Rate limits: a token bucket per client and route class, and the pure ASGI middleware using it.

A bucket holds at most ``burst`` tokens and refills at ``rpm / 60`` tokens per second; a request
takes one token or is refused with 429 (refusals take none). Buckets live in an LRU capped at
``ALMA_RATE_LIMIT_MAX_CLIENTS``, so memory stays bounded whatever the number of clients.

Route classes (the seed's defaults): ``global`` 60 rpm, ``streaming`` 20 (``/sse``,
``/api/v1/events``, ``GET /mcp``), ``generation`` 30, ``tools`` 40, ``crud`` 100. ``/mcp`` POSTs are
classified by the ``Mcp-Method``/``Mcp-Name`` headers of 2026 requests; legacy requests are not
parsed here and count as ``tools`` (the MCP-level middleware in ``alma_mcp.server.limits`` adds the
``generation`` class for generation tools on every transport).

The client is the authenticated principal (``scope["state"]["principal"]``, set by the auth
middleware, which runs before this one), else the peer address; ``X-Forwarded-For`` is believed
only when the peer is one of ``ALMA_TRUSTED_PROXIES``, and then its right-most untrusted address is
the client. A key's own limit (``scope["state"]["rate_limit_rpm"]``) replaces the per-minute rate
of every class for that key.

Every limited response carries ``X-RateLimit-Limit`` (rpm), ``X-RateLimit-Remaining`` (whole tokens
left) and ``X-RateLimit-Reset`` (seconds until the bucket is full); a 429 adds ``Retry-After``.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alma_mcp.errors import ConfigError
from alma_mcp.server.limits import tool_route_class
from alma_mcp.settings import Settings
from alma_mcp.web.responses import error_response

RouteClass = Literal["global", "streaming", "generation", "tools", "crud"]
ROUTE_CLASSES: tuple[RouteClass, ...] = ("global", "streaming", "generation", "tools", "crud")

EXEMPT_PATHS: tuple[str, ...] = ("/healthz", "/readyz", "/metrics")
"""Probes and the scraper are never limited."""

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_EPSILON = 1e-9  # float noise in refill arithmetic must not turn an exact 6 s into 7 s


def _ceil(value: float) -> int:
    return max(0, math.ceil(value - _EPSILON))


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one ``RateLimiter.check``."""

    allowed: bool
    route_class: str
    limit: int
    """Requests per minute of the bucket."""
    remaining: int
    """Whole tokens left after this request."""
    reset: int
    """Seconds until the bucket is full again (ceil)."""
    retry_after: int
    """Seconds until one token is available (ceil); 0 when allowed."""

    @property
    def message(self) -> str:
        return (
            f"rate limit exceeded: {self.limit} requests per minute for {self.route_class} routes; "
            f"retry in {self.retry_after} s"
        )

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class _ClassStats:
    __slots__ = ("rejected", "total")

    def __init__(self) -> None:
        self.total = 0
        self.rejected = 0


class RateLimiter:
    """Token buckets per (client, route class), bounded by an LRU.

    ``clock`` is injectable (monotonic seconds); ``on_reject(route_class)`` is called on every
    refusal (the metrics counter). Thread-safe: sync tools run on worker threads.
    """

    def __init__(
        self,
        limits: Mapping[str, int],
        *,
        burst: int = 10,
        max_clients: int = 10_000,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        missing = [c for c in ROUTE_CLASSES if c not in limits]
        if missing:
            raise ValueError(f"rate limits missing for route classes {missing}; give one rpm per class")
        if any(rpm < 1 for rpm in limits.values()):
            raise ValueError(f"rate limits must be at least 1 request per minute, got {dict(limits)}")
        self.limits: dict[str, int] = dict(limits)
        self.burst = max(1, burst)
        self.max_clients = max(1, max_clients)
        self._enabled = enabled
        self.clock = clock
        self.on_reject = on_reject
        self._lock = threading.Lock()
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._clients: OrderedDict[str, list[int]] = OrderedDict()  # client -> [requests, blocked]
        self._classes: dict[str, _ClassStats] = {c: _ClassStats() for c in self.limits}
        self._total = 0
        self._blocked = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_reject: Callable[[str], None] | None = None,
    ) -> RateLimiter:
        return cls(
            {
                "global": settings.rate_limit_global_rpm,
                "streaming": settings.rate_limit_streaming_rpm,
                "generation": settings.rate_limit_generation_rpm,
                "tools": settings.rate_limit_tools_rpm,
                "crud": settings.rate_limit_crud_rpm,
            },
            burst=settings.rate_limit_burst,
            max_clients=settings.rate_limit_max_clients,
            enabled=settings.rate_limit_enabled,
            clock=clock,
            on_reject=on_reject,
        )

    @property
    def enabled(self) -> bool:
        return self._enabled

    def limit_for(self, route_class: str, rpm: int | None = None) -> int:
        """The per-minute rate of a class, or of a key's own limit when it has one."""
        if rpm is not None and rpm >= 1:
            return rpm
        try:
            return self.limits[route_class]
        except KeyError:
            raise ValueError(f"unknown route class {route_class!r}; known: {', '.join(self.limits)}") from None

    def __len__(self) -> int:
        """Buckets held in memory (at most ``max_clients``)."""
        return len(self._buckets)

    def check(self, client: str, route_class: str, *, rpm: int | None = None) -> Decision:
        """Take one token from ``client``'s bucket of ``route_class``, or refuse."""
        limit = self.limit_for(route_class, rpm)
        capacity = float(self.burst)
        now = self.clock()
        key = (client, route_class)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = _Bucket(capacity, now)
                self._buckets[key] = bucket
                if len(self._buckets) > self.max_clients:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                elapsed = max(0.0, now - bucket.updated)
                bucket.tokens = min(capacity, bucket.tokens + elapsed * limit / 60.0)
                bucket.updated = now
            allowed = bucket.tokens >= 1.0 - _EPSILON
            if allowed:
                bucket.tokens = max(0.0, bucket.tokens - 1.0)
            tokens = bucket.tokens
            self._count(client, route_class, allowed)
        decision = Decision(
            allowed=allowed,
            route_class=route_class,
            limit=limit,
            remaining=math.floor(tokens + _EPSILON),
            reset=_ceil((capacity - tokens) * 60.0 / limit),
            retry_after=0 if allowed else max(1, _ceil((1.0 - tokens) * 60.0 / limit)),
        )
        if not allowed and self.on_reject is not None:
            self.on_reject(route_class)
        return decision

    def _count(self, client: str, route_class: str, allowed: bool) -> None:
        self._total += 1
        stats = self._classes.setdefault(route_class, _ClassStats())
        stats.total += 1
        counts = self._clients.get(client)
        if counts is None:
            counts = self._clients[client] = [0, 0]
            if len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
        counts[0] += 1
        if not allowed:
            self._blocked += 1
            stats.rejected += 1
            counts[1] += 1

    def stats(self) -> dict[str, Any]:
        """Counters since start: totals, block rate, clients held, the top 10 clients, per class."""
        with self._lock:
            active: dict[str, int] = dict.fromkeys(self._classes, 0)
            clients: set[str] = set()
            for client, route_class in self._buckets:
                active[route_class] = active.get(route_class, 0) + 1
                clients.add(client)
            top = heapq.nlargest(10, self._clients.items(), key=lambda item: item[1][0])
            return {
                "enabled": self._enabled,
                "burst": self.burst,
                "total_requests": self._total,
                "total_blocked": self._blocked,
                "block_rate": self._blocked / self._total if self._total else 0.0,
                "active_clients": len(clients),
                "top_clients": [{"client": c, "requests": n[0], "blocked": n[1]} for c, n in top],
                "classes": {
                    name: {
                        "limit": self.limits.get(name, 0),
                        "active": active.get(name, 0),
                        "total": s.total,
                        "rejected": s.rejected,
                    }
                    for name, s in self._classes.items()
                },
            }


def classify(scope: Scope) -> RouteClass | None:
    """The route class of an HTTP request; ``None`` for exempt paths."""
    path: str = scope["path"]
    if path in EXEMPT_PATHS:
        return None
    if path == "/mcp":
        method = scope.get("method", "GET")
        if method == "GET":
            return "streaming"  # the legacy standalone SSE stream
        if method != "POST":
            return "global"
        headers = _headers(scope)
        mcp_method = headers.get("mcp-method")
        if mcp_method is None:
            return "tools"  # legacy era: no body parsing here; per-tool classes come from the MCP layer
        if mcp_method == "tools/call":
            return tool_route_class(headers.get("mcp-name", ""))
        if mcp_method == "subscriptions/listen":
            return "streaming"
        return "global"
    if _under(path, "/sse") or _under(path, "/api/v1/events"):
        return "streaming"
    if _under(path, "/api/v1/tools"):
        return "tools"
    if _under(path, "/api/v1/iprs") or _under(path, "/api/v1/templates"):
        return "crud"
    return "global"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _headers(scope: Scope) -> dict[str, str]:
    # Later duplicates of a single-valued header lose; X-Forwarded-For is read separately.
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in reversed(scope.get("headers", []))}


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``ALMA_TRUSTED_PROXIES`` entries as networks.

    Raises:
        ConfigError: an entry is not an address or CIDR (the entry is named).
    """
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"ALMA_TRUSTED_PROXIES: {cidr!r} is not an IP address or CIDR (e.g. 10.0.0.0/8)",
                data={"value": cidr},
            ) from None
    return tuple(networks)


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(scope: Scope, trusted: tuple[IPNetwork, ...]) -> str:
    """The peer address, or the right-most untrusted ``X-Forwarded-For`` entry when the peer is trusted."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if not trusted:
        return peer
    peer_address = _address(peer)
    if peer_address is None or not any(peer_address in net for net in trusted):
        return peer
    forwarded = [
        part.strip()
        for name, value in scope.get("headers", [])
        if name.lower() == b"x-forwarded-for"
        for part in value.decode("latin-1").split(",")
        if part.strip()
    ]
    for hop in reversed(forwarded):
        address = _address(hop)
        if address is None:
            return peer  # a trusted proxy wrote garbage: fall back to the proxy itself
        if not any(address in net for net in trusted):
            return str(address)
    # Every hop is a trusted proxy: the left-most one is the closest thing to a client we have.
    first = _address(forwarded[0]) if forwarded else None
    return str(first) if first is not None else peer


def client_key(scope: Scope, trusted: tuple[IPNetwork, ...]) -> str:
    """The principal id the auth middleware stored, else the client address (never a key)."""
    state = scope.get("state")
    principal = state.get("principal") if isinstance(state, Mapping) else None
    principal_id = getattr(principal, "id", None)
    if isinstance(principal_id, str) and principal_id:
        return principal_id
    return client_address(scope, trusted)


def _key_rpm(scope: Scope) -> int | None:
    state = scope.get("state")
    rpm = state.get("rate_limit_rpm") if isinstance(state, Mapping) else None
    return rpm if isinstance(rpm, int) and not isinstance(rpm, bool) and rpm > 0 else None


class RateLimitMiddleware:
    """Pure ASGI: charge each HTTP request to its client's bucket; 429 in the one error shape.

    Runs after the auth middleware (it reads the principal from ``scope["state"]``). Records the
    client and the class it charged in ``scope["state"]`` (``rate_limit_client``,
    ``rate_limit_class``) so the MCP-level limiter neither charges the same request twice nor
    knows the client under another name.
    """

    def __init__(self, app: ASGIApp, limiter: RateLimiter, trusted_proxies: Iterable[str] = ()) -> None:
        """``trusted_proxies``: CIDRs (``settings.trusted_proxies``).

        Raises:
            ConfigError: a CIDR is invalid.
        """
        self.app = app
        self.limiter = limiter
        self.trusted = parse_networks(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limiter.enabled:
            await self.app(scope, receive, send)
            return
        route_class = classify(scope)
        if route_class is None:
            await self.app(scope, receive, send)
            return
        client = client_key(scope, self.trusted)
        decision = self.limiter.check(client, route_class, rpm=_key_rpm(scope))
        headers = decision.headers()
        if not decision.allowed:
            response = error_response(
                429,
                "rate_limit.exceeded",
                decision.message,
                {"route_class": route_class, "limit": decision.limit, "retry_after": decision.retry_after},
                headers,
            )
            await response(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["rate_limit_client"] = client
        state["rate_limit_class"] = route_class
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *raw]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
