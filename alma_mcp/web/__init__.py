"""The Starlette side app: MCP over Streamable HTTP and SSE, health, and (later) REST and metrics."""
