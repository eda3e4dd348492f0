"""create_blueprint: templates plus the rules file give valid blueprints, with a reason for each choice."""

from __future__ import annotations

import json
import string
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from alma_mcp.analysis.create import (
    BlueprintRequest,
    CreatedBlueprint,
    CreateRulesBug,
    create_blueprint,
    tier_name,
)
from alma_mcp.analysis.create_rules import CreateRules, check_rules_against_catalog, load_create_rules
from alma_mcp.analysis.validate import validate
from alma_mcp.blueprint.loader import load_blueprint
from alma_mcp.blueprint.model import Environment, Provider, ResourceType
from alma_mcp.catalog.templates import TemplateCatalog
from alma_mcp.errors import ConfigError, TemplateInvalidParameter

ROOT = Path(__file__).resolve().parent.parent.parent
RULES_PATH = ROOT / "resources" / "create" / "rules.yaml"
CATALOG = TemplateCatalog.from_directory(ROOT / "resources" / "templates")
RULES = load_create_rules(RULES_PATH)

# Workload -> template chosen at the default availability of each environment (99.0 in development,
# 99.9 otherwise): web and api switch to ha-web-app at 99.9.
TEMPLATES = {
    "web": ("simple-web-app", "ha-web-app", "ha-web-app"),
    "api": ("simple-web-app", "ha-web-app", "ha-web-app"),
    "microservices": ("microservices-k8s",) * 3,
    "database": ("postgres-ha",) * 3,
    "cache": ("redis-cluster",) * 3,
    "data-pipeline": ("data-pipeline",) * 3,
    "ml-training": ("ml-training",) * 3,
    "observability": ("observability-stack",) * 3,
    "zero-trust": ("zero-trust-network",) * 3,
    "api-gateway": ("api-gateway",) * 3,
}
ENVIRONMENTS = ("development", "staging", "production")


def create(catalog: TemplateCatalog = CATALOG, rules: CreateRules = RULES, **fields: Any) -> CreatedBlueprint:
    return create_blueprint(BlueprintRequest(**fields), catalog, rules)


def resource(result: CreatedBlueprint, name: str) -> dict[str, Any]:
    return next(r for r in result.blueprint["resources"] if r["name"] == name)


def decision(result: CreatedBlueprint, topic: str) -> tuple[str, str]:
    found = next(d for d in result.rationale if d.topic == topic)
    return found.choice, found.reason


def assert_clean(result: CreatedBlueprint) -> None:
    report = validate(result.blueprint)
    assert report.valid, report.summary
    assert report.warnings == []


# --- every workload, provider and environment ---------------------------------------------------


def test_rules_cover_every_workload_in_the_table() -> None:
    assert sorted(RULES.workloads) == sorted(TEMPLATES)
    check_rules_against_catalog(RULES, CATALOG)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
@pytest.mark.parametrize("provider", [p.value for p in Provider])
@pytest.mark.parametrize("workload", sorted(TEMPLATES))
def test_every_workload_on_every_provider_in_every_environment_is_valid_without_warnings(
    workload: str, provider: str, environment: str
) -> None:
    result = create(workload=workload, provider=provider, environment=environment)

    assert_clean(result)
    expected = TEMPLATES[workload][ENVIRONMENTS.index(environment)]
    assert decision(result, "template")[0] == expected
    assert result.blueprint["metadata"]["base_template"] == expected
    assert result.blueprint["metadata"]["environment"] == environment
    assert result.blueprint["name"] == f"{workload}-{environment}"
    assert {r["provider"] for r in result.blueprint["resources"]} == {provider}
    assert len(result.blueprint["resources"]) == len(CATALOG.get(expected).resources)
    assert result.warnings == []
    assert result.extracted_from_text == []
    if provider in ("docker", "kubernetes"):
        assert all(r["type"] != "compute" for r in result.blueprint["resources"])
    if provider == "proxmox":
        assert all(r["type"] != "container" and "image" not in r["specs"] for r in result.blueprint["resources"])
    else:
        assert all(not {"os", "template", "ostemplate"} & set(r["specs"]) for r in result.blueprint["resources"])


