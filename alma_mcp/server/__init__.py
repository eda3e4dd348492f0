"""MCP wiring: the server factory, tools, resources and completions over the domain."""
