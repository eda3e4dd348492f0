"""Real processes: the stdio transport, a real uvicorn server, the public-bind refusal."""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.mcp_helpers import ALL_TOOLS

pytestmark = pytest.mark.slow


def server_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALMA_")}
    env["ALMA_DB_PATH"] = str(tmp_path / "alma.db")
    return env


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_subprocess_serves_tools_and_resources(tmp_path: Path, mode: str) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "alma_mcp", "serve"], env=server_env(tmp_path), cwd=str(tmp_path)
    )
    async with Client(params, mode=mode) as client:
        result = await client.call_tool("list_templates", {"query": "web"})
        assert result.structured_content is not None
        assert [t["name"] for t in result.structured_content["templates"]] == ["ha-web-app", "simple-web-app"]
        index = await client.read_resource("alma://templates")
        assert "redis-cluster" in index.contents[0].text  # type: ignore[union-attr]
    assert (tmp_path / "alma.db").exists()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "alma_mcp", "serve", "--transport", "http", "--port", "0"],
        env=server_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        banner: list[str] = []
        base = None
        for line in proc.stderr:
            banner.append(line)
            if (found := re.search(r"Streamable HTTP:\s+(http://127\.0\.0\.1:\d+)/mcp", line)) is not None:
                base = found.group(1)
            if "Press Ctrl-C to stop." in line:
                break
        text = "".join(banner)
        assert base is not None, text
        assert '"command": ' in text
        assert '"serve"' in text
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        assert proc.stdout.read() == ""  # nothing but the protocol may ever use stdout
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.anyio
async def test_real_uvicorn_serves_streamable_http_sse_and_health(http_server: str) -> None:
    async with httpx2.AsyncClient() as h:
        health = await h.get(f"{http_server}/healthz")
    assert health.status_code == 200
    async with Client(f"{http_server}/mcp") as client:
        assert client.protocol_version == "2026-07-28"
        tools = await client.list_tools()
        assert sorted(t.name for t in tools.tools) == ALL_TOOLS
    async with Client(sse_client(f"{http_server}/sse"), mode="legacy") as client:
        result = await client.call_tool("customize_template", {"template": "redis-cluster", "scale_factor": 0.5})
        assert result.structured_content is not None
        assert result.structured_content["base_template"] == "redis-cluster"


def test_http_on_a_public_address_without_auth_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "alma_mcp", "serve", "--transport", "http", "--host", "0.0.0.0"],
        env=server_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "refusing to serve HTTP on 0.0.0.0" in proc.stderr
    assert proc.stdout == ""


def test_no_provider_sdk_or_unused_library_is_imported_by_a_stdio_start() -> None:
    # uvicorn and starlette are not in the list: the SDK itself imports them. numpy loads on the first
    # forecast, rich never (MCPServer would import it for a log handler that logging discards).
    code = (
        "import sys, os;"
        "from alma_mcp.settings import load_settings;"
        "from alma_mcp.services import open_services;"
        "from alma_mcp.server.app import build_server;"
        "from alma_mcp.web.ratelimit import RateLimiter;"
        "settings = load_settings();"
        "services = open_services(settings, 'stdio').__enter__();"
        "build_server(services, limiter=RateLimiter.from_settings(settings));"
        "heavy = {'docker', 'kubernetes', 'proxmoxer', 'requests', 'prometheus_client', 'numpy', 'rich'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    env = {**os.environ, "ALMA_DB_PATH": ":memory:"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, env=env)
    assert out.stdout.strip() == "[]"


@pytest.mark.anyio
async def test_real_uvicorn_with_keys_requires_them(tmp_path: Path) -> None:
    env = server_env(tmp_path)
    created = subprocess.run(  # noqa: ASYNC221 - set-up before the server runs
        [sys.executable, "-m", "alma_mcp", "keys", "create", "--name", "ops", "--roles", "viewer"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    key = created.stdout.strip()
    assert key.startswith("alma_")
    proc = subprocess.Popen(  # noqa: ASYNC220 - the server under test
        [sys.executable, "-m", "alma_mcp", "serve", "--transport", "http", "--port", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        base = None
        for line in proc.stderr:
            if (found := re.search(r"Streamable HTTP:\s+(http://127\.0\.0\.1:\d+)/mcp", line)) is not None:
                base = found.group(1)
            if "Every request needs an API key" in line:
                break
        assert base is not None
        async with httpx2.AsyncClient() as h:
            denied = await h.post(f"{base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize"})
            assert denied.status_code == 401
            assert denied.json()["error"]["code"] == "auth.unauthenticated"
        async with (
            httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}) as h,
            Client(streamable_http_client(f"{base}/mcp", http_client=h)) as client,
        ):
            tools = {t.name for t in (await client.list_tools()).tools}
            assert "ipr_deploy" not in tools
            assert "list_templates" in tools
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
