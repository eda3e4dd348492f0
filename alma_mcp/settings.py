"""Settings: every ``ALMA_*`` environment variable, read once and typed.

Nothing else in the code base reads ``os.environ`` for configuration: the CLI builds one
``Settings`` and passes it down. Every field is listed in the README's settings table (a test
checks it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from alma_mcp.errors import ConfigError

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

MEMORY_DB = ":memory:"


def _split_csv(value: object) -> object:
    # Environment variables carry lists as "a,b,c"; code passes real lists.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """alma-mcp configuration. Field ``x`` is read from ``ALMA_X``."""

    model_config = SettingsConfigDict(env_prefix="ALMA_", extra="forbid", frozen=True)

    db_path: str | None = None
    """SQLite file. Default: ``alma.db`` in the user's data directory; ``:memory:`` for a throwaway store."""

    data_dir: Path | None = None
    """Folder holding ``resources/`` and ``prompts/``. Default: found next to the installed package."""

    log_level: LogLevel = "INFO"
    """Log level of the stderr log (stdout belongs to the stdio transport)."""

    max_document_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest blueprint document accepted, in bytes (UTF-8)."""

    max_depth: int = Field(default=32, ge=4, le=1000)
    """Deepest nesting of mappings and lists accepted in a blueprint document."""

    max_nodes: int = Field(default=1_000_000, ge=100)
    """Most YAML/JSON nodes a document may expand to, aliases counted at their expanded size."""

    max_resources: int = Field(default=10_000, ge=1)
    """Most resources one blueprint may declare."""

    http_host: str = "127.0.0.1"
    """Address ``serve --transport http`` binds when ``--host`` is not given."""

    http_port: int = Field(default=8000, ge=0, le=65535)
    """Port ``serve --transport http`` binds when ``--port`` is not given."""

    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Extra ``Host`` header values the HTTP transport accepts (``name`` or ``name:port``), comma-separated."""

    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Extra ``Origin`` values the HTTP transport accepts, comma-separated."""

    _split = field_validator("allowed_hosts", "allowed_origins", mode="before")(_split_csv)


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; a bad value becomes a ``ConfigError`` naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for err in exc.errors():
            var = f"ALMA_{str(err['loc'][0]).upper()}" if err["loc"] else "ALMA_?"
            problems.setdefault(var, f"{var}: {err['msg']} (got {err.get('input')!r})")
        ordered = sorted(problems)
        raise ConfigError("; ".join(problems[v] for v in ordered), data={"fields": ordered}) from exc