def test_dependencies_and_backends_survive_the_move_to_another_provider() -> None:
    result = create(workload="web", environment="production", provider="kubernetes")
    template = CATALOG.get("ha-web-app")

    for original in template.resources:
        moved = resource(result, original.name)
        assert moved.get("dependencies", []) == original.dependencies
        assert moved["specs"].get("backends", []) == original.specs.backends


def test_compute_becomes_a_container_with_an_image_chosen_by_kind_role_gpu_or_workload() -> None:
    microservices = create(workload="microservices", environment="staging", provider="kubernetes")
    ml = create(workload="ml-training", environment="staging", provider="docker")
    web = create(workload="web", environment="development", provider="docker")

    assert resource(microservices, "k8s-master-1")["type"] == "container"
    assert resource(microservices, "k8s-master-1")["specs"]["image"] == "rancher/k3s:v1.30.5-k3s1"
    assert resource(microservices, "istio-service-mesh")["specs"]["image"] == "docker.io/istio/pilot:1.23.2"
    assert resource(ml, "gpu-node-1")["specs"]["image"] == "pytorch/pytorch:2.4.1-cuda12.1-cudnn9-runtime"
    assert resource(ml, "gpu-node-1")["specs"]["gpu_count"] == 8
    assert resource(ml, "mlflow")["specs"]["image"] == "ghcr.io/mlflow/mlflow:v2.16.2"
    assert resource(web, "postgres-db")["specs"]["image"] == "postgres:16.4"
    assert resource(web, "web-server-1")["specs"]["image"] == "nginx:1.27.2"
    assert decision(web, "adapt:web-server-1") == (
        "compute -> container; dropped os, template; image nginx:1.27.2",
        "docker cannot host a compute; os, template mean nothing on docker; docker runs images; "
        "the workload's application image (a pinned placeholder: replace with your own)",
    )


def test_kubernetes_services_moved_to_proxmox_become_vms_without_images() -> None:
    result = create(workload="api-gateway", environment="staging", provider="proxmox")

    kong = resource(result, "kong-gateway")
    assert kong["type"] == "service"
    assert "image" not in kong["specs"]
    assert (kong["specs"]["os"], kong["specs"]["template"]) == ("ubuntu-22.04", "ubuntu-22.04-cloudinit")
    lb = resource(result, "gateway-lb")["specs"]
    assert (lb["cpu"], lb["memory"], lb["template"]) == (1, 1024, "ubuntu-22.04-cloudinit")
    assert decision(result, "adapt") == (
        "4 resources moved to proxmox",
        "4 from kubernetes: one provider for the whole blueprint, so no dependency crosses providers",
    )


def docker_catalog() -> TemplateCatalog:
    """A one-template catalogue with a container, an unprotected database and a public endpoint without TLS."""
    template = load_blueprint(
        {
            "name": "simple-web-app",
            "metadata": {"category": "web", "complexity": "simple"},
            "resources": [
                {"name": "db", "type": "database", "provider": "docker",
                 "specs": {"kind": "postgresql", "image": "postgres:16.4", "cpu": 1, "memory": "1Gi"}},
                {"name": "app", "type": "container", "provider": "docker",
                 "specs": {"image": "nginx:1.27.2", "cpu": 1, "memory": "512Mi", "ports": [8080], "public": True},
                 "dependencies": ["db"]},
            ],
        }
    )  # fmt: skip
    return TemplateCatalog({"simple-web-app": template}, {})


def test_container_becomes_a_proxmox_vm_with_os_and_template() -> None:
    result = create(
        catalog=docker_catalog(), workload="web", environment="staging", provider="proxmox", availability=99.5
    )

    assert_clean(result)
    app = resource(result, "app")
    assert app["type"] == "compute"
    assert app["specs"] == {
        "cpu": 1,
        "memory": 512,
        "replicas": 1,
        "os": "ubuntu-22.04",
        "template": "ubuntu-22.04-cloudinit",
        "ports": [8080],
        "public": True,
    }
    assert app["dependencies"] == ["db"]


