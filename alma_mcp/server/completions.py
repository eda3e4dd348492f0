"""Completions: template names wherever an argument names a template."""

from typing import Any

from mcp.server import MCPServer
from mcp.types import (
    Completion,
    CompletionArgument,
    CompletionContext,
    PromptReference,
    ResourceTemplateReference,
)

from alma_mcp.server import council
from alma_mcp.services import Services

MAX_COMPLETIONS = 100  # the protocol's cap on values per completion


def register(server: MCPServer[Any], services: Services) -> None:
    names = sorted({*services.catalog.names(), *services.catalog.aliases()})

    @server.completion()  # type: ignore[untyped-decorator, no-untyped-call]
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        found = council.complete_council(ref, argument, services)
        if found is not None:
            return found
        wants_template = (
            isinstance(ref, ResourceTemplateReference)
            and ref.uri == "alma://templates/{name}"
            and argument.name == "name"
        ) or (isinstance(ref, PromptReference) and argument.name == "template")
        if not wants_template:
            return None
        matches = [n for n in names if n.startswith(argument.value.lower())]
        return Completion(values=matches[:MAX_COMPLETIONS], total=len(matches), has_more=len(matches) > MAX_COMPLETIONS)
