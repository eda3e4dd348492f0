"""The README describes what the code has: every tool, resource, setting and dependency."""

import re
import tomllib
from pathlib import Path

import pytest
from mcp import Client

from alma_mcp.server.app import build_server
from alma_mcp.services import Services

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.anyio
async def test_every_tool_resource_and_template_uri_is_in_the_readme(services: Services) -> None:
    async with Client(build_server(services)) as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
    missing = [name for name in [*tools, *resources, *templates] if f"`{name}`" not in README]
    assert missing == []


def test_every_dependency_is_in_the_readme_dependency_table() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = [
        *project["dependencies"],
        *(d for deps in project["optional-dependencies"].values() for d in deps),
    ]
    names = [re.split(r"[<>=\[ ]", spec, maxsplit=1)[0] for spec in specs]
    table = README.split("## Dependencies", 1)[1].split("\n## ", 1)[0]
    assert [n for n in names if f"`{n}`" not in table] == []


def test_the_readme_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec scripts/test" in ci
    assert "```sh\nscripts/test\n```" in README


def test_changelog_follows_keep_a_changelog() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert changelog.startswith("# Changelog")
    assert "## [Unreleased]" in changelog