def test_production_turns_on_backups_encryption_and_tls_the_template_left_off() -> None:
    result = create(catalog=docker_catalog(), workload="web", environment="production", availability=99.5)

    assert_clean(result)
    db = resource(result, "db")["specs"]
    assert db["backup"] == {"schedule": "0 2 * * *", "retention_days": 14}
    assert (db["encryption_at_rest"], db["encryption_in_transit"]) == (True, True)
    assert resource(result, "app")["specs"]["tls"] is True
    assert decision(result, "backups")[0] == "turned on for db"
    assert decision(result, "encryption")[0] == "turned on for db"
    assert decision(result, "tls")[0] == "turned on for app"


def test_production_adds_backups_to_databases_of_the_template_without_them() -> None:
    result = create(workload="observability", environment="production")

    assert resource(result, "elasticsearch")["specs"]["backup"] == {"schedule": "0 2 * * *", "retention_days": 14}
    assert decision(result, "backups") == (
        "turned on for elasticsearch",
        "production: a data store without backups loses data for good",
    )


def test_development_halves_cpu_and_memory_and_drops_backups() -> None:
    result = create(workload="web", environment="dev", provider="proxmox")

    db = resource(result, "postgres-db")["specs"]
    assert (db["cpu"], db["memory"]) == (2, 4096)
    assert "backup" not in db
    assert decision(result, "sizing:postgres-db") == (
        "cpu 4 -> 2, memory 8Gi -> 4Gi",
        "development: cpu and memory x0.5, not below 250m cores and 256Mi",
    )
    assert decision(result, "backups")[0] == "dropped on postgres-db"
    assert [resource(result, f"web-server-{i}")["specs"]["replicas"] for i in (1, 2)] == [1, 1]


def test_development_never_shrinks_below_the_floors() -> None:
    result = create(workload="observability", environment="development")

    alertmanager = resource(result, "alertmanager")["specs"]
    assert (alertmanager["cpu"], alertmanager["memory"]) == (0.25, 256)


# --- free text ----------------------------------------------------------------------------------

TEXT_CASES: list[tuple[str, dict[str, Any]]] = [
    (
        "A wordpress shop with 10,000 users on k8s, 99.95% uptime, $800/month, production",
        {"workload": "web", "expected_users": 10000, "availability": 99.95, "environment": "production",
         "provider": "kubernetes", "budget_monthly": 800.0},
    ),
    (
        "REST API backend, 2k requests per second, staging on docker",
        {"workload": "api", "expected_rps": 2000.0, "environment": "staging", "provider": "docker"},
    ),
    (
        "kafka ETL pipeline, 1.5 million requests/day, dev on proxmox, budget of 1,200",
        {"workload": "data-pipeline", "expected_rps": 17.36, "environment": "development", "provider": "proxmox",
         "budget_monthly": 1200.0},
    ),
    (
        "GPU training cluster, mission critical, 12,000 usd per year",
        {"workload": "ml-training", "availability": 99.99, "budget_monthly": 1000.0},
    ),
    (
        "Prometheus and Grafana monitoring with high availability in pre-production",
        {"workload": "observability", "availability": 99.95, "environment": "staging"},
    ),
    ("redis cache serving 500 rps", {"workload": "cache", "expected_rps": 500.0}),
    ("Postgres database for the billing team", {"workload": "database"}),
    (
        "Kong API gateway with rate limiting, 3,000 req/s, five nines",
        {"workload": "api-gateway", "expected_rps": 3000.0, "availability": 99.999},
    ),
    ("zero-trust network with Keycloak", {"workload": "zero-trust"}),
    (
        "microservices on a service mesh, 90k requests per minute, prod",
        {"workload": "microservices", "expected_rps": 1500.0, "environment": "production"},
    ),
    (
        "e-commerce website, 2.5k concurrent users, 99.9% SLA, $1.2k per month, docker compose",
        {"workload": "web", "expected_users": 2500, "availability": 99.9, "budget_monthly": 1200.0,
         "provider": "docker"},
    ),
    (
        "simulated dry run of a blog with 36000 requests an hour",
        {"workload": "web", "expected_rps": 10.0, "provider": "simulation"},
    ),
    (
        "the SLA is 99.5% availability with no downtime",
        {"availability": 99.5},
    ),
    ("uptime of 99.9 % for the sandbox", {"availability": 99.9, "environment": "development"}),
    ("nothing useful here at all", {}),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES)
