"""Settings: every ``ALMA_*`` environment variable, read once and typed.

Nothing else in the code base reads ``os.environ`` for configuration: the CLI builds one
``Settings`` and passes it down. Every field is listed in the README's settings table (a test
checks it).
"""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from alma_mcp.errors import ConfigError

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

MEMORY_DB = ":memory:"


def _split_csv(value: object) -> object:
    # Environment variables carry lists as "a,b,c"; code passes real lists.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _split_pairs(value: object) -> object:
    # "a=b,c=d" -> {"a": "b", "c": "d"}; a piece without "=" is left for validation to reject.
    if isinstance(value, str):
        pairs: dict[str, str] = {}
        for piece in (p.strip() for p in value.split(",")):
            if not piece:
                continue
            key, sep, val = piece.partition("=")
            if not sep or not key.strip() or not val.strip():
                raise ValueError(f"expected name=value pairs separated by commas, got {piece!r}")
            pairs[key.strip()] = val.strip()
        return pairs
    return value


class Settings(BaseSettings):
    """alma-mcp configuration. Field ``x`` is read from ``ALMA_X``."""

    model_config = SettingsConfigDict(env_prefix="ALMA_", extra="forbid", frozen=True)

    db_path: str | None = None
    """SQLite file. Default: ``alma.db`` in the user's data directory; ``:memory:`` for a throwaway store."""

    data_dir: Path | None = None
    """Folder holding ``resources/`` and ``prompts/``. Default: found next to the installed package."""

    cache_dir: str | None = None
    """Cache of parsed data files (keyed by their content). Default: ``parsed/`` in the user's cache directory;
    ``off`` parses every file at every start."""

    log_level: LogLevel = "INFO"
    """Log level of the stderr log (stdout belongs to the stdio transport)."""

    pricing_file: Path | None = None
    """Your own price catalogue (a YAML file or a folder of them) instead of ``resources/pricing``."""

    budget_monthly: float | None = Field(default=None, gt=0)
    """Monthly budget; an IPR whose blueprint costs more cannot be approved unless an admin overrides."""

    max_document_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest blueprint document accepted, in bytes (UTF-8)."""

    max_depth: int = Field(default=32, ge=4, le=1000)
    """Deepest nesting of mappings and lists accepted in a blueprint document."""

    max_nodes: int = Field(default=1_000_000, ge=100)
    """Most YAML/JSON nodes a document may expand to, aliases counted at their expanded size."""

    max_resources: int = Field(default=10_000, ge=1)
    """Most resources one blueprint may declare."""

    plan_parallelism: int = Field(default=10, ge=1, le=1000)
    """Steps a deployment plan runs at once within a wave (Terraform's default is 10)."""

    output_max_items: int = Field(default=200, ge=10, le=100_000)
    """Longest list a tool returns (plan steps, waves); the rest is counted, not listed."""

    stdio_roles: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["viewer", "proposer", "deployer"])
    """Roles of the local principal over stdio (the model's session), comma-separated. Never add approver."""

    cli_roles: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["viewer", "proposer", "approver", "deployer"]
    )
    """Roles of the person using ``alma-mcp ipr ...`` in a terminal (identified as ``user:<login>``)."""

    ipr_required_approvals: int = Field(default=1, ge=1, le=10)
    """Approvals from distinct principals (never the proposer) an IPR needs before it can deploy."""

    ipr_auto_approve: bool = False
    """Approve IPRs whose checks pass without a person (demos only; recorded as system:auto-approve)."""

    engines: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """Blueprint provider to engine, e.g. ``docker=docker,proxmox=simulation``; unlisted providers use simulation."""

    sim_time_scale: float = Field(default=0.02, ge=0.0, le=10.0)
    """Multiplier on the simulation engine's per-type durations (0 = instant; 1 = realistic)."""

    sim_fail: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """Simulated failures, ``resource=fail:create`` or ``resource=transient:2``, comma-separated."""

    secrets_file: Path | None = None
    """YAML mapping of secret name -> value; engines resolve ``specs.secrets`` references from it (never logged)."""

    engine_timeout_seconds: float = Field(default=300.0, gt=0, le=3600)
    """Longest wait for one engine operation (a rollout, a Proxmox task) before it fails as transient."""

    docker_host: str | None = None
    """Docker daemon URL (``unix:///...`` or ``tcp://...``); default: the environment's ``DOCKER_HOST``."""

    kube_config: Path | None = None
    """Kubeconfig file for the kubernetes engine; default: ``~/.kube/config`` (or in-cluster)."""

    kube_contexts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Kubeconfig contexts a blueprint may choose (``metadata.kube_context``), comma-separated; first = default."""

    kube_namespace: str | None = None
    """One namespace for every deployment; default: a namespace per deployment (``alma-<blueprint>``)."""

    proxmox_host: str | None = None
    """Proxmox VE API host (``https://HOST:8006``)."""

    proxmox_port: int = Field(default=8006, ge=1, le=65535)
    """Proxmox VE API port."""

    proxmox_user: str | None = None
    """Proxmox user with realm, e.g. ``alma@pve`` (the token's owner)."""

    proxmox_token_name: str | None = None
    """API token id (``user@realm!TOKENID``: the part after ``!``); preferred over a password."""

    proxmox_token_value: SecretStr | None = None
    """API token secret."""

    proxmox_password: SecretStr | None = None
    """Password login, when no token is configured."""

    proxmox_verify_tls: bool = True
    """Verify the Proxmox TLS certificate (turn off only for a lab)."""

    proxmox_ca_file: Path | None = None
    """CA bundle that signed the Proxmox certificate."""

    proxmox_node: str | None = None
    """Node to create guests on; default: the first online node."""

    council_sampling: bool = False
    """Let council_review also ask the client's model through MCP sampling (answers validated; on failure the
    deterministic review stands)."""

    deploy_retries: int = Field(default=3, ge=0, le=20)
    """Retries of a step that failed with a transient engine error."""

    deploy_retry_delay: float = Field(default=0.5, ge=0.0, le=60.0)
    """First retry delay in seconds; doubles each retry (bounded backoff)."""

    metrics_public: bool = False
    """Serve ``/metrics`` without a key (for a scraper on a trusted network); otherwise a viewer key is needed."""

    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """CIDRs of reverse proxies whose ``X-Forwarded-For`` names the real client, comma-separated."""

    rate_limit_enabled: bool = True
    """Token-bucket rate limits per principal and route class (HTTP and MCP tool calls)."""

    rate_limit_global_rpm: int = Field(default=60, ge=1)
    """Requests per minute for routes of no other class."""

    rate_limit_burst: int = Field(default=10, ge=1)
    """Bucket size: requests allowed at once before the per-minute rate applies."""

    rate_limit_streaming_rpm: int = Field(default=20, ge=1)
    """Requests per minute opening a stream (``/sse``, ``/api/v1/events``)."""

    rate_limit_generation_rpm: int = Field(default=30, ge=1)
    """Requests per minute of generation tools (create_blueprint, customize_template)."""

    rate_limit_tools_rpm: int = Field(default=40, ge=1)
    """MCP tool calls and REST tool executions per minute."""

    rate_limit_crud_rpm: int = Field(default=100, ge=1)
    """REST reads and writes of IPRs and templates per minute."""

    rate_limit_max_clients: int = Field(default=10_000, ge=100)
    """Buckets kept in memory; the least recently used are dropped beyond this."""

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed by CORS on the REST API; empty = CORS off."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest HTTP request body accepted (413 beyond)."""

    audit_enabled: bool = True
    """Append tool calls, IPR transitions and auth failures to the hash-chained audit log."""

    events_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    """Seconds between heartbeats on ``/api/v1/events``."""

    http_host: str = "127.0.0.1"
    """Address ``serve --transport http`` binds when ``--host`` is not given."""

    http_port: int = Field(default=8000, ge=0, le=65535)
    """Port ``serve --transport http`` binds when ``--port`` is not given."""

    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Extra ``Host`` header values the HTTP transport accepts (``name`` or ``name:port``), comma-separated."""

    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Extra ``Origin`` values the HTTP transport accepts, comma-separated."""

    _split = field_validator(
        "allowed_hosts",
        "allowed_origins",
        "stdio_roles",
        "cli_roles",
        "trusted_proxies",
        "cors_origins",
        "kube_contexts",
        mode="before",
    )(_split_csv)
    _pairs = field_validator("engines", "sim_fail", mode="before")(_split_pairs)


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; a bad value becomes a ``ConfigError`` naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for err in exc.errors():
            var = f"ALMA_{str(err['loc'][0]).upper()}" if err["loc"] else "ALMA_?"
            shown = (
                "[hidden]" if any(w in var for w in ("TOKEN", "PASSWORD", "SECRET", "KEY")) else repr(err.get("input"))
            )
            problems.setdefault(var, f"{var}: {err['msg']} (got {shown})")
        ordered = sorted(problems)
        raise ConfigError("; ".join(problems[v] for v in ordered), data={"fields": ordered}) from exc
