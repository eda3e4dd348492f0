"""Price catalogue and estimate_resources: costs equal hand computation from the catalogue, to the cent."""

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from alma_mcp.analysis.cost import CostEstimate, estimate_resources, monthly_cost
from alma_mcp.analysis.pricing import PriceCatalog
from alma_mcp.blueprint.model import Blueprint
from alma_mcp.errors import ConfigError, InvalidRequest

ROOT = Path(__file__).resolve().parents[2]
PRICING = ROOT / "resources" / "pricing"


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return PriceCatalog.from_directory(PRICING)


def blueprint(*resources: dict[str, Any], environment: str | None = None) -> Blueprint:
    metadata = {"environment": environment} if environment else {}
    return Blueprint.model_validate({"name": "demo", "metadata": metadata, "resources": list(resources)})


def money(value: float) -> Decimal:
    return Decimal(str(value))


WEB: dict[str, Any] = {
    "name": "web",
    "type": "compute",
    "provider": "proxmox",
    "specs": {"cpu": 2, "memory": "4Gi", "storage": "50Gi", "storage_type": "SSD", "replicas": 2},
}


# --- catalogue -------------------------------------------------------------------------------


def test_shipped_catalogue_has_the_profiles_and_opencost_is_default(catalog: PriceCatalog) -> None:
    assert catalog.default_profile == "opencost"
    assert set(catalog.profiles) == {
        "opencost",
        "proxmox-onprem",
        "docker-host",
        "kubernetes-node-pool",
        "gcp-e2-us-central1",
    }
    kinds = {p.kind for p in catalog.profiles.values()}
    assert {"on_premises", "container_host", "kubernetes", "public_cloud"} <= kinds
    for prices in catalog.profiles.values():
        assert prices.hours_per_month == 730
        assert prices.currency == "USD"
        assert set(prices.storage_gib_month) == {"HDD", "SSD", "NVMe"}


def test_opencost_default_rates_are_the_upstream_rate_card(catalog: PriceCatalog) -> None:
    prices = catalog.get()
    assert (prices.vcpu_hour, prices.ram_gib_hour, prices.gpu_hour) == (0.031611, 0.004237, 0.95)
    assert prices.storage_gib_month["SSD"] == 0.04  # 0.00005479452 per GB-hour x 730


def test_proxmox_prices_are_the_host_amortised_plus_power(catalog: PriceCatalog) -> None:
    prices = catalog.get("proxmox-onprem")
    monthly = 9000 / 60 + 350 * 1.5 * 730 / 1000 * 0.25 + 60
    assert prices.host_monthly_cost == pytest.approx(monthly, abs=1e-6)
    assert prices.vcpu_hour == pytest.approx(monthly * 0.5 / (64 - 2) / 730, abs=1e-8)
    assert prices.ram_gib_hour == pytest.approx(monthly * 0.5 / (256 - 20) / 730, abs=1e-8)


def test_unknown_profile_is_invalid_request_naming_the_known_ones(catalog: PriceCatalog) -> None:
    with pytest.raises(InvalidRequest) as info:
        catalog.get("aws-gold")
    assert info.value.code == "request.invalid"
    assert "opencost" in info.value.message
    assert "proxmox-onprem" in info.value.data["allowed"]


def test_as_resource_lists_default_profiles_and_sources(catalog: PriceCatalog) -> None:
    data = catalog.as_resource()
    assert data["default_profile"] == "opencost"
    assert data["profiles"]["proxmox-onprem"]["host"]["lifetime_months"] == 60
    assert len(data["sources"]) == 5


def test_a_single_file_is_a_catalogue_and_its_first_profile_the_default(tmp_path: Path) -> None:
    file = tmp_path / "mine.yaml"
    file.write_text(
        "profiles:\n"
        "  cheap: {description: x, kind: reference, currency: EUR, vcpu_hour: 0.01, ram_gib_hour: 0.001,\n"
        "          storage_gib_month: {HDD: 0.01, SSD: 0.02, NVMe: 0.03}}\n"
        "  dear: {description: y, kind: reference, currency: EUR, vcpu_hour: 0.1, ram_gib_hour: 0.01,\n"
        "         storage_gib_month: {HDD: 0.1, SSD: 0.2, NVMe: 0.3}}\n",
        encoding="utf-8",
    )
    catalog = PriceCatalog.from_file(file)
    assert catalog.default_profile == "cheap"
    assert catalog.get("dear").currency == "EUR"
    assert PriceCatalog.from_path(file).default_profile == "cheap"
    assert PriceCatalog.from_path(PRICING).default_profile == "opencost"


