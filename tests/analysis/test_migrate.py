"""migrate_infrastructure: the template x provider matrix, Kompose's table, the 7 Rs, waves and downtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from alma_mcp.analysis.architecture_data import load_architecture_data
from alma_mcp.analysis.audit import PolicyCatalog
from alma_mcp.analysis.create import load_create_rules
from alma_mcp.analysis.migrate import DISPOSITIONS, Migration, load_source, migrate, resolve_target, trim
from alma_mcp.analysis.validate import validate
from alma_mcp.blueprint.model import Provider
from alma_mcp.errors import BlueprintError, InvalidRequest

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = load_architecture_data(ROOT / "resources" / "architecture")
RULES = load_create_rules(ROOT / "resources" / "create" / "rules.yaml")
POLICIES = PolicyCatalog.from_directory(ROOT / "resources" / "policies")
TEMPLATES = sorted(p.stem for p in (ROOT / "resources" / "templates").glob("*.yaml"))
TRANSFER = DATA.migration.transfer


def run(source: str | dict[str, Any], target: str, strategy: str = "auto") -> Migration:
    blueprint, project = load_source(source)
    return migrate(blueprint, resolve_target(target), DATA, RULES, POLICIES, strategy=strategy, project=project)


def template(name: str) -> str:
    return (ROOT / "resources" / "templates" / f"{name}.yaml").read_text()


def decision(result: Migration, name: str) -> Any:
    return next(d for d in result.decisions if d.resource == name)


def target_resource(result: Migration, name: str) -> dict[str, Any]:
    return next(r for r in result.target_blueprint["resources"] if r["name"] == name)


def check_plan(result: Migration, source_names: list[str]) -> None:
    """The invariants every migration holds, whatever its source and target."""
    assert [d.resource for d in result.decisions] == source_names  # one decision per resource, in order
    assert all(d.disposition in DISPOSITIONS and d.reason for d in result.decisions)
    assert sum(result.counts.values()) == len(source_names)
    report = validate(result.target_blueprint)
    assert report.valid, report.summary
    assert result.target_check.valid
    moving = [d.resource for d in result.decisions if d.disposition not in ("retire", "retain", "repurchase")]
    waved = [n for w in result.waves for n in w.resources]
    assert sorted(waved) == sorted(moving)
    assert len(waved) == len(set(waved))
    wave_of = {n: w.number for w in result.waves for n in w.resources}
    for res in result.target_blueprint["resources"]:
        for dep in res.get("dependencies", []):
            if res["name"] in wave_of and dep in wave_of:
                assert wave_of[dep] <= wave_of[res["name"]], (res["name"], dep)
    for d in result.decisions:
        assert (d.wave is None) == (d.resource not in wave_of)
        if d.disposition in ("retire", "repurchase"):
            assert d.target_provider is None
            assert d.resource not in {r["name"] for r in result.target_blueprint["resources"]}
        if d.method == "dump-restore":
            assert d.downtime_minutes == round(d.data_gb / TRANSFER.gb_per_minute + TRANSFER.warm_up_minutes, 1)
        if d.method == "replication":
            assert d.downtime_minutes == TRANSFER.replication_lag_minutes + TRANSFER.switch_minutes
    for wave in result.waves:
        assert wave.downtime_minutes == max(decision(result, n).downtime_minutes for n in wave.resources)
        assert len(wave.resources) <= DATA.migration.max_wave_size
        assert wave.cutover
        assert wave.rollback
        assert wave.pre_checks
    assert result.waves[0].pilot if result.waves else True
    assert result.total_downtime_minutes == round(sum(w.downtime_minutes for w in result.waves), 1)


@pytest.mark.parametrize("target", ["docker", "kubernetes", "proxmox", "simulation"])
@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_migrates_to_every_provider(name: str, target: str) -> None:
    source = yaml.safe_load(template(name))
    result = run(template(name), target)
    check_plan(result, [r["name"] for r in source["resources"]])
    for res in result.target_blueprint["resources"]:
        moved = decision(result, res["name"]).disposition not in ("retain",)
        assert res["provider"] == target or not moved


def test_matrix_dispositions_for_the_web_templates() -> None:
    to_k8s = run(template("simple-web-app"), "kubernetes")
    assert decision(to_k8s, "web-server-1").disposition == "replatform"
    assert target_resource(to_k8s, "web-server-1")["type"] == "container"
    assert decision(to_k8s, "postgres-db").method == "replication"  # 200 GB of PostgreSQL: replicated
    assert target_resource(to_k8s, "postgres-db")["specs"]["image"] == "postgres:16.4"
    same = run(template("simple-web-app"), "proxmox")
    assert same.counts["relocate"] == 4


def test_kubernetes_nodes_retire_when_moving_onto_kubernetes() -> None:
    result = run(template("microservices-k8s"), "kubernetes")
    assert [d.resource for d in result.decisions if d.disposition == "retire"] == [
        "k8s-master-1", "k8s-master-2", "k8s-master-3", "k8s-api-lb", "k8s-worker-pool",
    ]  # fmt: skip
    mesh = target_resource(result, "istio-service-mesh")
    assert "k8s-api-lb" not in mesh["dependencies"]
    assert decision(result, "persistent-storage").disposition == "retain"  # 10 TB of Ceph, not replicable


def test_containers_become_vms_on_proxmox_and_keep_their_image() -> None:
    result = run(template("observability-stack"), "proxmox")
    grafana = target_resource(result, "grafana")
    assert grafana["provider"] == "proxmox"
    assert grafana["specs"]["options"]["container_image"] == "grafana/grafana:11.2.0"
    assert grafana["specs"]["template"] == "ubuntu-22.04-cloudinit"
    assert "image" not in grafana["specs"]


def test_a_windows_vm_is_not_migratable_to_containers() -> None:
    source = {
        "name": "office",
        "resources": [
            {"name": "ad", "type": "compute", "provider": "proxmox",
             "specs": {"os": "windows-server-2022", "template": "win2022", "cpu": 4, "memory": "8GB"}},
            {"name": "app", "type": "compute", "provider": "proxmox", "dependencies": ["ad"],
             "specs": {"os": "ubuntu-22.04", "template": "ubuntu-22.04-cloudinit", "cpu": 2, "memory": "4GB"}},
        ],
    }  # fmt: skip
    result = run(source, "kubernetes")
    ad = decision(result, "ad")
    assert (ad.disposition, ad.migratable) == ("retain", False)
    assert "windows-server-2022 VM cannot become a Linux container" in ad.reason
    assert result.not_migratable[0].resource == "ad"
    assert target_resource(result, "ad")["provider"] == "proxmox"  # stays, reached over a hybrid link
    assert any("hybrid links" in r for r in result.risks)
    assert any("PLACEHOLDER" in c for c in decision(result, "app").changes)


def test_hints_choose_retire_retain_repurchase_and_forced_dispositions() -> None:
    source: dict[str, Any] = {
        "name": "legacy",
        "resources": [
            {"name": "old-report", "type": "container", "provider": "docker", "specs": {"image": "report:1.0"},
             "metadata": {"migration": {"eol": True}}},
            {"name": "mail", "type": "container", "provider": "docker", "specs": {"image": "postfix:3.8"},
             "metadata": {"migration": {"saas": "a hosted mail service"}}},
            {"name": "licence", "type": "container", "provider": "docker", "specs": {"image": "flexlm:11"},
             "metadata": {"migration": {"pinned": "licence bound to the host's MAC address"}}},
            {"name": "api", "type": "container", "provider": "docker", "specs": {"image": "api:2.0"},
             "dependencies": ["mail"], "metadata": {"migration": {"disposition": "refactor", "reason": "split it"}}},
            {"name": "needed", "type": "container", "provider": "docker", "specs": {"image": "dep:1.0"},
             "metadata": {"migration": {"unused": True}}},
            {"name": "user", "type": "container", "provider": "docker", "specs": {"image": "user:1.0"},
             "dependencies": ["needed"]},
        ],
    }  # fmt: skip
    result = run(source, "kubernetes")
    got = {d.resource: d.disposition for d in result.decisions}
    assert got == {
        "old-report": "retire", "mail": "repurchase", "licence": "retain", "api": "refactor",
        "needed": "retain", "user": "rehost",
    }  # fmt: skip
    assert "still needed by user" in decision(result, "needed").reason
    assert "mail" not in target_resource(result, "api")["dependencies"]
    assert target_resource(result, "api")["specs"]["autoscaling"]["min"] == 2
    with pytest.raises(InvalidRequest, match="allowed: retire, retain"):
        run({**source, "resources": [{**source["resources"][0], "metadata": {"migration": {"disposition": "move"}}}]},
            "docker")  # fmt: skip


def test_strategies() -> None:
    refactored = run(template("zero-trust-network"), "docker", "refactor")
    idp = decision(refactored, "identity-provider")
    assert idp.disposition == "refactor"
    assert target_resource(refactored, "identity-provider")["specs"]["read_only_root_filesystem"] is True
    rehost = run(template("simple-web-app"), "kubernetes", "rehost")
    assert "rehost is impossible" in decision(rehost, "web-server-1").reason
    with pytest.raises(InvalidRequest, match="allowed: auto, rehost, replatform, refactor"):
        run(template("simple-web-app"), "kubernetes", "lift")


def test_data_size_hint_drives_the_downtime_formula() -> None:
    def db(gb: float) -> dict[str, Any]:
        return {
            "name": "shop",
            "resources": [
                {"name": "db", "type": "database", "provider": "docker",
                 "specs": {"kind": "postgresql", "image": "postgres:16.4", "storage": "500GB"},
                 "metadata": {"migration": {"data_gb": gb}}},
            ],
        }  # fmt: skip

    small = decision(run(db(10), "kubernetes"), "db")
    assert (small.method, small.downtime_minutes) == ("dump-restore", 10 / 1.0 + 5)
    large = decision(run(db(400), "kubernetes"), "db")
    assert (large.method, large.downtime_minutes) == ("replication", 3.0)


def test_bad_inputs_are_coded_errors() -> None:
    with pytest.raises(InvalidRequest, match="both mappings; got a list"):
        run("- web\n- db\n", "kubernetes")
    with pytest.raises(InvalidRequest, match="mapping of service name -> settings"):
        run("services: [web, db]\n", "kubernetes")
    with pytest.raises(InvalidRequest, match="service 'web' must be a mapping"):
        run("services:\n  web: nginx\n", "kubernetes")
    with pytest.raises(InvalidRequest, match="allowed: simulation, docker, kubernetes, proxmox"):
        run(template("simple-web-app"), "aws")
    with pytest.raises(BlueprintError):
        run({"name": "x", "resources": [{"name": "a", "type": "vm", "provider": "docker"}]}, "kubernetes")


def test_trim_keeps_the_budget() -> None:
    result = trim(run(template("ha-web-app"), "kubernetes"), 2)
    assert len(result.decisions) == 2
    assert result.decisions_omitted == 8
    assert result.waves_omitted == max(0, 5 - 2)


# ---------------------------------------------------------------------------------------------
# Docker Compose, converted with Kompose's table
# ---------------------------------------------------------------------------------------------

COMPOSE: dict[str, tuple[str, dict[str, Any]]] = {
    "ports-and-expose": (
        """