def test_free_text_yields_exactly_these_fields(text: str, expected: dict[str, Any]) -> None:
    assert RULES.text.extract(text).values == expected


def test_text_fields_flow_into_the_resolved_request_in_field_order() -> None:
    result = create(text=TEXT_CASES[0][0])

    assert result.extracted_from_text == [
        "workload",
        "expected_users",
        "availability",
        "environment",
        "provider",
        "budget_monthly",
    ]
    assert result.resolved.expected_rps == 1000.0  # 10,000 users x 0.1 rps per user
    assert result.resolved.environment is Environment.PRODUCTION
    assert decision(result, "workload") == ("web", "read from the text ('wordpress')")
    assert decision(result, "traffic") == (
        "1000 rps",
        "10000 concurrent users (read from the text ('10,000 users')) x 0.1 rps per user",
    )


def test_structured_fields_win_over_the_text() -> None:
    result = create(workload="api", provider="docker", text="wordpress shop on kubernetes, 500 rps, production")

    assert result.resolved.workload == "api"
    assert result.resolved.provider is Provider.DOCKER
    assert result.resolved.expected_rps == 500.0
    assert result.resolved.environment is Environment.PRODUCTION
    assert result.extracted_from_text == ["expected_rps", "environment"]
    assert decision(result, "workload") == ("api", "given in the request")


def test_structured_users_win_over_traffic_numbers_in_the_text() -> None:
    result = create(workload="api", expected_users=5000, text="3000 rps and 90,000 users on docker")

    assert (result.resolved.expected_rps, result.resolved.expected_users) == (500.0, 5000)
    assert result.extracted_from_text == ["provider"]


def test_name_is_derived_from_workload_and_environment_unless_given() -> None:
    derived = create(workload="cache", environment="stage")
    named = create(workload="cache", name="sessions")

    assert decision(derived, "name") == ("cache-staging", "derived: <workload>-<environment>")
    assert (named.blueprint["name"], decision(named, "name")) == ("sessions", ("sessions", "given in the request"))


def test_out_of_range_numbers_in_the_text_are_ignored_with_a_warning() -> None:
    result = create(text="a website with 20 million rps")

    assert result.extracted_from_text == ["workload"]
    assert result.resolved.expected_rps == 50.0
    assert result.warnings == ["ignored expected_rps 20000000 read from '20 million rps': outside 0..10000000"]


@pytest.mark.parametrize(
    "text",
    ["budget" + " " * 3990 + "x", "5" + " " * 3990 + "x", "uptime" + "\n" * 3990 + "x", "budget \t" * 1300],
)
def test_long_whitespace_runs_do_not_make_the_patterns_backtrack(text: str) -> None:
    # Before whitespace was collapsed, the first text took minutes (three adjacent optional \s*).
    started = time.perf_counter()

    RULES.text.extract(text)

    assert time.perf_counter() - started < 1.0


def test_evidence_is_quoted_from_the_text_with_whitespace_collapsed() -> None:
    found = RULES.text.extract("a   Kafka\n\tpipeline at 2,000\n requests per second")

    assert found.evidence == {"workload": "Kafka", "expected_rps": "2,000 requests per second"}


def test_text_without_any_match_says_so() -> None:
    result = create(text="nothing useful here at all")

    assert result.extracted_from_text == []
    assert result.warnings == ["nothing in the text matched the rules' keywords or number patterns; defaults used"]


# --- sizing -------------------------------------------------------------------------------------


def replicas(result: CreatedBlueprint, *names: str) -> list[int]:
    return [resource(result, n)["specs"]["replicas"] for n in names]


