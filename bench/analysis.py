"""Analysis benchmark: validate, plan and compare on generated blueprints of 100, 1,000 and 10,000 resources.

Each blueprint is a random DAG (seeded) with about two dependencies per resource, mixed types and
providers that fit. Times are the best of five runs, each from a freshly collected heap (these
machines are noisy); the growth ratio
from 1,000 to 10,000 resources shows whether any step is worse than linear (10x is linear).
Usage: ``.venv/bin/python bench/analysis.py [--sizes 100,1000,10000] [--repeat 3]``.
Targets: validate + plan of 10,000 resources under 1 s; growth 1,000 -> 10,000 at most 12x.
"""

import argparse
import copy
import gc
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from alma_mcp.analysis.audit import PolicyCatalog, audit
from alma_mcp.analysis.compare import compare_sources
from alma_mcp.analysis.cost import estimate_resources
from alma_mcp.analysis.durations import DurationTable, load_durations
from alma_mcp.analysis.forecast import forecast_metrics
from alma_mcp.analysis.plan import plan_sources
from alma_mcp.analysis.pricing import PriceCatalog
from alma_mcp.analysis.validate import validate
from alma_mcp.blueprint.loader import Limits, load_blueprint
from alma_mcp.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LIMITS = Limits(max_bytes=64 * 1024 * 1024, max_resources=100_000, max_nodes=10_000_000)
BUDGET = Settings.model_fields["output_max_items"].default
POLICIES = PolicyCatalog.from_directory(ROOT / "resources" / "policies")
PRICES = PriceCatalog.from_path(ROOT / "resources" / "pricing")
KINDS = [
    ("compute", "proxmox"),
    ("database", "proxmox"),
    ("cache", "proxmox"),
    ("container", "docker"),
    ("service", "kubernetes"),
    ("queue", "kubernetes"),
    ("storage", "proxmox"),
]


def generate(n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    resources = []
    for i in range(n):
        rtype, provider = KINDS[rng.randrange(len(KINDS))]
        deps = sorted({f"r{rng.randrange(i)}" for _ in range(2)}) if i >= 2 else []
        specs: dict[str, Any] = {"cpu": rng.choice([1, 2, 4]), "memory": rng.choice(["1GB", "2GB", "4096MB"])}
        if rtype == "container":
            specs["image"] = f"registry.local/app-{i % 50}:1.{i % 7}"
        resources.append(
            {
                "name": f"r{i}",
                "type": rtype,
                "provider": "simulation" if deps else provider,
                "specs": specs,
                "dependencies": deps,
            }
        )
    return {"name": f"bench-{n}", "resources": resources}


def mutate(data: dict[str, Any], seed: int) -> dict[str, Any]:
    """About 10% of resources changed, 2% removed (with their users' edges), 2% added."""
    rng = random.Random(seed)
    out = copy.deepcopy(data)
    res = out["resources"]
    for r in rng.sample(res, len(res) // 10):
        r["specs"]["memory"] = "8GB"
    removed = {r["name"] for r in rng.sample(res, len(res) // 50)}
    out["resources"] = [r for r in res if r["name"] not in removed]
    for r in out["resources"]:
        r["dependencies"] = [d for d in r["dependencies"] if d not in removed]
    out["resources"].extend(
        {"name": f"new{i}", "type": "compute", "provider": "simulation"} for i in range(len(res) // 50)
    )
    return out


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()  # each run starts from a clean heap, not from the previous run's garbage
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(
    data: dict[str, Any], other: dict[str, Any], text: str, durations: DurationTable, repeat: int
) -> dict[str, float]:
    loaded = load_blueprint(data, LIMITS)
    return {
        "audit": best(lambda: audit(loaded, POLICIES), repeat),
        "estimate": best(lambda: estimate_resources(loaded, PRICES), repeat),
        # Baseline: one pass touching each loaded resource model once, the least any analysis must do.
        "touch": best(lambda: sum(1 for r in loaded.resources if r.specs.cpu and r.name), repeat),
        "validate": best(lambda: validate(data, limits=LIMITS), repeat),
        # plan and compare as their tools run them: from the documents, plan within the default output budget.
        "plan": best(lambda: plan_sources(data, None, durations, 10, BUDGET, LIMITS), repeat),
        "compare": best(lambda: compare_sources(data, other, LIMITS), repeat),
        "yaml": best(lambda: validate(text, limits=LIMITS), repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    durations = load_durations(ROOT / "resources" / "plan" / "durations.yaml")
    rows: dict[int, dict[str, float]] = {}
    print(f"{'resources':>9} {'validate':>9} {'plan':>9} {'val+plan':>9} {'compare':>9} {'yaml text':>10}  (seconds)")
    for n in (int(s) for s in args.sizes.split(",")):
        data = generate(n, seed=n)
        other = mutate(data, seed=n + 1)
        text = yaml.safe_dump(data, sort_keys=False)
        report = validate(data, limits=LIMITS)
        assert report.valid, report.summary
        row = measure(data, other, text, durations, args.repeat)
        row["val+plan"] = row["validate"] + row["plan"]
        rows[n] = row
        print(
            f"{n:>9} {row['validate']:>9.3f} {row['plan']:>9.3f} {row['val+plan']:>9.3f} {row['compare']:>9.3f} "
            f"{row['yaml']:>10.3f}"
        )
    print(
        "audit and estimate (seconds): "
        + ", ".join(f"{n}: audit {r['audit']:.3f}, estimate {r['estimate']:.3f}" for n, r in rows.items())
    )
    rng = random.Random(24)
    series = [100 + 20 * math.sin(2 * math.pi * t / 24) + rng.gauss(0, 3) for t in range(10_000)]
    seconds = best(lambda: forecast_metrics(series, 48, season_length=24), args.repeat)
    print(f"forecast of 10,000 points, season 24, horizon 48: {seconds:.3f} s (target < 1 s)")
    if 1000 in rows and 10000 in rows:
        print(
            f"audit of 10,000 resources: {rows[10000]['audit']:.3f} s (target < 1 s); "
            f"estimate of 10,000 resources: {rows[10000]['estimate']:.3f} s (target < 1 s)"
        )
        growth = {k: rows[10000][k] / rows[1000][k] for k in ("validate", "plan", "val+plan", "compare", "yaml")}
        print(
            "growth 1,000 -> 10,000 (10x is linear; target <= 12x): "
            + ", ".join(f"{k} {v:.1f}x" for k, v in growth.items())
        )
        touch = rows[10000]["touch"] / rows[1000]["touch"]
        print(
            f"baseline in the same run: one pass touching each resource model once grows {touch:.1f}x "
            f"(10,000 models outgrow the CPU caches); validate + plan grow {growth['val+plan'] / touch:.2f} of that"
        )
        print(f"validate + plan of 10,000 resources: {rows[10000]['val+plan']:.3f} s (target < 1 s)")


if __name__ == "__main__":
    main()
