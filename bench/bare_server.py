"""The baseline for bench/startup.py: a bare MCPServer with one trivial tool, over stdio."""

from mcp.server import MCPServer


def main() -> None:
    server: MCPServer[object] = MCPServer("bare", version="0")

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    server.run("stdio")


if __name__ == "__main__":
    main()