def test_replicas_follow_traffic_when_it_needs_more_than_availability() -> None:
    # ceil(1000 x 1.3 / 250) = 6 > minimum 1 (99.5%), spread over the template's two web servers.
    result = create(workload="web", environment="staging", provider="proxmox", availability=99.5, expected_rps=1000)

    assert decision(result, "template")[0] == "simple-web-app"
    assert replicas(result, "web-server-1", "web-server-2") == [3, 3]
    assert decision(result, "replicas:web-server") == (
        "6 (web-server-1: 3, web-server-2: 3)",
        "max(availability minimum 1, ceil(1000 rps x 1.3 / 250 rps per instance) = 6) = 6; "
        "spread over the template's 2 resources",
    )


def test_replicas_follow_availability_when_traffic_is_low() -> None:
    # ceil(100 x 1.3 / 250) = 1 < minimum 3 (99.99%): one per web server; web-1 keeps autoscaling 1..10.
    result = create(workload="web", environment="production", availability=99.99, expected_rps=100)

    assert replicas(result, "web-1", "web-2", "web-3") == [1, 1, 1]
    assert resource(result, "web-1")["specs"]["autoscaling"] == {"min": 1, "max": 10, "target_cpu": 70}


def test_an_uneven_count_goes_to_the_first_members() -> None:
    # ceil(900 x 1.3 / 250) = ceil(4.68) = 5 over three web servers.
    result = create(workload="web", environment="production", provider="docker", expected_rps=900)

    assert replicas(result, "web-1", "web-2", "web-3") == [2, 2, 1]
    assert resource(result, "web-1")["specs"]["autoscaling"] == {"min": 1, "max": 10, "target_cpu": 70}


def test_users_convert_to_rps_when_rps_is_absent() -> None:
    # 5000 users x 0.1 = 500 rps; ceil(500 x 1.3 / 500) = 2 for an api at 99.5%.
    result = create(workload="api", environment="staging", availability=99.5, expected_users=5000)

    assert result.resolved.expected_rps == 500.0
    assert replicas(result, "web-server-1", "web-server-2") == [1, 1]


def test_each_tier_uses_its_own_throughput() -> None:
    # spark: ceil(5000 x 1.3 / 2000) = 4; airflow: ceil(5000 x 1.3 / 50000) = 1 -> minimum 2.
    result = create(workload="data-pipeline", environment="production")

    assert replicas(result, "spark-cluster", "airflow") == [4, 2]
    assert replicas(result, "kafka-cluster", "clickhouse") == [3, 8]  # data tier keeps the template's counts


def test_autoscaling_bounds_enclose_the_new_replicas() -> None:
    # Worker pool: ceil(20000 x 1.3 / 1000) = 26 > template max 20, so max rises to 26; min is the minimum 2.
    result = create(workload="microservices", environment="production", expected_rps=20000)

    pool = resource(result, "k8s-worker-pool")["specs"]
    assert pool["replicas"] == 26
    assert pool["autoscaling"] == {"min": 2, "max": 26, "target_cpu": 70}


def test_quorum_and_gpu_resources_keep_the_template_count() -> None:
    cache = create(workload="cache", environment="development")
    ml = create(workload="ml-training", environment="production", expected_rps=10000)

    assert resource(cache, "redis-sentinel")["specs"]["replicas"] == 3
    assert "replicas" not in resource(ml, "gpu-node-1")["specs"]
    assert resource(ml, "mlflow")["specs"]["replicas"] == 100  # ceil(10000 x 1.3 / 100) = 130, capped at 100
    assert decision(cache, "replicas:fixed")[0] == "template counts kept for redis-sentinel"


def test_replicas_are_capped_with_a_warning() -> None:
    result = create(workload="web", environment="staging", availability=99.5, expected_rps=1_000_000)

    assert replicas(result, "web-server-1", "web-server-2") == [50, 50]
    assert result.warnings == [
        "tier web-server needs 5200 instances for 1000000 rps; capped at 100: "
        "shard, cache or raise per-instance capacity"
    ]


# --- cost and budget ----------------------------------------------------------------------------

