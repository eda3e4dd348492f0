"""``AuthMiddleware``: every HTTP request carries an API key, except the exempt paths.

Pure ASGI (``BaseHTTPMiddleware`` breaks streaming responses). A key travels as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, never in the URL: a request with an
``api_key``, ``apikey``, ``key``, ``token`` or ``access_token`` query parameter is refused with 400
``request.invalid``, because URLs end up in access logs and browser history.

- exempt paths (default ``/healthz``): no key needed;
- ``/metrics``: a key with the viewer role, unless ``metrics_public``;
- everything else: any active key.

No key, or an unknown, revoked or mistyped one: 401 ``auth.unauthenticated`` with
``WWW-Authenticate: Bearer`` (RFC 6750), in the one JSON error shape. Each refusal emits an
``auth.failure`` event with ``reason`` (``missing_key``, ``invalid_key``, ``key_in_query``,
``forbidden``), ``path`` and ``client``; never the key. On success the key's principal is in
``scope["state"]["principal"]`` and its limit in ``scope["state"]["rate_limit_rpm"]`` (``None``:
the server's defaults), where Starlette's ``request.state`` and the MCP tools find them.

WebSocket connections (the app serves none) are closed: only HTTP is authenticated, so nothing
else may pass unauthenticated.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final
from urllib.parse import parse_qsl

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from alma_mcp.errors import Forbidden
from alma_mcp.events import EventBus
from alma_mcp.ipr.principals import Role
from alma_mcp.keys import ApiKeyInfo, KeyStore, Unauthenticated
from alma_mcp.web.responses import error_response, from_alma_error

CACHE_SECONDS: Final = 2.0
CACHE_ENTRIES: Final = 1024

METRICS_PATH: Final = "/metrics"
KEY_QUERY_PARAMETERS: Final = frozenset({"api_key", "apikey", "key", "token", "access_token"})
HOW_TO_SEND: Final = "send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


def key_from_headers(scope: Scope) -> str | None:
    """The key from ``Authorization: Bearer`` (preferred) or ``X-API-Key``; ``None`` when neither."""
    bearer = api_key = None
    for name, value in scope["headers"]:
        if name == b"authorization" and bearer is None:
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                bearer = credentials.strip()
        elif name == b"x-api-key" and api_key is None and value.strip():
            api_key = value.decode("latin-1").strip()
    return bearer or api_key


def keys_in_query(scope: Scope) -> list[str]:
    """Query parameters that look like a key was put in the URL, as named in the request."""
    query = scope.get("query_string", b"").decode("latin-1")
    names = {name for name, _ in parse_qsl(query, keep_blank_values=True)}
    return sorted(name for name in names if name.lower() in KEY_QUERY_PARAMETERS)


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        keys: KeyStore,
        bus: EventBus,
        *,
        metrics_public: bool,
        exempt: Sequence[str] = ("/healthz",),
    ) -> None:
        self.app = app
        self.keys = keys
        self.bus = bus
        self.metrics_public = metrics_public
        self.exempt = frozenset(exempt)
        # Successful lookups for a moment: a busy client then costs no thread hop and no query per
        # request. Keyed by a digest (the raw key is not kept); revocation takes effect within
        # CACHE_SECONDS; failures are never cached.
        self._cache: OrderedDict[bytes, tuple[ApiKeyInfo, float]] = OrderedDict()

    async def _authenticate(self, raw: str) -> ApiKeyInfo | None:
        digest = hashlib.sha256(raw.encode()).digest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        info = await anyio.to_thread.run_sync(self.keys.authenticate, raw)
        if info is None:
            self._cache.pop(digest, None)
            return None
        self._cache[digest] = (info, now + CACHE_SECONDS)
        self._cache.move_to_end(digest)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return info

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        in_query = keys_in_query(scope)
        if in_query:
            self._failed("key_in_query", scope)
            listed = ", ".join(repr(name) for name in in_query)
            refusal = error_response(
                400,
                "request.invalid",
                f"API keys belong in headers, never in the URL (query parameter {listed}): {HOW_TO_SEND}; "
                "if a real key was sent this way, revoke it (alma-mcp keys revoke ID)",
                {"parameters": in_query},
            )
            await refusal(scope, receive, send)
            return
        if path in self.exempt or (path == METRICS_PATH and self.metrics_public):
            await self.app(scope, receive, send)
            return
        raw = key_from_headers(scope)
        if raw is None:
            self._failed("missing_key", scope)
            err = Unauthenticated(f"an API key is required: {HOW_TO_SEND} (create one with alma-mcp keys create)")
            await from_alma_error(err, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        info = await self._authenticate(raw)
        if info is None:
            self._failed("invalid_key", scope)
            err = Unauthenticated("the API key is unknown, revoked or mistyped; ask an admin for a valid key")
            await from_alma_error(err, {"WWW-Authenticate": 'Bearer error="invalid_token"'})(scope, receive, send)
            return
        principal = self.keys.principal(info)
        if path == METRICS_PATH:
            try:
                principal.require(Role.VIEWER, "read metrics")
            except Forbidden as denied:
                self._failed("forbidden", scope)
                await from_alma_error(denied)(scope, receive, send)
                return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state["rate_limit_rpm"] = info.rate_limit_rpm
        await self.app(scope, receive, send)

    def _failed(self, reason: str, scope: Scope) -> None:
        self.bus.emit("auth.failure", reason=reason, path=scope["path"], client=client_of(scope))
