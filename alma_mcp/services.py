"""The application's services, opened once per process by whoever runs the server.

Transports come and go (an SSE connection runs the MCP lifespan once per connection), so the
store and catalogues are opened here, by the CLI, the HTTP app's lifespan or a test, and the MCP
lifespan only hands them to handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from alma_mcp import __version__
from alma_mcp.analysis.audit import PolicyCatalog
from alma_mcp.analysis.create import CreateRules, load_create_rules
from alma_mcp.analysis.create_rules import check_rules_against_catalog
from alma_mcp.analysis.durations import DurationTable, load_durations
from alma_mcp.analysis.pricing import PriceCatalog
from alma_mcp.audit import AuditLog
from alma_mcp.blueprint.loader import Limits
from alma_mcp.catalog.templates import TemplateCatalog
from alma_mcp.datacache import NO_CACHE, ParseCache
from alma_mcp.errors import ConfigError
from alma_mcp.events import EventBus
from alma_mcp.ipr.deploy import EngineSet, Orchestrator
from alma_mcp.ipr.principals import Principal, parse_roles
from alma_mcp.ipr.service import IPRService
from alma_mcp.paths import find_data_dir
from alma_mcp.settings import Settings
from alma_mcp.store import Store
from engines.registry import EngineRegistry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """Everything a handler needs; built once, shared by every session."""

    settings: Settings
    limits: Limits
    parse_cache: ParseCache
    """Parsed data files by content (``ALMA_CACHE_DIR``); every value is still validated when loaded."""
    catalog: TemplateCatalog
    durations: DurationTable
    create_rules: CreateRules
    prices: PriceCatalog
    policies: PolicyCatalog
    store: Store
    engines: EngineRegistry
    iprs: IPRService
    orchestrator: Orchestrator
    audit: AuditLog
    """The hash-chained audit log (tool calls, IPR transitions, auth failures)."""
    bus: EventBus
    """Domain events (transitions, deployment steps): metrics, audit and the SSE stream subscribe."""
    local_principal: Principal
    """Who calls over stdio (and in-memory): the model's session, with ``ALMA_STDIO_ROLES``."""


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_bytes=settings.max_document_bytes,
        max_depth=settings.max_depth,
        max_nodes=settings.max_nodes,
        max_resources=settings.max_resources,
    )


def load_durations_table(settings: Settings) -> DurationTable:
    """The plan duration table from the data folder.

    Raises:
        ConfigError: missing or invalid (the file is named).
    """
    return load_durations(find_data_dir(settings.data_dir) / "resources" / "plan" / "durations.yaml")


def load_rules(settings: Settings, catalog: TemplateCatalog, cache: ParseCache = NO_CACHE) -> CreateRules:
    """create_blueprint's rules, checked against the catalogue they name.

    Raises:
        ConfigError: the file is invalid or names an unknown template.
    """
    rules = load_create_rules(find_data_dir(settings.data_dir) / "resources" / "create" / "rules.yaml", cache)
    check_rules_against_catalog(rules, catalog)
    return rules


def load_prices(settings: Settings) -> PriceCatalog:
    """The price catalogue: ``ALMA_PRICING_FILE`` (a file or folder) or the shipped ``resources/pricing``.

    Raises:
        ConfigError: a price file is invalid (named).
    """
    path = settings.pricing_file or find_data_dir(settings.data_dir) / "resources" / "pricing"
    return PriceCatalog.from_path(path)


def load_catalog(settings: Settings, cache: ParseCache = NO_CACHE) -> TemplateCatalog:
    """Find the data folder and validate every template (a bad file stops start-up).

    Raises:
        ConfigError: no data folder, or an invalid or duplicate template (the file is named).
    """
    data_dir = find_data_dir(settings.data_dir)
    return TemplateCatalog.from_directory(data_dir / "resources" / "templates", limits_from(settings), cache)


LOCAL_PRINCIPAL_ID = "mcp:local"


def local_principal(settings: Settings) -> Principal:
    """The stdio session's principal.

    Raises:
        ConfigError: ``ALMA_STDIO_ROLES`` names an unknown role.
    """
    try:
        roles = parse_roles(settings.stdio_roles)
    except ValueError as exc:
        raise ConfigError(f"ALMA_STDIO_ROLES: {exc}") from None
    return Principal(id=LOCAL_PRINCIPAL_ID, roles=roles)


@contextmanager
def open_services(settings: Settings, transport: str) -> Iterator[Services]:
    """Validate the data, open and migrate the store, record this run; close it all on exit.

    Raises:
        ConfigError: invalid data files.
        StoreError: the database cannot be opened or migrated.
    """
    parse_cache = ParseCache.from_setting(settings.cache_dir)
    catalog = load_catalog(settings, parse_cache)
    durations = load_durations_table(settings)
    rules = load_rules(settings, catalog, parse_cache)
    prices = load_prices(settings)
    policies = PolicyCatalog.from_directory(find_data_dir(settings.data_dir) / "resources" / "policies", parse_cache)
    principal = local_principal(settings)
    limits = limits_from(settings)
    store = Store.open(settings.db_path)
    run_id = store.record_start(__version__, transport)
    registry = EngineRegistry()
    bus = EventBus()
    audit = AuditLog(store, enabled=settings.audit_enabled)
    bus.subscribe(audit.subscriber)
    orchestrator = Orchestrator(store, settings, limits, EngineSet(registry, store, settings), run_id, bus=bus)
    interrupted = orchestrator.recover()
    logger.info(
        "store %s ready (run %d, %d templates, %d interrupted deploys marked)",
        store.path,
        run_id,
        len(catalog.names()),
        len(interrupted),
    )
    try:
        yield Services(
            settings=settings,
            limits=limits,
            parse_cache=parse_cache,
            catalog=catalog,
            durations=durations,
            create_rules=rules,
            prices=prices,
            policies=policies,
            store=store,
            engines=registry,
            iprs=IPRService(store, settings, limits, durations, catalog, bus, prices, policies),
            orchestrator=orchestrator,
            bus=bus,
            audit=audit,
            local_principal=principal,
        )
    finally:
        store.record_stop(run_id)
        store.close()
