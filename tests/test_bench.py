"""Benchmarks stay runnable: each runs once with minimal repetitions (no timing is asserted)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_startup_benchmark_runs_and_prints_its_figures() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "startup.py"), "--runs", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert "alma-mcp lists 2 tools, bare lists 1" in out
    assert re.search(r"startup ratio \(alma / bare\): \d+\.\d\d", out)
    assert re.search(r"idle RSS: alma-mcp \d+\.\d MiB, bare MCPServer \d+\.\d MiB", out)