_GOOD = (
    "  p: {description: x, kind: reference, currency: USD, vcpu_hour: 0.01, ram_gib_hour: 0.001,\n"
    "      storage_gib_month: {HDD: 0.01, SSD: 0.02, NVMe: 0.03}}\n"
)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("profiles: [unclosed\n", "invalid"),
        ("profiles: {}\n", "invalid"),
        ("profiles:\n  p: {description: x, kind: reference, currency: USD}\n", "invalid"),
        (
            "profiles:\n  p: {description: x, kind: reference, currency: usd, vcpu_hour: 1, ram_gib_hour: 1,\n"
            "      storage_gib_month: {HDD: 1, SSD: 1, NVMe: 1}}\n",
            "invalid",
        ),
        (
            "profiles:\n  p: {description: x, kind: reference, currency: USD, vcpu_hour: 1, ram_gib_hour: 1,\n"
            "      storage_gib_month: {HDD: 1, SSD: 1}}\n",
            "invalid",
        ),
        (
            "profiles:\n  p: {description: x, kind: reference, currency: USD, vcpu_hour: -1, ram_gib_hour: 1,\n"
            "      storage_gib_month: {HDD: 1, SSD: 1, NVMe: 1}}\n",
            "invalid",
        ),
        (
            "profiles:\n  p: {description: x, kind: reference, currency: USD, vcpu_hour: 1, ram_gib_hour: 1,\n"
            "      host: {vcpus: 8, ram_gib: 32}, storage_gib_month: {HDD: 1, SSD: 1, NVMe: 1}}\n",
            "invalid",
        ),
        ("default: nope\nprofiles:\n" + _GOOD, "nope"),
    ],
)
def test_bad_catalogue_file_is_config_error_naming_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        PriceCatalog.from_file(file)
    assert info.value.code == "config.invalid"
    assert str(file) in info.value.message
    assert fragment in info.value.message


def test_missing_file_and_empty_folder_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        PriceCatalog.from_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="no price catalogue"):
        PriceCatalog.from_directory(tmp_path)


