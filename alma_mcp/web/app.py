"""``create_app``: the HTTP side app around one MCP server.

Routes: ``/mcp`` (Streamable HTTP, both protocol eras), ``/sse`` + ``/messages/`` (legacy SSE),
``/healthz``. The MCP session manager runs inside this app's lifespan (a mounted sub-app's lifespan
never runs). Host and Origin checks stay on: loopback names are always allowed, plus whatever
``ALMA_ALLOWED_HOSTS`` / ``ALMA_ALLOWED_ORIGINS`` add.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from alma_mcp import __version__
from alma_mcp.keys import KeyStore
from alma_mcp.server.app import build_server
from alma_mcp.services import Services
from alma_mcp.settings import Settings
from alma_mcp.web.auth import AuthMiddleware
from alma_mcp.web.hardening import BodySizeLimitMiddleware
from alma_mcp.web.metrics import Metrics, MetricsMiddleware, install_tool_metrics, metrics_endpoint
from alma_mcp.web.ratelimit import RateLimiter, RateLimitMiddleware
from alma_mcp.web.rest import health_report, rest_routes

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


@dataclass
class SideApp:
    """The HTTP side app and the pieces tests, benchmarks and the REST routes share."""

    app: Starlette
    server: MCPServer[Services]
    limiter: RateLimiter
    metrics: Metrics


def create_side_app(services: Services, *, authenticate: bool = False) -> SideApp:
    """Build the MCP server and the side app around it, fresh (the session manager runs once per instance).

    Pure ASGI middleware, outermost first: metrics -> auth (when ``authenticate``) -> rate limit ->
    body-size limit -> routes. One limiter serves HTTP routes and MCP tool calls (charged once); one
    per-app metrics registry records both and the domain events. Without ``authenticate`` every
    HTTP caller is the local principal: only for a loopback bind with no API keys (``alma-mcp
    serve`` decides; a public bind without keys is refused).
    """
    metrics = Metrics()
    limiter = RateLimiter.from_settings(services.settings, on_reject=metrics.record_rate_limit_rejection)
    server = build_server(services, limiter=limiter)
    install_tool_metrics(server, metrics)
    return SideApp(
        app=create_app(services, server, authenticate=authenticate, limiter=limiter, metrics=metrics),
        server=server,
        limiter=limiter,
        metrics=metrics,
    )


def create_app(
    services: Services,
    server: MCPServer[Services],
    *,
    authenticate: bool = False,
    limiter: RateLimiter | None = None,
    metrics: Metrics | None = None,
) -> Starlette:
    """The side app around an already built server (``create_side_app`` builds both)."""
    settings = services.settings
    security = transport_security(settings)
    http_app = server.streamable_http_app(streamable_http_path="/mcp", transport_security=security)
    sse_app = server.sse_app(sse_path="/sse", message_path="/messages/", transport_security=security)
    metrics = metrics if metrics is not None else Metrics()
    limiter = limiter if limiter is not None else RateLimiter.from_settings(settings)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    async def readyz(_: Request) -> JSONResponse:
        # Readiness for a load balancer: statuses only (no details) so it can stay unauthenticated.
        report = await health_report(services)
        body = {
            "status": report.status,
            "database": report.database.status,
            "engines": {name: c.status for name, c in report.engines.items()},
        }
        return JSONResponse(body, status_code=503 if report.status == "unhealthy" else 200)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        unsubscribe = services.bus.subscribe(metrics.subscriber)
        try:
            async with server.session_manager.run():
                yield
        finally:
            unsubscribe()

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint(metrics), methods=["GET"]),
    ]
    routes.extend(rest_routes(services, server, rate_stats=limiter.stats, audit=services.audit))
    routes.extend(http_app.routes)
    routes.extend(sse_app.routes)
    middleware: list[Middleware] = [Middleware(MetricsMiddleware, metrics=metrics)]
    if settings.cors_origins:
        # Outside auth, so preflight OPTIONS requests are answered; only the configured origins.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=[
                    "authorization",
                    "x-api-key",
                    "content-type",
                    "mcp-protocol-version",
                    "mcp-session-id",
                    "last-event-id",
                ],
                expose_headers=["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"],
            )
        )
    if authenticate:
        middleware.append(
            Middleware(
                AuthMiddleware,
                keys=KeyStore(services.store),
                bus=services.bus,
                metrics_public=settings.metrics_public,
                exempt=("/healthz", "/readyz"),
            )
        )
    middleware.append(Middleware(RateLimitMiddleware, limiter=limiter, trusted_proxies=settings.trusted_proxies))
    middleware.append(Middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes))
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
