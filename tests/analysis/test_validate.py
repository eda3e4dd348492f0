"""validate_blueprint: planted defects found with their exact code and path; valid inputs stay clean."""

from pathlib import Path
from typing import Any

import pytest

from alma_mcp.analysis.validate import MAX_REPORTED, validate
from alma_mcp.blueprint.loader import Limits

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TEMPLATES = Path(__file__).resolve().parent.parent.parent / "resources" / "templates"
INVALID = sorted((FIXTURES / "invalid").glob("*.yaml"))
VALID = sorted((FIXTURES / "valid").glob("*.yaml"))


def expected(path: Path) -> tuple[str, str]:
    header = path.read_text(encoding="utf-8").splitlines()[0]
    _, _, code, pointer = header.split()
    return code, "" if pointer == "-" else pointer


def test_there_are_at_least_forty_invalid_fixtures() -> None:
    assert len(INVALID) >= 40


@pytest.mark.parametrize("fixture", INVALID, ids=[p.stem for p in INVALID])
def test_each_planted_defect_is_found_at_its_path(fixture: Path) -> None:
    code, pointer = expected(fixture)
    report = validate(fixture.read_text(encoding="utf-8"))
    assert report.valid is False
    assert (code, pointer) in {(e.code, e.path) for e in report.errors}, report.errors
    assert report.summary.startswith("invalid: ")


@pytest.mark.parametrize("fixture", VALID + sorted(TEMPLATES.glob("*.yaml")), ids=lambda p: p.stem)
def test_valid_blueprints_and_every_template_have_no_errors_or_warnings(fixture: Path) -> None:
    report = validate(fixture.read_text(encoding="utf-8"), strict=True)
    assert report.errors == []
    assert report.warnings == []
    assert report.valid is True


def test_every_problem_is_reported_not_only_the_first() -> None:
    data: dict[str, Any] = {
        "name": "multi",
        "resources": [
            {"name": "a", "type": "compute", "provider": "kubernetes", "dependencies": ["b", "ghost"]},
            {
                "name": "b",
                "type": "container",
                "provider": "docker",
                "specs": {"memory": "lots"},
                "dependencies": ["a"],
            },
        ],
    }
    report = validate(data)
    assert [(e.code, e.path) for e in report.errors] == [
        ("blueprint.invalid_quantity", "/resources/1/specs/memory"),
        ("blueprint.unknown_dependency", "/resources/0/dependencies/1"),
        ("blueprint.cycle", "/resources/0/dependencies"),
        ("blueprint.provider_mismatch", "/resources/0/type"),
    ]
    assert report.errors[2].message == "dependency cycle: a -> b -> a"
    assert report.summary == (
        "invalid: 4 errors, 0 warnings; first: [blueprint.invalid_quantity] invalid memory 'lots': use a whole "
        "number of MiB or a size such as 512Mi, 4GB, 4Gi, 1TB at /resources/1/specs/memory"
    )


def test_warnings_do_not_invalidate_unless_strict() -> None:
    data = {
        "name": "warn",
        "resources": [
            {"name": "lb", "type": "load_balancer", "provider": "docker", "specs": {"backends": ["app"]}},
            {"name": "app", "type": "container", "provider": "docker", "specs": {"image": "nginx", "ports": [80, 80]}},
            {"name": "db", "type": "database", "provider": "proxmox"},
            {
                "name": "api",
                "type": "service",
                "provider": "kubernetes",
                "dependencies": ["db"],
                "specs": {"replicas": 9, "autoscaling": {"min": 2, "max": 4}},
            },
            {"name": "edge", "type": "load_balancer", "provider": "docker"},
        ],
    }
    lenient = validate(data)
    assert lenient.valid is True
    assert [(w.code, w.path) for w in lenient.warnings] == [
        ("blueprint.backend_not_dependency", "/resources/0/specs/backends/0"),
        ("blueprint.unpinned_image", "/resources/1/specs/image"),
        ("blueprint.duplicate_port", "/resources/1/specs/ports"),
        ("blueprint.cross_provider_dependency", "/resources/3/dependencies/0"),
        ("blueprint.missing_image", "/resources/3/specs/image"),
        ("blueprint.replicas_outside_autoscaling", "/resources/3/specs/replicas"),
        ("blueprint.lb_without_backends", "/resources/4/specs/backends"),
    ]
    assert lenient.summary == "valid: 5 resources, 1 dependencies; 7 warnings"
    strict = validate(data, strict=True)
    assert strict.valid is False
    assert strict.summary.startswith("invalid: 0 errors, 7 warnings (strict: warnings count as errors); first: ")


def test_a_shared_network_silences_the_cross_provider_warning() -> None:
    data = {
        "name": "mesh",
        "resources": [
            {"name": "net", "type": "network", "provider": "simulation", "specs": {"cidr": "10.9.0.0/16"}},
            {
                "name": "db",
                "type": "database",
                "provider": "proxmox",
                "specs": {"networks": ["net"]},
                "dependencies": ["net"],
            },
            {
                "name": "api",
                "type": "service",
                "provider": "kubernetes",
                "dependencies": ["db", "net"],
                "specs": {"image": "api:1.0", "networks": ["net"]},
            },
        ],
    }
    assert validate(data, strict=True).valid is True


def test_stats_count_types_and_providers() -> None:
    report = validate((FIXTURES / "valid" / "base.yaml").read_text())
    assert report.stats is not None
    assert report.stats.model_dump() == {
        "resources": 2,
        "dependencies": 1,
        "by_type": {"compute": 1, "database": 1},
        "by_provider": {"proxmox": 2},
    }


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("a: " + "x" * 5000, "blueprint.too_large"),
        ("[" * 50 + "]" * 50, "blueprint.too_deep"),
        ("a: &a [1, *a]", "blueprint.alias_bomb"),
        ("this is: not: yaml", "blueprint.parse_error"),
        ("plain words", "blueprint.parse_error"),
        ("", "blueprint.parse_error"),
    ],
)
def test_parse_limits_are_errors_in_the_report_not_exceptions(source: str, code: str) -> None:
    report = validate(source, limits=Limits(max_bytes=4096))
    assert report.valid is False
    assert [(e.code, e.path) for e in report.errors] == [(code, "")]


def test_too_many_resources_is_reported_at_resources() -> None:
    data = {
        "name": "big",
        "resources": [{"name": f"r{i}", "type": "compute", "provider": "simulation"} for i in range(4)],
    }
    report = validate(data, limits=Limits(max_resources=3))
    assert [(e.code, e.path) for e in report.errors] == [("blueprint.too_many_resources", "/resources")]


def test_a_hundred_thousand_dependencies_is_one_coded_error() -> None:
    data = {
        "name": "deps",
        "resources": [{"name": "a", "type": "compute", "provider": "simulation", "dependencies": ["b"] * 100_000}],
    }
    report = validate(data)
    first = report.errors[0]
    assert (first.code, first.path) == ("blueprint.too_long", "/resources/0/dependencies")
    assert report.errors_omitted == 0


def test_output_is_bounded_and_counts_what_it_left_out() -> None:
    data = {
        "name": "many",
        "resources": [
            {"name": f"r{i}", "type": "compute", "provider": "simulation", "dependencies": ["ghost"]}
            for i in range(MAX_REPORTED + 50)
        ],
    }
    report = validate(data)
    assert len(report.errors) == MAX_REPORTED
    assert report.errors_omitted == 50


def test_a_list_where_an_object_belongs() -> None:
    report = validate({"name": "x", "metadata": ["a"], "resources": []})
    assert [(e.code, e.path) for e in report.errors] == [("blueprint.invalid_type", "/metadata")]
