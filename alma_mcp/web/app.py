"""``create_app``: the HTTP side app around one MCP server.

Routes: ``/mcp`` (Streamable HTTP, both protocol eras), ``/sse`` + ``/messages/`` (legacy SSE),
``/healthz``. The MCP session manager runs inside this app's lifespan (a mounted sub-app's lifespan
never runs). Host and Origin checks stay on: loopback names are always allowed, plus whatever
``ALMA_ALLOWED_HOSTS`` / ``ALMA_ALLOWED_ORIGINS`` add.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from alma_mcp import __version__
from alma_mcp.keys import KeyStore
from alma_mcp.services import Services
from alma_mcp.settings import Settings
from alma_mcp.web.auth import AuthMiddleware
from alma_mcp.web.hardening import BodySizeLimitMiddleware

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection with loopback plus the configured hosts and origins."""
    hosts = [f"{h}:*" for h in LOOPBACK_HOSTS]
    origins = [f"{scheme}://{h}:*" for h in LOOPBACK_HOSTS for scheme in ("http", "https")]
    for host in settings.allowed_hosts:
        # "name" admits the name on any port; "name:port" admits exactly that.
        hosts.extend([host] if host.rsplit(":", 1)[-1].isdigit() else [host, f"{host}:*"])
    origins.extend(settings.allowed_origins)
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def create_app(services: Services, server: MCPServer[Services], *, authenticate: bool = False) -> Starlette:
    """The side app. Build a fresh one per process (the session manager runs once per instance).

    Pure ASGI middleware, outermost first: auth (when ``authenticate``) -> body-size limit -> routes.
    Without ``authenticate`` every HTTP caller is the local principal: only for a loopback bind
    with no API keys (``alma-mcp serve`` decides; a public bind without keys is refused).
    """
    security = transport_security(services.settings)
    http_app = server.streamable_http_app(streamable_http_path="/mcp", transport_security=security)
    sse_app = server.sse_app(sse_path="/sse", message_path="/messages/", transport_security=security)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with server.session_manager.run():
            yield

    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"])]
    routes.extend(http_app.routes)
    routes.extend(sse_app.routes)
    middleware: list[Middleware] = []
    if authenticate:
        middleware.append(
            Middleware(
                AuthMiddleware,
                keys=KeyStore(services.store),
                bus=services.bus,
                metrics_public=services.settings.metrics_public,
            )
        )
    middleware.append(Middleware(BodySizeLimitMiddleware, max_bytes=services.settings.max_body_bytes))
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