services:
  web:
    image: nginx:1.27.2
    ports: ["8080:80", "127.0.0.1:9090:9090/tcp", {target: 443, published: 8443}]
    expose: ["3000"]
""",
        {"web": {"type": "container", "specs.ports": [80, 443, 3000, 9090], "specs.public": True}},
    ),
    "environment-list-and-secrets": (
        """
services:
  api:
    image: shop/api:1.4.2
    environment: ["LOG_LEVEL=info", "DATABASE_PASSWORD=hunter2", "API_TOKEN=abc123"]
""",
        {"api": {"specs.env": {"LOG_LEVEL": "info"},
                 "specs.secrets": {"DATABASE_PASSWORD": "api-database-password", "API_TOKEN": "api-api-token"}}},
    ),
    "environment-mapping": (
        "services:\n  api:\n    image: shop/api:1.4.2\n    environment: {MODE: prod, WORKERS: 4}\n",
        {"api": {"specs.env": {"MODE": "prod", "WORKERS": "4"}}},
    ),
    "limits-v2": (
        "services:\n  api:\n    image: shop/api:1.4.2\n    mem_limit: 512m\n    cpus: 1.5\n",
        {"api": {"specs.memory": 512, "specs.cpu": 1.5}},
    ),
    "deploy-resources-and-replicas": (
        """