SQUEEZE: dict[str, Any] = {"workload": "web", "environment": "production", "provider": "proxmox", "availability": 99.5}


def test_cost_is_priced_from_the_reference_unit_prices() -> None:
    # postgres-db 730 x (4 x 0.02 + 8 x 0.003) + 200 x 0.08 = 91.92; six web servers at 41.96;
    # load balancer 730 x (2 x 0.02 + 2 x 0.003) + 20 x 0.08 = 35.18.
    result = create(**SQUEEZE, expected_rps=1000)

    assert result.estimated_monthly_cost == 378.86
    assert decision(result, "budget") == ("none given", "sized for traffic and availability only")


def test_budget_within_reach_takes_replicas_first() -> None:
    result = create(**SQUEEZE, expected_rps=1000, budget_monthly=300)

    assert result.estimated_monthly_cost == 294.94
    assert replicas(result, "web-server-1", "web-server-2") == [2, 2]
    assert resource(result, "postgres-db")["specs"]["cpu"] == 4
    assert decision(result, "budget:replicas:web-server") == (
        "6 -> 4 (web-server-1: 2, web-server-2: 2)",
        "$378.86 a month is over the $300.00 budget; the floor is 2 "
        "(availability minimum 1, at least one per template resource)",
    )
    assert decision(result, "budget") == ("met after reductions", "$294.94 <= $300.00 a month")
    assert result.warnings == [
        "budget: tier web-server runs 4 instances, fewer than the 6 its traffic needs (250 rps each with headroom)"
    ]


def test_budget_out_of_reach_shrinks_step_by_step_then_warns() -> None:
    result = create(**SQUEEZE, expected_rps=1000, budget_monthly=50)

    assert result.estimated_monthly_cost == 71.96
    steps = [(d.topic, d.choice) for d in result.rationale if d.topic.startswith("budget")]
    assert steps == [
        ("budget:replicas:web-server", "6 -> 2 (web-server-1: 1, web-server-2: 1)"),
        ("budget:size:1", "cpu and memory x0.75"),
        ("budget:size:2", "cpu and memory x0.5"),
        ("budget:size:3", "cpu and memory x0.25"),
        ("budget", "not met"),
    ]
    assert (resource(result, "postgres-db")["specs"]["cpu"], resource(result, "postgres-db")["specs"]["memory"]) == (
        1,
        2048,
    )
    assert result.warnings[-1] == (
        "budget of $50.00 a month cannot be met: the smallest configuration the rules allow costs $71.96 "
        "(availability minimums, cpu and memory floors; storage is not reduced)"
    )
    assert_clean(result)


def test_budget_never_takes_a_tier_below_its_availability_minimum() -> None:
    result = create(workload="api-gateway", environment="production", availability=99.99, budget_monthly=1)

    assert resource(result, "kong-gateway")["specs"]["replicas"] == 3
    assert decision(result, "budget")[0] == "not met"


# --- determinism, isolation and bad input -------------------------------------------------------


def test_same_request_gives_byte_identical_output() -> None:
    request = BlueprintRequest(text=TEXT_CASES[0][0], budget_monthly=400)

    first = create_blueprint(request, CATALOG, RULES).model_dump_json()
    second = create_blueprint(request, CATALOG, RULES).model_dump_json()

    assert first == second


def test_the_catalogue_is_unchanged_after_calls() -> None:
    before = {name: json.dumps(CATALOG.get(name).to_data(), sort_keys=True) for name in CATALOG.names()}

    for workload in TEMPLATES:
        create(workload=workload, environment="development", provider="kubernetes", budget_monthly=1)

    assert {name: json.dumps(CATALOG.get(name).to_data(), sort_keys=True) for name in CATALOG.names()} == before


