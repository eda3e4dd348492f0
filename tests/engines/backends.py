"""Which engines the contract suite runs against, and how tests reach the real backends.

Each real engine adds ``tests/engines/case_<name>.py`` exporting ``CASE: EngineCase``; its factory
builds the engine against the backend that ``scripts/backends start`` started (connection details in
``.backends/env``, or ``ALMA_TEST_*`` variables). A backend that is not running is a skip on a
developer's machine and a failure in CI: engine tests never silently skip there.
"""

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from alma_mcp.store import Store
from engines.base import Engine
from engines.simulation import SimulationEngine

ROOT = Path(__file__).resolve().parent.parent.parent
ENV_FILE = ROOT / ".backends" / "env"


@dataclass(frozen=True)
class EngineCase:
    name: str
    factory: Callable[[Store], Engine]
    image: str
    """An image the backend can run offline (the contract's resources use it)."""
    other_image: str
    """A second runnable image: changing to it forces a replace."""


def backend_env(key: str) -> str | None:
    """``ALMA_TEST_<KEY>`` from the environment, else from ``.backends/env``."""
    name = f"ALMA_TEST_{key}"
    if name in os.environ:
        return os.environ[name]
    if ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            k, _, v = line.partition("=")
            if k == name:
                return v
    return None


def require_backend(key: str, what: str) -> str:
    """The backend's address; skip when it is not running, except in CI, where that is a failure."""
    value = backend_env(key)
    if value:
        return value
    message = f"{what} is not running: start it with `scripts/backends start` (needs root)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def engine_cases() -> list[EngineCase]:
    cases = [EngineCase("simulation", SimulationEngine, "nginx:1.27", "nginx:1.28")]
    package = Path(__file__).resolve().parent
    for info in pkgutil.iter_modules([str(package)]):
        if info.name.startswith("case_"):
            module = importlib.import_module(f"tests.engines.{info.name}")
            cases.append(module.CASE)
    return cases
