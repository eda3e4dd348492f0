"""MCP resources: the template index, each template as YAML, and the blueprint JSON Schema."""

import functools
import json
from typing import Any

import yaml
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError

from alma_mcp.blueprint.model import blueprint_json_schema
from alma_mcp.errors import TemplateNotFound
from alma_mcp.services import Services


def register(server: MCPServer[Any], services: Services) -> None:
    catalog = services.catalog

    # Rendered on first read, then cached: the catalogue and the model never change while the
    # process runs, and start-up stays fast.
    @functools.cache
    def index() -> str:
        return json.dumps({"templates": [i.model_dump() for i in catalog.search()]}, indent=2)

    @functools.cache
    def schema() -> str:
        return json.dumps(blueprint_json_schema(), indent=2, sort_keys=True)

    @server.resource(
        "alma://templates",
        name="templates",
        title="Blueprint template index",
        description="Every template: name, description, category, complexity, resource count, "
        "estimated cost, aliases and its resource URI.",
        mime_type="application/json",
    )
    def template_index() -> str:
        return index()

    @server.resource(
        "alma://templates/{name}",
        name="template",
        title="Blueprint template",
        description="One template as a blueprint (YAML, format v1). Aliases resolve to their template.",
        mime_type="application/yaml",
    )
    def template(name: str) -> str:
        try:
            blueprint = catalog.get(name)
        except TemplateNotFound as err:
            raise ResourceNotFoundError(str(err)) from None
        return yaml.safe_dump(blueprint.to_data(), sort_keys=False, allow_unicode=True)

    @server.resource(
        "alma://schema/blueprint",
        name="blueprint-schema",
        title="Blueprint JSON Schema",
        description="JSON Schema (2020-12) of the blueprint format, generated from the model.",
        mime_type="application/schema+json",
    )
    def blueprint_schema() -> str:
        return schema()
