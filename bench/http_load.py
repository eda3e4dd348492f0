"""HTTP benchmark: tool-call throughput and latency over real uvicorn on loopback, 16 concurrent clients.

Two servers are run, one after the other, in this same run: the full side app (API-key auth, rate
limits set high, metrics, audit log, access control) and the bare MCP server with no middleware of
ours. The load is the SDK client over Streamable HTTP (2026-07-28 era) calling ``list_templates``.
Usage: ``.venv/bin/python bench/http_load.py [--calls 100] [--clients 16]``.
Target: full-stack throughput at least 0.8 of the bare server's.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

HERE = Path(__file__).resolve()


def serve(mode: str, port: int, db: str) -> None:
    """Child process: build the app for ``mode`` and serve it with uvicorn."""
    import uvicorn

    from alma_mcp.server.app import build_server
    from alma_mcp.services import open_services
    from alma_mcp.settings import Settings
    from alma_mcp.web.app import create_side_app, transport_security

    settings = Settings(
        db_path=db,
        log_level="WARNING",
        rate_limit_global_rpm=10**7,
        rate_limit_tools_rpm=10**7,
        rate_limit_generation_rpm=10**7,
        rate_limit_crud_rpm=10**7,
        rate_limit_streaming_rpm=10**7,
        rate_limit_burst=10**6,
    )
    with open_services(settings, "bench") as services:
        if mode == "full":
            app = create_side_app(services, authenticate=True).app
        else:
            # The SDK's own app around a server with none of our MCP middleware.
            server = build_server(services)
            server.middleware.clear()
            app = server.streamable_http_app(
                streamable_http_path="/mcp", transport_security=transport_security(settings)
            )
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


async def load(port: int, key: str | None, clients: int, calls: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    headers = {"authorization": f"Bearer {key}"} if key else {}

    async def one_client() -> None:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as h,
            Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=h)) as c,
        ):
            for _ in range(calls):
                start = time.perf_counter()
                result = await c.call_tool("list_templates", {"category": "database"})
                latencies.append(time.perf_counter() - start)
                assert not result.is_error

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(clients):
            group.start_soon(one_client)
    return time.perf_counter() - start, latencies


def run(mode: str, clients: int, calls: int, tmp: str) -> tuple[float, float, float]:
    db = str(Path(tmp) / f"{mode}.db")
    key = None
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALMA_")}
    if mode == "full":
        out = subprocess.run(
            [sys.executable, "-m", "alma_mcp", "keys", "create", "--name", "bench", "--roles", "viewer"],
            env={**env, "ALMA_DB_PATH": db},
            capture_output=True,
            text=True,
            check=True,
        )
        key = out.stdout.strip()
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE), "--serve", mode, "--port", str(port), "--db", db], env=env)
    try:
        wait_ready(port)
        anyio.run(load, port, key, clients, 3)  # warm up imports, caches and the tool schemas
        elapsed, latencies = anyio.run(load, port, key, clients, calls)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    latencies.sort()
    throughput = len(latencies) / elapsed
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    return throughput, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100, help="calls per client")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--serve", choices=["full", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.db)
        return
    with tempfile.TemporaryDirectory() as tmp:
        bare = run("bare", args.clients, args.calls, tmp)
        full = run("full", args.clients, args.calls, tmp)
    for name, (tput, p50, p99) in (("bare MCP server", bare), ("full side app", full)):
        print(f"{name:16} {tput:7.1f} calls/s  p50 {p50 * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms")
    print(
        f"clients: {args.clients}, calls each: {args.calls}; full / bare throughput: {full[0] / bare[0]:.2f} "
        "(target >= 0.8)"
    )


if __name__ == "__main__":
    main()
