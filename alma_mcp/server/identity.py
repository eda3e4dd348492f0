"""Who is calling: the principal the HTTP side app authenticated, else the local (stdio) principal.

The side app's auth middleware stores a ``Principal`` in ``scope["state"]["principal"]``; the SDK
hands the Starlette request to tools (``Context``) and to MCP-level middleware
(``ServerRequestContext.request``) in both protocol eras. Stdio and in-memory sessions have no
request: they are the model's local session.
"""

from typing import Any

from alma_mcp.ipr.principals import Principal
from alma_mcp.services import Services


def principal_from_request(request: Any, services: Services) -> Principal:
    state = getattr(request, "state", None) if request is not None else None
    found = getattr(state, "principal", None) if state is not None else None
    return found if isinstance(found, Principal) else services.local_principal


def transport_of(request: Any) -> str:
    """``http`` when the call came through the side app, else ``local`` (stdio, in-memory)."""
    return "http" if request is not None else "local"