def error_types(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[str, str]]:
    return [(str(e["loc"][0]), e["type"]) for e in exc.value.errors()]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"name": "Web_App"}, ("name", "blueprint.invalid_name")),
        ({"name": "-web"}, ("name", "blueprint.invalid_name")),
        ({"availability": 100}, ("availability", "less_than_equal")),
        ({"availability": 89.9}, ("availability", "greater_than_equal")),
        ({"expected_rps": -1}, ("expected_rps", "greater_than_equal")),
        ({"expected_rps": float("nan")}, ("expected_rps", "finite_number")),
        ({"expected_users": -5}, ("expected_users", "greater_than_equal")),
        ({"budget_monthly": 0}, ("budget_monthly", "greater_than")),
        ({"environment": "qa"}, ("environment", "enum")),
        ({"provider": "aws"}, ("provider", "enum")),
        ({"text": "x" * 4001}, ("text", "string_too_long")),
        ({"colour": "blue"}, ("colour", "extra_forbidden")),
    ],
)
def test_bad_request_fields_are_refused_by_the_request_model(fields: dict[str, Any], expected: tuple[str, str]) -> None:
    with pytest.raises(ValidationError) as exc:
        BlueprintRequest(**fields)

    assert error_types(exc) == [expected]


def test_aliases_are_accepted_for_environment_and_case_for_provider() -> None:
    request = BlueprintRequest(environment="prod", provider="Kubernetes", workload=" Web ")

    assert (request.environment, request.provider, request.workload) == (
        Environment.PRODUCTION,
        Provider.KUBERNETES,
        "web",
    )


def test_unknown_workload_is_an_invalid_parameter_naming_the_allowed_ones() -> None:
    with pytest.raises(TemplateInvalidParameter) as exc:
        create(workload="blockchain")

    assert exc.value.code == "template.invalid_parameter"
    assert exc.value.data == {"parameter": "workload", "allowed": list(RULES.workloads)}


def test_rules_that_yield_a_blueprint_with_warnings_are_reported_as_a_rules_bug() -> None:
    # Without 'database' in images.required_for, a database moved to Kubernetes gets no image.
    images = RULES.images.model_copy(update={"required_for": [ResourceType.CONTAINER]})
    broken = RULES.model_copy(update={"images": images})

    with pytest.raises(CreateRulesBug, match=r"\[blueprint\.missing_image\] 'pg-primary' runs on kubernetes"):
        create(rules=broken, workload="database", provider="kubernetes")


# --- the rules file ------------------------------------------------------------------------------


def write_rules(tmp_path: Path, old: str, new: str) -> Path:
    text = RULES_PATH.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "rules.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("app_image: nginx:1.27.2", "app_image: nginx:latest", "is not pinned"),
        ("redis: redis:7.4.1", "redis: redis", "is not pinned"),
        ("default_workload: web", "default_workload: blog", "default_workload 'blog' is not a workload"),
        ("{at_least: 0, instances: 1}", "{at_least: 95, instances: 1}", "needs a row with at_least <= 90"),
        ("size_steps: [0.75, 0.5, 0.25]", "size_steps: [0.5, 0.75]", "strictly descending"),
        ("      divide_by: 60", "      divide_by: 0", "greater than 0"),
        ("{number}\\s*{scale}\\s*(?:rps", "(?:rps", "has no value"),
        ("    - value: database\n", "    - value: ledger\n", "unknown workloads: ledger"),
        ("  production: {size_factor: 1.0, drop_backups: false, harden: true}\n", "", "production"),
    ],
)
def test_an_invalid_rules_file_is_a_config_error_naming_the_file(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = write_rules(tmp_path, old, new)

    with pytest.raises(ConfigError) as exc:
        load_create_rules(path)

    assert str(path) in exc.value.message
    assert message in exc.value.message
    assert exc.value.data == {"file": str(path)}


def test_a_missing_rules_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_create_rules(tmp_path / "absent.yaml")

    assert exc.value.code == "config.invalid"


def test_rules_naming_an_unknown_template_fail_the_catalogue_check(tmp_path: Path) -> None:
    rules = load_create_rules(write_rules(tmp_path, "template: postgres-ha", "template: mysql-ha"))

    with pytest.raises(ConfigError) as exc:
        check_rules_against_catalog(rules, CATALOG)

    assert exc.value.data == {"workload": "database", "template": "mysql-ha"}


# --- properties ---------------------------------------------------------------------------------

KEYWORDS = sorted(
    {
        kw
        for table in (RULES.text.workloads, RULES.text.environments, RULES.text.providers)
        for r in table
        for kw in r.keywords
    }
    | {kw for r in RULES.text.availability_phrases for kw in r.keywords}
)
UNITS = [
    "rps", "req/s", "requests per second", "requests per minute", "requests/day", "events an hour",
    "users", "concurrent users", "% uptime", "%", "usd per month", "dollars a year",
]  # fmt: skip
SCALES = ["", "k", " thousand", " million", "m", " billion"]
numbers = st.builds(
    lambda n, scale, unit: f"{n}{scale} {unit}",
    st.one_of(st.integers(0, 2_000_000), st.floats(0, 1e6, allow_nan=False).map(lambda f: f"{f:.2f}")),
    st.sampled_from(SCALES),
    st.sampled_from(UNITS),
)
money = st.builds(lambda n, per: f"${n:,}{per}", st.integers(1, 50_000), st.sampled_from(["/month", " per year", ""]))
noise = st.text(alphabet=string.ascii_letters + string.digits + " ,.$%/-", max_size=20)
free_text = st.lists(st.one_of(st.sampled_from(KEYWORDS), numbers, money, noise), max_size=12).map(" ".join)
labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)

