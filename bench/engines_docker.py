"""Docker engine benchmark: a three-service blueprint through the orchestrator vs the docker SDK directly.

Orchestrated: an IPR is opened and approved, ``deploy`` creates the services (``db`` and ``cache``,
then ``web`` which depends on both) with the docker engine, ``rollback`` removes them again. Direct,
in the same run: the docker SDK creates a network and the same three containers (same image, limits
and published port), starts them, then removes them and the network. Rounds alternate between the
paths after one warm-up each; medians are printed with the overhead ratio of deploy + rollback over
the direct calls (target: at most 1.3). The orchestrator runs the steps of a wave concurrently
(``db`` and ``cache``; deletes likewise), which the sequential SDK calls do not, so the run is
repeated with ``plan_parallelism=1`` to show the orchestration's own cost step for step.

Usage: ``.venv/bin/python bench/engines_docker.py [--rounds 5]`` with ``ALMA_TEST_DOCKER_HOST`` set,
or the private dockerd of ``scripts/backends start`` (read from ``.backends/env``).
"""

import argparse
import io
import os
import statistics
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import docker  # type: ignore[import-untyped]
from docker import errors as docker_errors

from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.services import Services, open_services
from alma_mcp.settings import Settings
from engines.docker import DockerEngine

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "alma-test/web:1"
PORT = 8080
MEMORY_MIB = 64
SERVICES = ("db", "cache", "web")
PROPOSER = Principal(id="bench:model", roles=frozenset({Role.VIEWER, Role.PROPOSER, Role.DEPLOYER}))
APPROVER = Principal(id="bench:person", roles=frozenset({Role.VIEWER, Role.APPROVER}))
# The image the engine tests use (tests/engines/case_docker.py): busybox httpd as the image's command.
DOCKERFILE = f"""\
FROM local/busybox:latest
COPY index.html /www/index.html
COPY health /www/health
EXPOSE {PORT}
CMD ["httpd", "-f", "-p", "{PORT}", "-h", "/www"]
"""


def docker_host() -> str:
    if os.environ.get("ALMA_TEST_DOCKER_HOST"):
        return os.environ["ALMA_TEST_DOCKER_HOST"]
    env = ROOT / ".backends" / "env"
    for line in env.read_text().splitlines() if env.exists() else []:
        key, _, value = line.partition("=")
        if key == "ALMA_TEST_DOCKER_HOST" and value:
            return value
    raise SystemExit("no docker daemon: set ALMA_TEST_DOCKER_HOST or run scripts/backends start")


def ensure_image(client: Any) -> None:
    try:
        client.images.get(IMAGE)
        return
    except docker_errors.ImageNotFound:
        pass
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in (("Dockerfile", DOCKERFILE), ("index.html", "alma web test page\n"), ("health", "ok\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    client.images.build(fileobj=buffer, custom_context=True, tag=IMAGE, rm=True)


def blueprint(name: str) -> dict[str, Any]:
    specs = {"image": IMAGE, "memory": f"{MEMORY_MIB}Mi", "ports": [PORT]}
    return {
        "name": name,
        "resources": [
            {"name": "db", "type": "database", "provider": "docker", "specs": specs},
            {"name": "cache", "type": "cache", "provider": "docker", "specs": specs},
            {"name": "web", "type": "container", "provider": "docker", "specs": specs, "dependencies": ["db", "cache"]},
        ],
    }


async def orchestrated(services: Services, name: str) -> tuple[float, float, float]:
    """Seconds for IPR open + approve, for deploy, and for rollback."""
    started = time.perf_counter()
    ipr_id = services.iprs.create(PROPOSER, title=f"bench {name}", blueprint=blueprint(name)).ipr.id
    services.iprs.review(APPROVER, ipr_id, "approve")
    opened = time.perf_counter()
    deployed = await services.orchestrator.deploy(PROPOSER, ipr_id)
    done = time.perf_counter()
    rolled = await services.orchestrator.rollback(PROPOSER, ipr_id)
    finished = time.perf_counter()
    if deployed.state != "succeeded" or rolled.state != "succeeded":
        raise SystemExit(f"orchestrated round failed: {deployed.summary}; {rolled.summary}")
    return opened - started, done - opened, finished - done


def direct(client: Any, name: str) -> tuple[float, float]:
    """Seconds for network + three containers created and started, and for removing them."""
    labels = {"alma.bench": name}
    started = time.perf_counter()
    network = client.networks.create(f"{name}_default", driver="bridge", labels=labels)
    containers = []
    for service in SERVICES:
        container = client.containers.create(
            IMAGE,
            name=f"{name}-{service}-0",
            labels=labels,
            network=network.name,
            ports={f"{PORT}/tcp": ("127.0.0.1", None)},
            mem_limit=MEMORY_MIB * 1024 * 1024,
            restart_policy={"Name": "unless-stopped"},
            init=True,
        )
        container.start()
        containers.append(container)
    up = time.perf_counter()
    for container in containers:
        container.remove(force=True)
    network.remove()
    return up - started, time.perf_counter() - up


async def run(rounds: int) -> None:
    url = docker_host()
    client = docker.DockerClient(base_url=url)
    ensure_image(client)
    common: dict[str, Any] = {"db_path": ":memory:", "engines": {"docker": "docker"}, "docker_host": url}
    run_id = uuid.uuid4().hex[:6]
    ours: list[tuple[float, float, float]] = []
    serial: list[tuple[float, float, float]] = []
    theirs: list[tuple[float, float]] = []
    with (
        open_services(Settings(**common), "bench") as services,
        open_services(Settings(**common, plan_parallelism=1), "bench") as one_at_a_time,
    ):
        for opened in (services, one_at_a_time):
            if "docker" not in opened.engines.names():  # until the registry lists the docker engine
                opened.engines.register("docker", DockerEngine)
        try:
            for i in range(rounds + 1):  # round 0 warms every path up
                theirs.append(await anyio.to_thread.run_sync(direct, client, f"bench-direct-{run_id}-{i}"))
                ours.append(await orchestrated(services, f"bench-{run_id}-{i}"))
                serial.append(await orchestrated(one_at_a_time, f"bench-serial-{run_id}-{i}"))
        finally:
            await services.orchestrator.engines.aclose()
            await one_at_a_time.orchestrator.engines.aclose()
            client.close()
    up = statistics.median(t[0] for t in theirs[1:])
    down = statistics.median(t[1] for t in theirs[1:])
    theirs_total = statistics.median(t[0] + t[1] for t in theirs[1:])
    print(f"three services ({', '.join(SERVICES)}) on docker at {url}, median of {rounds} round(s), seconds:")
    print(f"  docker SDK directly: network + create/start {up:.3f} + remove {down:.3f} = {theirs_total:.3f}")
    for label, rows in (("", ours), (", one step at a time", serial)):
        ipr = statistics.median(o[0] for o in rows[1:])
        deploy = statistics.median(o[1] for o in rows[1:])
        rollback = statistics.median(o[2] for o in rows[1:])
        total = statistics.median(o[1] + o[2] for o in rows[1:])
        print(
            f"  orchestrated (IPR, deploy, rollback{label}): deploy {deploy:.3f} + rollback {rollback:.3f}"
            f" = {total:.3f} (IPR open + approve {ipr:.3f} more)"
        )
        print(f"  overhead ratio (orchestrated{label} / direct): {total / theirs_total:.2f} (target <= 1.3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds after one warm-up (default 5)")
    args = parser.parse_args()
    anyio.run(run, max(1, args.rounds))


if __name__ == "__main__":
    main()
