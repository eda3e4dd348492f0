"""``python -m alma_mcp`` runs the same CLI as the ``alma-mcp`` console script."""

from alma_mcp.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
