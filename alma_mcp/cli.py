"""The ``alma-mcp`` command line: serve (stdio or HTTP), scripted tool calls, templates.

Logs go to stderr only: over stdio, stdout belongs to the protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from alma_mcp import __version__, gcpause

if TYPE_CHECKING:
    from alma_mcp.settings import Settings

logger = logging.getLogger("alma_mcp")

EXIT_OK = 0
EXIT_TOOL_ERROR = 1
EXIT_USAGE = 2


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def claude_desktop_snippet() -> str:
    """The ``claude_desktop_config.json`` entry that starts this server over stdio."""
    # The absolute path of this very executable: Claude Desktop does not search the virtualenv's PATH.
    found = shutil.which(sys.argv[0]) if sys.argv and sys.argv[0].endswith("alma-mcp") else None
    command = os.path.abspath(found) if found else shutil.which("alma-mcp") or "alma-mcp"
    return json.dumps({"mcpServers": {"alma": {"command": command, "args": ["serve"]}}}, indent=2)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _build_parser() -> argparse.ArgumentParser:
    from alma_mcp import cli_audit, cli_keys

    parser = argparse.ArgumentParser(
        prog="alma-mcp",
        description="Infrastructure as conversation: an MCP server for blueprints, reviewed changes and deploys.",
    )
    parser.add_argument("--version", action="version", version=f"alma-mcp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the MCP server (stdio by default, or HTTP)")
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    serve.add_argument("--host", default=None, help="HTTP bind address (default ALMA_HTTP_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="HTTP port (default ALMA_HTTP_PORT, 8000)")
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve HTTP on a non-loopback address without authentication (dangerous)",
    )

    call = sub.add_parser("call", help="run one tool in-process and print its structured result as JSON")
    call.add_argument("tool", help="tool name, e.g. list_templates")
    call.add_argument("--args", default="{}", help="tool arguments as a JSON object")

    ipr = sub.add_parser("ipr", help="review, approve, deploy and roll back IPRs (the human's path)")
    ipr.add_argument("--as", dest="as_user", default=None, help="act as this person (default: your login)")
    isub = ipr.add_subparsers(dest="ipr_command", metavar="ACTION", required=True)
    ilist = isub.add_parser("list", help="IPRs, newest first")
    ilist.add_argument("--state", default=None)
    ilist.add_argument("--limit", type=int, default=50)
    for name, text in (
        ("show", "an IPR: checks, plan, approvals, history"),
        ("approve", "approve (never your own)"),
        ("request-changes", "ask the proposer for changes"),
        ("reject", "reject for good"),
        ("close", "close without deploying"),
        ("deploy", "deploy an approved IPR"),
        ("rollback", "roll back a deployed or failed IPR"),
    ):
        cmd = isub.add_parser(name, help=text)
        cmd.add_argument("ipr_id", type=int)
        if name in ("approve", "request-changes", "reject", "close"):
            cmd.add_argument("--comment", "-m", default=None)
        if name == "approve":
            cmd.add_argument("--override", default=None, help="admins: approve past a budget or audit block, with why")
        if name == "deploy":
            cmd.add_argument("--dry-run", action="store_true")

    cli_keys.add_parser(sub)
    cli_audit.add_parser(sub)

    templates = sub.add_parser("templates", help="list or show blueprint templates")
    tsub = templates.add_subparsers(dest="templates_command", metavar="ACTION", required=True)
    tsub.add_parser("list", help="one line per template")
    show = tsub.add_parser("show", help="print a template as YAML")
    show.add_argument("name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    # Before the first heavy import (this module imports them lazily for that reason): see gcpause.
    gcpause.pause_for_start_up()
    try:
        return _main(argv)
    finally:
        gcpause.start_up_done()


def _main(argv: Sequence[str] | None) -> int:
    from alma_mcp import cli_audit, cli_keys
    from alma_mcp.errors import AlmaError, ConfigError
    from alma_mcp.settings import load_settings

    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        settings = load_settings()
    except ConfigError as err:
        print(f"alma-mcp: {err}", file=sys.stderr)
        return EXIT_USAGE
    # A one-shot command's stderr is for its answer; chatter only when ALMA_LOG_LEVEL asks for it.
    quiet = args.command != "serve" and "log_level" not in settings.model_fields_set
    _configure_logging("WARNING" if quiet else settings.log_level)
    if args.command != "serve":
        gcpause.start_up_done()  # a one-shot command's work is not start-up; serve resumes it once built
    try:
        if args.command == "serve":
            return _serve(settings, args)
        if args.command == "call":
            return asyncio.run(_call(settings, args.tool, args.args))
        if args.command == "audit":
            return cli_audit.run_audit(settings, args)
        if args.command == "keys":
            return cli_keys.run_keys(settings, args)
        if args.command == "ipr":
            from alma_mcp.cli_ipr import run_ipr

            return run_ipr(settings, args)
        return _templates(settings, args)
    except AlmaError as err:
        print(f"alma-mcp: {err}", file=sys.stderr)
        return EXIT_TOOL_ERROR if not isinstance(err, ConfigError) else EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from alma_mcp.server.app import build_server
    from alma_mcp.services import open_services

    if args.transport == "stdio":
        if sys.stdin.isatty():
            print(_stdio_hint(), file=sys.stderr)
        from alma_mcp.web.ratelimit import RateLimiter

        with open_services(settings, "stdio") as services:
            server = build_server(services, limiter=RateLimiter.from_settings(settings))
            gcpause.start_up_done(freeze=True)
            asyncio.run(server.run_stdio_async())
        return EXIT_OK

    from alma_mcp.keys import KeyStore

    host = args.host or settings.http_host
    port = settings.http_port if args.port is None else args.port
    with open_services(settings, "http") as services:
        keys = KeyStore(services.store).count_active()
        if keys == 0 and not is_loopback(host) and not args.allow_unauthenticated:
            print(
                f"alma-mcp: refusing to serve HTTP on {host}: it is not a loopback address and no API key "
                "exists. Create one with `alma-mcp keys create --name NAME --roles viewer,...`, bind "
                "127.0.0.1, or pass --allow-unauthenticated if a trusted proxy authenticates every request.",
                file=sys.stderr,
            )
            return EXIT_USAGE
        authenticate = keys > 0 and not args.allow_unauthenticated
        if not authenticate and not is_loopback(host):
            logger.warning("SERVING HTTP ON %s WITHOUT AUTHENTICATION: anyone who can reach it can use it", host)
        asyncio.run(_serve_http(services, host, port, authenticate))
    return EXIT_OK


def _stdio_hint() -> str:
    return (
        "alma-mcp is speaking MCP on stdin/stdout: an MCP client (Claude Desktop, an IDE agent) starts it.\n"
        "To try it by hand, run:  alma-mcp serve --transport http\n"
        "Claude Desktop (claude_desktop_config.json):\n" + claude_desktop_snippet() + "\n"
        "Press Ctrl-D or Ctrl-C to stop."
    )


async def _serve_http(services: Any, host: str, port: int, authenticate: bool) -> None:
    import uvicorn

    from alma_mcp.web.app import create_side_app

    app = create_side_app(services, authenticate=authenticate).app
    gcpause.start_up_done(freeze=True)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # startup failed (port in use...): uvicorn has logged why
            return
        await asyncio.sleep(0.05)
    bound_port = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
    shown = f"[{host}]" if ":" in host else host
    print(_http_banner(f"http://{shown}:{bound_port}", authenticate), file=sys.stderr, flush=True)
    await task


def _http_banner(base: str, authenticate: bool) -> str:
    auth = (
        "Every request needs an API key: Authorization: Bearer <key> (or X-API-Key).\n"
        if authenticate
        else "Authentication is off (no API key exists, or --allow-unauthenticated): every caller acts as the\n"
        "local principal. Require keys by creating one: alma-mcp keys create --name NAME --roles viewer,proposer\n"
    )
    return (
        f"alma-mcp {__version__} is serving MCP over HTTP\n"
        f"  Streamable HTTP:  {base}/mcp\n"
        f"  legacy SSE:       {base}/sse\n"
        f"  health:           {base}/healthz\n" + auth + "Connect a client, for example the MCP Inspector:\n"
        f"  npx @modelcontextprotocol/inspector --cli {base}/mcp --method tools/list\n"
        "or from Python (mcp>=2.3):\n"
        f'  async with mcp.Client("{base}/mcp") as c: print(await c.list_tools())\n'
        "Claude Desktop runs alma-mcp over stdio instead; add to claude_desktop_config.json:\n"
        + claude_desktop_snippet()
        + "\nPress Ctrl-C to stop."
    )


async def _call(settings: Settings, tool: str, raw_args: str) -> int:
    try:
        arguments = json.loads(raw_args)
    except json.JSONDecodeError as exc:
        print(f"alma-mcp: [cli.invalid_args] --args is not JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(arguments, dict):
        print("alma-mcp: [cli.invalid_args] --args must be a JSON object", file=sys.stderr)
        return EXIT_USAGE

    from mcp import Client

    from alma_mcp.errors import ToolNotFound
    from alma_mcp.server.app import build_server
    from alma_mcp.services import open_services

    result = None
    with open_services(settings, "call") as services:
        async with Client(build_server(services)) as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            if tool in names:
                result = await client.call_tool(tool, arguments)
    if result is None:
        raise ToolNotFound(f"no tool {tool!r}; available: {', '.join(names)}", data={"available": names})
    if result.is_error:
        text = " ".join(c.text for c in result.content if c.type == "text")
        print(text, file=sys.stderr)
        return EXIT_TOOL_ERROR
    payload = result.structured_content
    if payload is None:
        payload = {"content": [c.model_dump(mode="json", by_alias=True) for c in result.content]}
    print(json.dumps(payload, indent=2, sort_keys=False))
    return EXIT_OK


def _templates(settings: Settings, args: argparse.Namespace) -> int:
    import yaml

    from alma_mcp.services import load_catalog

    catalog = load_catalog(settings)
    if args.templates_command == "list":
        for info in catalog.search():
            print(
                f"{info.name:22} {info.category:14} {info.complexity:9} "
                f"{info.resource_count:3} resources  {info.estimated_cost}"
            )
        return EXIT_OK
    print(yaml.safe_dump(catalog.get(args.name).to_data(), sort_keys=False), end="")
    return EXIT_OK