services:
  worker:
    image: shop/worker:1.4.2
    deploy:
      replicas: 3
      resources: {limits: {cpus: "0.5", memory: 1g}}
""",
        {"worker": {"specs.replicas": 3, "specs.cpu": 0.5, "specs.memory": 1024}},
    ),
    "named-volume-to-pvc": (
        """
services:
  db:
    image: postgres:16.4
    volumes: ["pgdata:/var/lib/postgresql/data", "./init.sql:/docker-entrypoint-initdb.d/init.sql:ro"]
volumes: {pgdata: {}}
""",
        {"db": {"type": "database", "specs.kind": "postgresql",
                "specs.volumes": [{"name": "pgdata", "mount_path": "/var/lib/postgresql/data"}],
                "specs.options.host_paths": ["./init.sql:/docker-entrypoint-initdb.d/init.sql"]}},
    ),
    "capabilities-and-hardening": (
        """
services:
  proxy:
    image: traefik:v3.1
    cap_add: [NET_BIND_SERVICE]
    cap_drop: [ALL]
    read_only: true
    user: "1000:1000"
    security_opt: ["no-new-privileges:true"]
""",
        {"proxy": {"specs.capabilities": ["NET_BIND_SERVICE"], "specs.options.cap_drop": ["ALL"],
                   "specs.read_only_root_filesystem": True, "specs.user": "1000:1000",
                   "specs.options.no_new_privileges": True}},
    ),
    "host-namespaces-and-tmpfs": (
        """
