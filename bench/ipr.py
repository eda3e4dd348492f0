"""IPR benchmark: full lifecycles per second, and a 1,000-resource deploy, with the simulation engine.

A lifecycle is create (checks included) -> approve -> deploy of a small blueprint, on a WAL SQLite
file, simulation durations at zero. The 1,000-resource deploy is compared in the same run with the
engine applying the same resources directly (no waves, no records), so the ratio is the
orchestration's own cost. Usage: ``.venv/bin/python bench/ipr.py [--iprs 1000] [--resources 1000]``.
Targets: at least 100 lifecycles/s; the 1,000-resource deploy under 2 s.
"""

import argparse
import functools
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from alma_mcp.blueprint.loader import Limits, load_blueprint
from alma_mcp.ipr.deploy import _desired
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.services import open_services
from alma_mcp.settings import Settings
from engines.base import Change, DeploymentRef, Plan
from engines.simulation import SimulationEngine

PROPOSER = Principal(id="bench:model", roles=frozenset({Role.VIEWER, Role.PROPOSER, Role.DEPLOYER}))
APPROVER = Principal(id="bench:person", roles=frozenset({Role.VIEWER, Role.APPROVER}))


def small(i: int) -> dict[str, Any]:
    return {
        "name": f"svc-{i}",
        "resources": [
            {"name": "db", "type": "database", "provider": "simulation", "specs": {"memory": "4GB"}},
            {"name": "cache", "type": "cache", "provider": "simulation"},
            {"name": "web", "type": "compute", "provider": "simulation", "dependencies": ["db", "cache"]},
        ],
    }


def large(n: int) -> dict[str, Any]:
    rng = random.Random(n)
    resources = []
    for i in range(n):
        deps = sorted({f"r{rng.randrange(i)}" for _ in range(2)}) if i >= 2 else []
        resources.append(
            {
                "name": f"r{i}",
                "type": "compute",
                "provider": "simulation",
                "specs": {"cpu": 1, "memory": "1GB"},
                "dependencies": deps,
            }
        )
    return {"name": "big", "resources": resources}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iprs", type=int, default=1000)
    parser.add_argument("--resources", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            db_path=str(Path(tmp) / "bench.db"), sim_time_scale=0.0, plan_parallelism=10, max_resources=100_000
        )
        with open_services(settings, "bench") as services:
            start = time.perf_counter()
            for i in range(args.iprs):
                ipr_id = services.iprs.create(PROPOSER, title=f"change {i}", blueprint=small(i)).ipr.id
                services.iprs.review(APPROVER, ipr_id, "approve")
                outcome = anyio.run(functools.partial(services.orchestrator.deploy, PROPOSER, ipr_id))
                assert outcome.state == "succeeded", outcome.summary
            lifecycle_s = time.perf_counter() - start

            data = large(args.resources)
            ipr_id = services.iprs.create(PROPOSER, title="big", blueprint=data).ipr.id
            services.iprs.review(APPROVER, ipr_id, "approve")
            start = time.perf_counter()
            outcome = anyio.run(lambda: services.orchestrator.deploy(PROPOSER, ipr_id))
            deploy_s = time.perf_counter() - start
            assert outcome.state == "succeeded", outcome.summary

            # Baseline in the same run: the engine applies the same resources, one call each, no orchestration.
            engine = SimulationEngine(services.store)
            ref = DeploymentRef(id="big-direct", blueprint="big-direct")
            desired = _desired(load_blueprint(data, Limits(max_resources=100_000)))
            start = time.perf_counter()

            async def direct() -> None:
                for res in desired:
                    change = Change(resource=res.name, action="create", reason="bench", desired=res)
                    await engine.apply(Plan(deployment=ref, changes=(change,)))

            anyio.run(direct)
            direct_s = time.perf_counter() - start
    print(
        f"lifecycles (create + checks, approve, deploy of 3 resources): {args.iprs} in {lifecycle_s:.2f} s "
        f"= {args.iprs / lifecycle_s:.0f}/s (target >= 100/s)"
    )
    print(
        f"deploy of {args.resources} resources (waves, parallelism 10, every step recorded): {deploy_s:.2f} s "
        f"(target < 2 s)"
    )
    print(
        f"same resources applied directly by the engine: {direct_s:.2f} s; "
        f"orchestration ratio {deploy_s / direct_s:.2f}"
    )


if __name__ == "__main__":
    main()
