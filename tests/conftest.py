"""Shared fixtures: clean ALMA_* environment, settings, opened services, MCP clients of both eras."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp import Client

from alma_mcp.server.app import build_server
from alma_mcp.services import Services, open_services
from alma_mcp.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def parse_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One parsed-data cache for the whole run, never the developer's own."""
    return tmp_path_factory.mktemp("parse-cache")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, parse_cache_dir: Path) -> None:
    """No test sees the developer's ALMA_* variables (subprocesses included)."""
    import os

    for key in list(os.environ):
        if key.startswith("ALMA_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("ALMA_CACHE_DIR", str(parse_cache_dir))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings() -> Settings:
    return Settings(db_path=":memory:")


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    with open_services(settings, "test") as opened:
        yield opened


@pytest.fixture(params=["auto", "legacy"])
async def client(request: pytest.FixtureRequest, services: Services) -> AsyncIterator[Client]:
    """An in-memory client of each protocol era: 2026-07-28 (auto) and the handshake era."""
    mode = request.param
    async with Client(build_server(services), mode=mode, raise_exceptions=mode != "legacy") as c:
        yield c