services:
  agent:
    image: monitor/agent:2.0
    network_mode: host
    pid: host
    tmpfs: /run
""",
        {"agent": {"specs.host_network": True, "specs.options.host_pid": True, "specs.options.tmpfs": ["/run"]}},
    ),
    "labels-to-annotations": (
        "services:\n  api:\n    image: shop/api:1.4.2\n    labels: {team: shop, tier: backend}\n",
        {"api": {"metadata.annotations": {"team": "shop", "tier": "backend"}}},
    ),
    "depends-on-and-healthcheck": (
        """
services:
  web:
    image: shop/web:1.4.2
    depends_on: {db: {condition: service_healthy}}
    command: gunicorn app:wsgi -b 0.0.0.0:8000
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost:8000/health"]
      interval: 30s
      timeout: 5s
      retries: 3
  db:
    image: postgres:16.4
""",
        {"web": {"dependencies": ["db"], "specs.command": ["gunicorn", "app:wsgi", "-b", "0.0.0.0:8000"],
                 "specs.healthcheck": {"command": ["curl", "-f", "http://localhost:8000/health"], "interval_s": 30,
                                       "timeout_s": 5, "retries": 3}}},
    ),
    "names-and-data-stores": (
        """
services:
  Cache_Store: {image: "redis:7.4.1"}
  queue: {image: "rabbitmq:3.13.7"}
  files: {image: "minio/minio:RELEASE.2024-10-02T17-50-41Z"}
""",
        {"cache-store": {"type": "cache", "specs.kind": "redis"}, "queue": {"type": "queue"},
         "files": {"type": "storage"}},
    ),
}  # fmt: skip


def _get(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for key in dotted.split("."):
        node = node[key]
    return node


@pytest.mark.parametrize("case", sorted(COMPOSE))
def test_compose_follows_kompose_mapping(case: str) -> None:
    text, expected = COMPOSE[case]
    result = run(text, "kubernetes")
    for name, fields in expected.items():
        res = target_resource(result, name)
        assert res["provider"] == "kubernetes"
        for dotted, value in fields.items():
            got = _get(res, dotted)
            if dotted == "specs.volumes":
                got = [{k: v for k, v in vol.items() if k in ("name", "mount_path")} for vol in got]
            assert got == value, (name, dotted)
    assert result.source_format == "compose"
    assert result.conversions
    check_plan(result, [r["name"] for r in result.target_blueprint["resources"]])


def test_compose_secret_values_are_never_copied() -> None:
    result = run(COMPOSE["environment-list-and-secrets"][0], "kubernetes")
    dumped = json.dumps(result.model_dump())
    assert "hunter2" not in dumped
    assert "abc123" not in dumped
    assert any("their values are not copied" in c for c in result.conversions)


def test_compose_services_that_cannot_move() -> None:
    text = """
services:
  builder:
    build: ./app
  ci-agent:
    image: jenkins/inbound-agent:3256.v88a_f6e922152-1
    volumes: ["/var/run/docker.sock:/var/run/docker.sock"]
  app:
    image: shop/app:1.4.2
    depends_on: [builder]
"""
    result = run(text, "kubernetes")
    reasons = {n.resource: n.reason for n in result.not_migratable}
    assert "build and push it" in reasons["builder"]
    assert "Docker socket" in reasons["ci-agent"]
    assert decision(result, "ci-agent").migratable is False
    assert "builder" not in {r["name"] for r in result.target_blueprint["resources"]}
    assert any("builder is left behind" in r for r in result.risks)
    to_proxmox = run(text, "proxmox")
    assert decision(to_proxmox, "ci-agent").migratable  # a VM running Docker has a socket


def test_compose_to_docker_relocates() -> None:
    result = run(COMPOSE["depends-on-and-healthcheck"][0], "docker")
    assert result.counts["relocate"] == 2


def test_resolve_target_accepts_every_provider() -> None:
    assert [resolve_target(p.value.upper()) for p in Provider] == list(Provider)