def test_folder_refuses_duplicate_profiles_and_two_defaults(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("default: p\nprofiles:\n" + _GOOD, encoding="utf-8")
    (tmp_path / "b.yaml").write_text("profiles:\n" + _GOOD, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'p' is defined in both .*a\.yaml and .*b\.yaml"):
        PriceCatalog.from_directory(tmp_path)
    (tmp_path / "b.yaml").write_text("default: q\nprofiles:\n" + _GOOD.replace("  p:", "  q:"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"both .* name a default"):
        PriceCatalog.from_directory(tmp_path)


# --- estimate --------------------------------------------------------------------------------


def test_costs_equal_hand_computation_from_the_default_profile(catalog: PriceCatalog) -> None:
    result = estimate_resources(blueprint(WEB), catalog)
    row = result.resources[0]
    # 2 instances x 2 vCPU x 730 h x 0.031611; 2 x 4 GiB x 730 h x 0.004237; 2 x 50 GiB x 0.04.
    assert [(line.item, line.quantity, line.monthly_cost) for line in row.breakdown] == [
        ("cpu", 2920.0, 92.30),
        ("memory", 5840.0, 24.74),
        ("storage", 100.0, 4.00),
    ]
    assert row.monthly_cost == result.monthly_cost == 121.04
    assert (row.cpu, row.memory_gib, row.storage_gib, row.instances) == (4.0, 8.0, 100.0, 2)
    assert result.unit_prices.profile == "opencost"
    assert row.breakdown[0].unit == "vCPU-hour"
    assert row.breakdown[0].unit_price == 0.031611


def test_load_balancer_public_ip_gpu_and_volumes_are_priced(catalog: PriceCatalog) -> None:
    lb = {"name": "lb", "type": "load_balancer", "provider": "kubernetes", "specs": {"public": True, "replicas": 2}}
    gpu = {
        "name": "trainer",
        "type": "container",
        "provider": "kubernetes",
        "specs": {
            "cpu": "500m",
            "memory": "1Gi",
            "gpu": "T4",
            "gpu_count": 2,
            "volumes": [{"name": "data", "mount_path": "/data", "size": "20Gi"}],
        },
    }
    result = estimate_resources(blueprint(lb, gpu), catalog, profile="gcp-e2-us-central1")
    lb_row, gpu_row = result.resources
    assert [(x.item, x.monthly_cost) for x in lb_row.breakdown] == [("load_balancer", 36.50), ("public_ip", 3.65)]
    expected = {
        "cpu": round(0.5 * 730 * 0.021811, 2),
        "memory": round(1 * 730 * 0.002923, 2),
        "gpu": round(2 * 730 * 0.35, 2),
        "volumes": round(20 * 0.10, 2),
    }
    assert {x.item: x.monthly_cost for x in gpu_row.breakdown} == expected
    assert gpu_row.gpus == 2


def test_autoscaling_counts_min_as_baseline_and_max_as_worst_case(catalog: PriceCatalog) -> None:
    app = {
        "name": "app",
        "type": "container",
        "provider": "docker",
        "specs": {"cpu": 1, "memory": 1024, "autoscaling": {"min": 2, "max": 5}},
    }
    result = estimate_resources(blueprint(app), catalog)
    row = result.resources[0]
    assert (row.instances, row.min_instances, row.max_instances) == (2, 2, 5)
    per_instance = round(730 * 0.031611, 2) + round(730 * 0.004237, 2)
    assert row.monthly_cost == pytest.approx(2 * per_instance, abs=0.011)
    assert row.monthly_cost_max == pytest.approx(5 * per_instance, abs=0.011)
    assert result.totals.cpu == 2.0
    assert result.totals.cpu_max == 5.0
    assert result.monthly_cost_max == row.monthly_cost_max


def test_breakdowns_add_up_exactly(catalog: PriceCatalog) -> None:
    resources = [
        {
            "name": f"r{i}",
            "type": ["compute", "container", "database", "load_balancer", "storage"][i % 5],
            "provider": "proxmox",
            "specs": {"cpu": 0.1 * (i + 1), "memory": 100 + 37 * i, "storage": 333 * (i + 1), "replicas": 1 + i % 3},
        }
        for i in range(40)
    ]
    result = estimate_resources(blueprint(*resources), catalog, profile="proxmox-onprem")
    total = money(result.monthly_cost)
    assert sum((money(r.monthly_cost) for r in result.resources), Decimal(0)) == total
    assert sum((money(v) for v in result.breakdown.values()), Decimal(0)) == total
    assert sum((money(v) for v in result.by_provider.values()), Decimal(0)) == total
    assert sum((money(v) for v in result.by_type.values()), Decimal(0)) == total
    for row in result.resources:
        assert sum((money(x.monthly_cost) for x in row.breakdown), Decimal(0)) == money(row.monthly_cost)
    assert monthly_cost(blueprint(*resources), catalog, "proxmox-onprem") == result.monthly_cost


def test_hosts_are_packed_with_the_reserve_and_production_spare(catalog: PriceCatalog) -> None:
    app = {"name": "app", "type": "container", "provider": "docker", "specs": {"cpu": 3, "memory": 1024, "replicas": 7}}
    result = estimate_resources(
        blueprint(app, environment="production"), catalog, host_cpu=8, host_memory_gib=32, reserved_fraction=0.25
    )
    hosts = result.hosts
    assert hosts.usable_cpu == 6.0
    assert (hosts.hosts, hosts.lower_bound, hosts.spare_hosts, hosts.hosts_recommended) == (4, 4, 1, 5)
    assert hosts.cpu_efficiency == round(21 / 24, 4)
    assert hosts.monthly_cost is None  # the default profile has no host cost


def test_profile_host_shape_is_the_default_and_is_costed(catalog: PriceCatalog) -> None:
    vm = {"name": "vm", "type": "compute", "provider": "proxmox", "specs": {"cpu": 16, "memory": "64Gi", "replicas": 5}}
    result = estimate_resources(blueprint(vm), catalog, profile="proxmox-onprem")
    assert (result.hosts.host_cpu, result.hosts.host_memory_gib) == (64, 256)
    assert result.hosts.hosts == 2  # 3 per host in 57.6 usable vCPU
    prices = catalog.get("proxmox-onprem")
    assert prices.host_monthly_cost is not None
    assert result.hosts.monthly_cost == round(2 * prices.host_monthly_cost, 2)


def test_oversized_instances_are_listed_not_packed(catalog: PriceCatalog) -> None:
    big = {"name": "big", "type": "compute", "provider": "proxmox", "specs": {"cpu": 64, "memory": 1024}}
    result = estimate_resources(blueprint(big), catalog)
    assert result.hosts.oversized == ["big"]
    assert result.hosts.hosts == 0


def test_missing_sizes_count_zero_and_are_noted(catalog: PriceCatalog) -> None:
    svc = {"name": "svc", "type": "service", "provider": "docker", "specs": {"image": "nginx:1.27"}}
    net = {"name": "net", "type": "network", "provider": "docker", "specs": {"cidr": "10.0.0.0/24"}}
    result = estimate_resources(blueprint(svc, net), catalog)
    assert result.monthly_cost == 0
    assert result.resources[0].assumptions == ["no cpu given; counted 0", "no memory given; counted 0"]
    assert result.resources[1].assumptions == []
    assert any("lack cpu or memory" in note for note in result.assumptions)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host_cpu": 0},
        {"host_cpu": float("nan")},
        {"host_memory_gib": -1},
        {"host_memory_gib": float("inf")},
        {"reserved_fraction": 1.0},
        {"reserved_fraction": -0.1},
        {"profile": "unknown"},
    ],
)
def test_bad_estimate_arguments_are_invalid_requests(catalog: PriceCatalog, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as info:
        estimate_resources(blueprint(WEB), catalog, **kwargs)
    assert info.value.code == "request.invalid"


def test_estimate_is_deterministic_and_serialisable(catalog: PriceCatalog) -> None:
    bp = blueprint(WEB, {"name": "db", "type": "database", "provider": "docker", "specs": {"cpu": 1, "memory": 512}})
    first = estimate_resources(bp, catalog).model_dump_json()
    assert first == estimate_resources(bp, catalog).model_dump_json()
    assert CostEstimate.model_validate_json(first).monthly_cost == estimate_resources(bp, catalog).monthly_cost