mixed_requests = st.builds(
    BlueprintRequest,
    name=st.none() | labels,
    description=st.none() | st.text(max_size=40),
    workload=st.none() | st.sampled_from(sorted(RULES.workloads)),
    expected_rps=st.none() | st.floats(0, 10_000_000, allow_nan=False),
    expected_users=st.none() | st.integers(0, 1_000_000_000),
    availability=st.none() | st.floats(90, 99.999, allow_nan=False),
    environment=st.none() | st.sampled_from(list(Environment)),
    provider=st.none() | st.sampled_from(list(Provider)),
    budget_monthly=st.none() | st.floats(0.01, 1_000_000, allow_nan=False),
    text=st.none() | free_text,
)
# Requests described mostly in words, so that the text, not the structured fields, drives the build.
wordy_text = st.lists(st.one_of(st.sampled_from(KEYWORDS), numbers, money), min_size=3, max_size=12).map(", ".join)
text_requests = st.builds(BlueprintRequest, name=st.none() | labels, text=wordy_text)
requests = st.one_of(mixed_requests, text_requests)


def traffic_tiers(result: CreatedBlueprint) -> dict[str, int]:
    """Total replicas per traffic-sized tier, found independently of create's own bookkeeping."""
    app = RULES.app_tier
    totals: dict[str, int] = {}
    for res in result.blueprint["resources"]:
        specs = res["specs"]
        if ResourceType(res["type"]) not in app.types or specs.get("role") in app.fixed_roles:
            continue
        if specs.get("kind") in app.fixed_kinds or specs.get("gpu"):
            continue
        totals[tier_name(res["name"])] = totals.get(tier_name(res["name"]), 0) + specs["replicas"]
    return totals


@settings(derandomize=True, max_examples=300, deadline=None)
@given(requests)
def test_any_request_gives_a_clean_blueprint_that_meets_availability_minimums(request: BlueprintRequest) -> None:
    result = create_blueprint(request, CATALOG, RULES)

    assert_clean(result)
    resolved = result.resolved
    assert resolved.availability is not None
    minimum = RULES.availability.minimum_for(resolved.availability)
    assert all(total >= minimum for total in traffic_tiers(result).values())
    for res in result.blueprint["resources"]:
        auto = res["specs"].get("autoscaling")
        if auto is not None:
            assert auto["min"] <= res["specs"]["replicas"] <= auto["max"]
    assert result.estimated_monthly_cost >= 0
    if resolved.budget_monthly is not None and result.estimated_monthly_cost > resolved.budget_monthly:
        assert any(w.startswith("budget of ") for w in result.warnings)
    for field in result.extracted_from_text:
        assert getattr(request, field) is None
