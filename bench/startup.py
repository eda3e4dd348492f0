"""Startup benchmark: spawn -> answer to tools/list over stdio, alma-mcp against a bare MCPServer.

Both servers are spawned the same way (``python -m ...`` with this interpreter), interleaved, and
timed from ``Popen`` to the tools/list response; the figure is the ratio of the medians, measured in
the same run because these machines are noisy. Idle resident memory is read from /proc after the
answer. Usage: ``.venv/bin/python bench/startup.py [--runs N]``. Targets: ratio <= 1.5, RSS <= 100 MB.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUESTS = [
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"},
        },
    },
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def spawn_and_list(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Seconds from spawn to the tools/list answer, idle RSS in MiB, and the number of tools."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write("".join(json.dumps(r) + "\n" for r in REQUESTS))
    proc.stdin.flush()
    tools = -1
    for line in proc.stdout:
        message = json.loads(line)
        if message.get("id") == 2:
            tools = len(message["result"]["tools"])
            break
    elapsed = time.perf_counter() - start
    time.sleep(0.5)  # let start-up garbage settle before reading idle memory
    rss = rss_mib(proc.pid)
    proc.stdin.close()
    proc.wait(timeout=30)
    proc.stdout.close()
    return elapsed, rss, tools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALMA_")}
        env["ALMA_DB_PATH"] = str(Path(tmp) / "alma.db")
        # An installed server runs from bytecode (pip compiles it at install time). Some machines set
        # PYTHONDONTWRITEBYTECODE, which would recompile every module of a checkout on every spawn
        # and time the compiler instead: both servers write and read bytecode in a private prefix.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        # alma-mcp's parsed-data cache, like the bytecode, is filled by the first start (timed apart).
        env["ALMA_CACHE_DIR"] = str(Path(tmp) / "cache")
        alma_cmd = [sys.executable, "-m", "alma_mcp", "serve"]
        bare_cmd = [sys.executable, str(HERE / "bare_server.py")]
        # The first start of each warms the OS file cache and writes the bytecode (and alma's cache).
        alma_first = spawn_and_list(alma_cmd, env)[0]
        bare_first = spawn_and_list(bare_cmd, env)[0]
        alma: list[tuple[float, float, int]] = []
        bare: list[tuple[float, float, int]] = []
        for _ in range(args.runs):
            alma.append(spawn_and_list(alma_cmd, env))
            bare.append(spawn_and_list(bare_cmd, env))
    alma_t = statistics.median(r[0] for r in alma)
    bare_t = statistics.median(r[0] for r in bare)
    alma_rss = statistics.median(r[1] for r in alma)
    bare_rss = statistics.median(r[1] for r in bare)
    print(f"runs: {args.runs} each, interleaved; alma-mcp lists {alma[0][2]} tools, bare lists {bare[0][2]}")
    print(f"spawn -> tools/list median: alma-mcp {alma_t * 1000:.0f} ms, bare MCPServer {bare_t * 1000:.0f} ms")
    print(f"startup ratio (alma / bare): {alma_t / bare_t:.2f}  (target <= 1.5)")
    print(f"first start, cold caches: alma-mcp {alma_first * 1000:.0f} ms, bare MCPServer {bare_first * 1000:.0f} ms")
    print(f"idle RSS: alma-mcp {alma_rss:.1f} MiB, bare MCPServer {bare_rss:.1f} MiB  (target <= 100 MB)")


if __name__ == "__main__":
    main()
