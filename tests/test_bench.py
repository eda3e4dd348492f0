"""Benchmarks stay runnable: each runs once with minimal repetitions (no timing is asserted)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mcp_helpers import ALL_TOOLS

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
    assert f"alma-mcp lists {len(ALL_TOOLS)} tools, bare lists 1" in out
    assert re.search(r"startup ratio \(alma / bare\): \d+\.\d\d", out)
    assert re.search(r"idle RSS: alma-mcp \d+\.\d MiB, bare MCPServer \d+\.\d MiB", out)


def test_analysis_benchmark_runs_and_prints_its_figures() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "analysis.py"), "--sizes", "20,50", "--repeat", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert out.splitlines()[0].split() == [
        "resources",
        "validate",
        "plan",
        "val+plan",
        "compare",
        "yaml",
        "text",
        "(seconds)",
    ]
    lines = out.splitlines()
    assert len(lines) == 5
    assert lines[3].startswith("audit and estimate (seconds): 20: audit ")
    assert re.fullmatch(r"forecast of 10,000 points, season 24, horizon 48: \d+\.\d{3} s \(target < 1 s\)", lines[4])


def test_ipr_benchmark_runs_and_prints_its_figures() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ipr.py"), "--iprs", "5", "--resources", "30"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert re.search(r"lifecycles .*: 5 in \d+\.\d\d s = \d+/s", out)
    assert re.search(r"deploy of 30 resources .*: \d+\.\d\d s", out)
    assert re.search(r"orchestration ratio \d+\.\d\d", out)


def test_http_benchmark_runs_and_prints_its_figures() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "http_load.py"), "--calls", "2", "--clients", "2"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert re.search(r"bare MCP server +\d+\.\d calls/s", out)
    assert re.search(r"full / bare throughput: \d+\.\d\d", out)
