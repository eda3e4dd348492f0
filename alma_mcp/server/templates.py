"""Template tools: list the catalogue, derive a customised blueprint from a template."""

from typing import Annotated, Any

from mcp.server import MCPServer
from pydantic import BaseModel, Field

from alma_mcp.catalog.templates import PARAMETERS, TemplateInfo
from alma_mcp.server.toolkit import READ_ONLY, coded_errors
from alma_mcp.services import Services


class TemplateList(BaseModel):
    """Templates matching the filters, in name order."""

    count: int
    templates: list[TemplateInfo]


class CustomizedTemplate(BaseModel):
    """A new blueprint derived from a template; the catalogue itself is unchanged."""

    base_template: str
    changes: list[str] = Field(description="One line per change applied to the template.")
    blueprint: dict[str, Any] = Field(description="The new blueprint (format v1), sizes in MiB and cores.")


def register(server: MCPServer[Any], services: Services) -> None:
    catalog = services.catalog

    @server.tool(title="List blueprint templates", annotations=READ_ONLY)
    @coded_errors
    def list_templates(
        category: Annotated[
            str | None,
            Field(description="web, database, microservices, data, ml, security, networking, monitoring"),
        ] = None,
        complexity: Annotated[str | None, Field(description="simple, medium or advanced")] = None,
        query: Annotated[
            str | None,
            Field(description="Case-insensitive text to find in name or description", max_length=200),
        ] = None,
    ) -> TemplateList:
        """List the blueprint templates (name, description, category, complexity, resource count,
        estimated cost, aliases, resource URI), optionally filtered. Read a template's full
        blueprint from its alma://templates/{name} resource, or derive a new one with
        customize_template."""
        rows = catalog.search(category=category, complexity=complexity, query=query)
        return TemplateList(count=len(rows), templates=rows)

    @server.tool(title="Customize a blueprint template", annotations=READ_ONLY)
    @coded_errors
    def customize_template(
        template: Annotated[str, Field(description="Template name or alias (see list_templates)", max_length=100)],
        name: Annotated[str | None, Field(description="Name of the new blueprint (DNS-1123 label)")] = None,
        description: Annotated[
            str | None, Field(description="Description of the new blueprint", max_length=2000)
        ] = None,
        scale_factor: Annotated[
            float | None, Field(description="Multiply every cpu and memory size by this, in (0, 100]")
        ] = None,
        parameters: Annotated[
            dict[str, Any] | None,
            Field(description="Any of: " + "; ".join(f"{k}: {v}" for k, v in PARAMETERS.items())),
        ] = None,
    ) -> CustomizedTemplate:
        """Derive a new blueprint from a template: rename it, scale cpu and memory by a factor, set
        the instance count, cpu and memory per instance of its compute/container/service resources,
        and its environment. Returns the new blueprint and the list of changes; the template itself
        is never modified. Nothing is deployed."""
        blueprint, changes = catalog.customize(
            template,
            name=name,
            description=description,
            scale_factor=scale_factor,
            parameters=parameters,
            limits=services.limits,
        )
        return CustomizedTemplate(
            base_template=catalog.resolve(template), changes=changes, blueprint=blueprint.to_data()
        )
